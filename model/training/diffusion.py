"""Stages `pretrain` and `diffusion`: flow matching of the generator on whole clips, one t per clip.

pretrain: the backbone with full attention over the clip, a bidirectional image-to-video model (the paper starts
from one). Every frame's recycled-input channels carry the first image's latent: under full attention, recycling
the ground-truth previous frames would let frame j read its own answer from frame j + 1's input.

diffusion: the same weights with block-causal attention and teacher forcing: frame j's recycled input is the
ground-truth latent j - 1. One t for the whole clip keeps the cache honest: at inference every cached frame was
computed at the same t as the current one (t = 1).
"""
from __future__ import annotations

import torch

from model.training.data import SampleRNG
from model.training.losses import flow_matching_loss, noised, shift_time
from model.training.sampling import sample_causal, sample_full
from model.training.stage import GeneratorBatch, LossStage


def recycled(batch: GeneratorBatch, attention: str, rng: SampleRNG | None = None, noise: float = 0.0) -> torch.Tensor:
    """The recycled-input channels (B, C, k, h, w): the previous ground-truth latents (teacher forcing), or for
    the bidirectional model the first latent at every frame.

    `noise` > 0 (--history-noise): each clip's recycled latents, all but the first image's, get Gaussian noise of a
    std drawn from U(0, noise). At play the recycled latent is the generator's own, never quite the truth; a model
    that has only seen the truth there trusts its own errors and compounds them (GameNGen's noise augmentation of its
    context frames, which it found essential against drift). The noise is not an input: the model must judge the
    history by itself."""
    if attention == "full":
        return batch.first.expand_as(batch.x0)
    prev = batch.latents[:, :, :-1]
    if noise > 0:  # not the first image's latent: at play that one is exact too
        std = (noise * rng.rand()).to(prev.device).view(-1, 1, 1, 1, 1)  # (B, 1, 1, 1, 1)
        later = prev[:, :, 1:]
        prev = torch.cat([prev[:, :, :1], later + std * rng.randn(*later.shape[1:]).to(prev.device, prev.dtype)], 2)
    return prev


class DiffusionStage(LossStage):
    def __init__(self, *args):
        super().__init__(*args)
        self.attention = "full" if self.opts.stage == "pretrain" else "block_causal"
        self.generator = self.shard_generator(self.generator)
        self.modules = {"vae": self.vae, "generator": self.generator}
        self.optimizers = {"generator": (self.generator, self.adamw(self.generator))}

    def loss(self, batch: GeneratorBatch, rng: SampleRNG) -> torch.Tensor:
        x0 = batch.x0
        eps = rng.randn(*x0.shape[1:]).to(self.device)
        t = shift_time(rng.rand(), self.shift).to(self.device)
        prev = recycled(batch, self.attention, rng, self.opts.history_noise)
        with self.autocast():
            v = self.generator(noised(x0, eps, t), prev, self.camera(batch), t, self.attention)
        return flow_matching_loss(v, x0, eps)

    def sample(self, batch, rng) -> torch.Tensor:
        noise = rng.randn(*batch.x0.shape[1:]).to(self.device)
        sampler = sample_full if self.attention == "full" else sample_causal
        return sampler(self.generator, batch.first, self.camera(batch), noise, self.opts.sample_steps, self.shift)

    def camera(self, batch: GeneratorBatch) -> torch.Tensor:
        """The camera input (B, camera_inputs, k, h, w). The bidirectional model's recycled input is the first
        image, not the previous frame, so a warping model gets no rotation flow there (the flow channels zeroed)."""
        gen = self.config.generator
        if self.attention != "full" or not gen.warp:
            return batch.cam
        rays = gen.camera_channels
        return torch.cat([batch.cam[:, :rays], torch.zeros_like(batch.cam[:, rays:])], dim=1)
