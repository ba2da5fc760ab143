"""Stage `decoder`: the VAE's decoder fine-tuned against a frame discriminator, the encoder frozen.

A decoder trained on L1 and image gradients (stage `vae`) draws the mean of what a latent leaves open, and at 8x
downsampling that is all the pixel-scale texture: the `mini` VAE's reconstructions keep 26 dB PSNR but about 2% of
the reference's Laplacian variance, the sharpness that `explorer eval` measures (a 0.5 px Gaussian blur already
takes a frame to 36%). As the latent diffusion VAEs do, a patch discriminator pays the decoder for texture of the
right kind where the latent does not pin it down (model/frame_discriminator.py).

The encoder is frozen, so the latent space is unchanged: cached latents and any generator trained on them stay
valid. The stage can therefore run on a finished model (`--init`), and its checkpoint keeps that model's generator.

Losses: the decoder minimises L1 + grad_weight * image gradients + w * the relativistic pairing loss of each frame's
patches against the same frame's reconstruction (losses.generator_loss), where w makes the adversarial term's pull on
the pixels adv_weight times the reconstruction's (`balance`); the discriminator minimises the
pairing loss with approximated R1 and R2 (as the adversarial stage, in pixel space: APT's sigma and lambda for
images). AdamW for both; the discriminator starts from scratch, so it learns at 4x the decoder's rate
(--disc-lr-scale).
"""
from __future__ import annotations

import numpy as np
import torch

from explorer.metrics import sharpness
from model.checkpoint import load_checkpoint
from model.frame_discriminator import FrameDiscriminator
from model.training import distributed
from model.training.data import SampleRNG
from model.training.losses import generator_loss, penalised_discriminator_loss
from model.training.stage import Stage
from model.training.vae import VAEStage, reconstruction_loss
from model.vae import ResBlock, sample_latent, to_uint8

def balance(reconstruction: torch.Tensor, adversarial: torch.Tensor, frames: torch.Tensor) -> float:
    """The weight that gives the adversarial term the same pull on the decoded frames as the reconstruction term:
    the ratio of the norms of their gradients with respect to the frames (taming-transformers' adaptive weight, taken
    at the output rather than at the last layer's weights, so that it needs no parameter and works under FSDP). The
    two terms' scales drift apart as the discriminator learns; a fixed weight lets one of them take over."""
    if not frames.requires_grad:  # no gradient (validation): the weight does not matter
        return 0.0
    g_rec, = torch.autograd.grad(reconstruction, frames, retain_graph=True)
    g_adv, = torch.autograd.grad(adversarial, frames, retain_graph=True)
    return float((g_rec.norm() / (g_adv.norm() + 1e-8)).clamp(max=1e4))


class DecoderStage(VAEStage):
    """Shares the VAE stage's windows, reconstruction and sample videos; builds its own players."""

    def __init__(self, *args):
        Stage.__init__(self, *args)  # not VAEStage's: the VAE comes from the source model, and only its decoder learns
        loaded = load_checkpoint(self.source_checkpoint(), expect_config=self.config)
        self.generator_state = loaded.generator.state_dict()  # exported unchanged
        vae = loaded.vae.to(self.device).train()
        vae.encoder.requires_grad_(False)
        units = [m for m in vae.modules() if isinstance(m, ResBlock)] + [vae.encoder, vae.decoder]
        self.vae = distributed.shard(vae, units, self.dist, forward_methods=("encode", "decode"))
        disc = FrameDiscriminator().to(self.device).train()
        self.discriminator = distributed.shard(disc, [], self.dist)
        self.modules = {"vae": self.vae, "discriminator": self.discriminator}
        self.optimizers = {  # learning rates: set per step by apply()
            "decoder": (self.vae, torch.optim.AdamW(self.vae.decoder.parameters(), lr=self.opts.lr, weight_decay=0.01)),
            "discriminator": (self.discriminator, self.adamw(self.discriminator))}

    def judge(self, videos: list[torch.Tensor]) -> list[torch.Tensor]:
        """Patch logits (B, T, h, w) of each video (B, 3, T, H, W), in one discriminator pass."""
        with self.autocast():
            logits = self.discriminator(torch.cat(videos)).float()
        return list(logits.chunk(len(videos)))

    def decoder_loss(self, video: torch.Tensor, rng: SampleRNG) -> tuple[torch.Tensor, torch.Tensor, dict]:
        """The decoder's loss on a window and the reconstruction it judged, (B, 3, T, H, W)."""
        with torch.no_grad(), self.autocast():
            mean, logvar = self.vae.encode(video)
        latent = sample_latent(mean.float(), logvar.float(), rng.randn(*mean.shape[1:]).to(self.device))
        with self.autocast():
            recon = self.vae.decode(latent).float()
        real, fake = self.judge([video, recon])
        reconstruction, parts = reconstruction_loss(recon, video, self.opts)
        adv = generator_loss(real, fake)
        scale = self.opts.adv_weight * balance(reconstruction, adv, recon)
        loss = reconstruction + scale * adv
        return loss, recon, {**parts, "g_adv": adv.item(), "adv_scale": scale}

    def discriminate(self, video: torch.Tensor, recon: torch.Tensor, rng: SampleRNG) -> tuple[torch.Tensor, dict]:
        """The pairing loss of real frames against their reconstructions, plus lambda (R1 + R2)."""
        sigma = self.opts.r1_sigma
        shake_real, shake_fake = (rng.randn(*video.shape[1:]).to(self.device) * sigma for _ in range(2))
        lr, lf, pr, pf = self.judge([video, recon, video + shake_real, recon + shake_fake])
        loss, d, r1, r2 = penalised_discriminator_loss(lr, lf, pr, pf, self.opts.r1_lambda)
        return loss, {"d_loss": d.item(), "r1": r1.item(), "r2": r2.item(), "real_logit": lr.mean().item(),
                      "fake_logit": lf.mean().item()}

    def train_step(self, step: int) -> dict[str, float]:
        rng = self.rng(step)
        video = self.windows(self.indices(step), rng)
        loss, recon, parts = self.decoder_loss(video, rng)
        loss.backward()
        out = {"loss": loss.item(), **parts, **self.apply("decoder", step)}
        self.optimizers["discriminator"][1].zero_grad(set_to_none=True)  # the decoder's backward reached D too
        d_loss, d_parts = self.discriminate(video, recon.detach(), rng)
        d_loss.backward()
        return {**out, **d_parts, **self.apply("discriminator", step)}

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        """PSNR and L1 of the reconstructions, and their sharpness over the reference's (eval's sharpness_ratio)."""
        video = self.real_video(self.val_indices())
        recon = self.reconstruct(video)[1]
        frames = lambda v: to_uint8(v).reshape(-1, *v.shape[-2:], 3)  # noqa: E731 (B, 3, T, H, W) -> (B T, H, W, 3)
        ratio = float(np.sum(sharpness(frames(recon))) / np.sum(sharpness(frames(video))))
        return {**self.scores(video, recon), "val_sharpness": ratio}

    def export(self, path, step: int) -> None:
        state = distributed.full_state(self.vae)  # the latent scale is the source model's, folded in already
        self.save_model(path, state, self.generator_state, step)
