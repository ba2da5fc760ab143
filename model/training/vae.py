"""Stage `vae`: the causal video autoencoder, on random windows of the data's clips.

Loss: L1 + a multi-scale image-gradient term (structure, no downloaded network) + a small KL, on a sample of the
posterior. Validation: PSNR of the posterior mean's reconstruction of whole held-out clips.

The model checkpoint it writes has its latent rescaled to unit std, the scale folded into the encoder's output conv
and the decoder's input conv (exact: both are linear in it and zero-padded), so that flow matching meets latents at
the noise's scale and inference needs no constant. Its generator is freshly initialised (seeded): the pretrain stage
starts from it.
"""
from __future__ import annotations

import math
from pathlib import Path

import torch
import torch.nn.functional as F

from camera.errors import InputError
from model.checkpoint import load_checkpoint
from model.generator import Generator
from model.training import distributed
from model.training.data import SampleRNG
from model.training.losses import colour_loss, gradient_loss, kl_loss, psnr
from model.training.stage import Stage
from model.vae import VAE, ResBlock, sample_latent, to_uint8


def fold_latent_scale(state: dict[str, torch.Tensor], channels: int, scale: float) -> dict[str, torch.Tensor]:
    """A VAE state whose latent is the original's divided by `scale`, decoding to the same video: the encoder's
    mean channels / scale, its log-variances - 2 log(scale), the decoder's input weights * scale."""
    state = dict(state)
    weight, bias = state["encoder.conv_out.weight"].clone(), state["encoder.conv_out.bias"].clone()
    weight[:channels] /= scale
    bias[:channels] /= scale
    bias[channels:] -= 2 * math.log(scale)
    state["encoder.conv_out.weight"], state["encoder.conv_out.bias"] = weight, bias
    state["decoder.conv_in.weight"] = state["decoder.conv_in.weight"] * scale
    return state


def reconstruction_loss(recon: torch.Tensor, video: torch.Tensor, opts) -> tuple[torch.Tensor, dict[str, float]]:
    """The VAE stages' pixel terms: L1 + grad_weight x image gradients + colour_weight x patch colours."""
    l1, structure = F.l1_loss(recon, video), gradient_loss(recon, video)
    loss, parts = l1 + opts.grad_weight * structure, {"l1": l1.item(), "structure": structure.item()}
    if opts.colour_weight:
        colour = colour_loss(recon, video)
        loss, parts = loss + opts.colour_weight * colour, {**parts, "colour": colour.item()}
    return loss, parts


class VAEStage(Stage):
    def __init__(self, *args):
        super().__init__(*args)
        if self.opts.vae_frames > self.clips.clip_frames:
            raise InputError("command line", "--vae-frames", f"{self.opts.vae_frames} is longer than the data's "
                             f"clips ({self.clips.clip_frames} frames)")
        vae = (load_checkpoint(self.opts.init, expect_config=self.opts.config).vae if self.opts.init
               else VAE(self.config.vae))
        vae = vae.to(self.device).train()
        units = [m for m in vae.modules() if isinstance(m, ResBlock)] + [vae.encoder, vae.decoder]
        self.vae = distributed.shard(vae, units, self.dist, forward_methods=("encode", "decode"))
        self.modules = {"vae": self.vae}
        self.optimizers = {"vae": (self.vae, self.adamw(self.vae))}

    def windows(self, indices, rng: SampleRNG) -> torch.Tensor:
        """A random window of vae_frames frames from each clip -> (B, 3, T, H, W) in [-1, 1]."""
        starts = rng.integers(self.clips.clip_frames - self.opts.vae_frames + 1).tolist()
        return self.real_video(indices, self.opts.vae_frames, starts)

    def loss(self, video: torch.Tensor, rng: SampleRNG) -> tuple[torch.Tensor, dict[str, float]]:
        with self.autocast():
            mean, logvar = self.vae.encode(video)
        mean, logvar = mean.float(), logvar.float()
        latent = sample_latent(mean, logvar, rng.randn(*mean.shape[1:]).to(self.device))
        with self.autocast():
            recon = self.vae.decode(latent).float()
        reconstruction, parts = reconstruction_loss(recon, video, self.opts)
        kl = kl_loss(mean, logvar)
        return reconstruction + self.opts.kl_weight * kl, {**parts, "kl": kl.item()}

    def train_step(self, step: int) -> dict[str, float]:
        rng = self.rng(step)
        loss, parts = self.loss(self.windows(self.indices(step), rng), rng)
        loss.backward()
        return {"loss": loss.item(), **parts, **self.apply("vae", step)}

    @torch.no_grad()
    def reconstruct(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The posterior mean and its reconstruction, (B, C, ...) and (B, 3, T, H, W)."""
        with self.autocast():
            mean = self.vae.encode(video)[0]
            return mean.float(), self.vae.decode(mean).float()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        video = self.real_video(self.val_indices())
        return self.scores(video, self.reconstruct(video)[1])

    @staticmethod
    def scores(video: torch.Tensor, recon: torch.Tensor) -> dict[str, float]:
        """PSNR and L1 of reconstructions (B, 3, T, H, W) of `video`."""
        return {"val_psnr": float(psnr(recon, video).mean()), "val_l1": float(F.l1_loss(recon, video))}

    @torch.no_grad()
    def write_sample(self, path: Path) -> None:
        index = self.val_indices()[0]
        recon = self.reconstruct(self.real_video([index]))[1]
        if self.dist.main:
            self.write_video(path, self.clips.video(index), to_uint8(recon[0]))

    @torch.no_grad()
    def export(self, path: Path, step: int) -> None:
        scale = float(self.reconstruct(self.real_video(self.val_indices(), self.opts.vae_frames))[0].std())
        state = distributed.full_state(self.vae)  # gathered on the main process only
        if not self.dist.main:
            return
        with torch.random.fork_rng():
            torch.manual_seed(self.opts.seed)
            generator = Generator(self.config.generator)
        self.save_model(path, fold_latent_scale(state, self.config.vae.latent_channels, scale),
                        generator.state_dict(), step)
