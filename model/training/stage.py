"""What every stage shares: the options, the processes, the data, optimiser steps, validation, samples, export.

A stage has `modules` (everything its training state holds), `optimizers` ({name: (module, optimiser)}) and the
four methods run.fit calls: train_step, validate, write_sample, export.
`GeneratorStage` adds what the generator stages share: the VAE and generator from the previous stage's checkpoint,
cached latents, camera embeddings, and a `sample` procedure whose decoded result gives val_psnr and the videos.
"""
from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn as nn

from camera.embedding import CameraScaling
from camera.errors import InputError
from explorer.video import VideoWriter
from model.checkpoint import load_checkpoint, save_checkpoint
from model.config import ModelConfig
from model.generator import Block, Generator
from model.training import distributed
from model.training.data import Clips, LatentCache, SampleRNG, batch_camera, encode_latents, latent_folder
from model.training.distributed import Dist
from model.training.losses import default_shift, psnr
from model.training.options import SOURCE, TrainOptions
from model.training.run import RunFolder, learning_rate
from model.training.state import read_module
from model.vae import VAE, from_uint8, to_uint8

VAL_BATCH = 8  # held-out clips in validation (the first of them is the sample video)


class Stage(ABC):
    def __init__(self, opts: TrainOptions, d: Dist, run: RunFolder, config: ModelConfig, clips: Clips,
                 scaling: CameraScaling):
        self.opts, self.dist, self.run, self.config, self.clips, self.scaling = opts, d, run, config, clips, scaling
        self.device = d.device
        torch.manual_seed(opts.seed)  # what the stage builds fresh (a discriminator's heads) is the same everywhere
        self.modules: dict[str, nn.Module] = {}
        self.optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]] = {}

    @abstractmethod
    def train_step(self, step: int) -> dict[str, float]:
        """One optimiser step on global batch `step`; the metrics include 'loss'."""

    @abstractmethod
    def validate(self) -> dict[str, float]:
        """Metrics on held-out clips with fixed noise."""

    @abstractmethod
    def write_sample(self, path: Path) -> None:
        """A held-out clip as an .mp4: reference | generated."""

    @abstractmethod
    def export(self, path: Path, step: int) -> None:
        """The model checkpoint (VAE + generator) for GeneratedWorld."""

    def source_checkpoint(self) -> Path:
        """The model a stage starts from: --init, else the previous stage's (options.SOURCE)."""
        if self.opts.init:
            return Path(self.opts.init)
        path = self.run.model_path(SOURCE[self.opts.stage])
        if not path.exists():
            raise InputError(path, None, f"the {self.opts.stage} stage starts from the {SOURCE[self.opts.stage]} "
                             f"stage's model: train that first, or pass --init CHECKPOINT")
        return path

    # --- randomness and data -----------------------------------------------------------------------------------
    def autocast(self):
        return torch.autocast(self.device.type, torch.bfloat16, enabled=self.opts.precision == "bf16")

    def indices(self, step: int) -> np.ndarray:
        """This process's clips of global batch `step`."""
        positions = self.dist.positions(self.opts.batch)
        return self.clips.batch_indices(self.opts.seed, step, self.opts.batch)[positions.start:positions.stop]

    def rng(self, step: int) -> SampleRNG:
        return SampleRNG(self.opts.seed, step, self.dist.positions(self.opts.batch))

    def val_indices(self) -> np.ndarray:
        return self.clips.val[:VAL_BATCH]

    def val_rng(self, clips: int = VAL_BATCH) -> SampleRNG:
        """Fixed draws for the first `clips` held-out clips: validation sees the same noise at every save."""
        return SampleRNG(self.opts.seed, -1, range(min(clips, len(self.val_indices()))))

    def real_video(self, indices, length: int | None = None, starts=None) -> torch.Tensor:
        """Frames starts[i] .. starts[i] + length (default: whole clips) -> (B, 3, T, H, W) in [-1, 1] on the device."""
        starts = [0] * len(indices) if starts is None else starts
        return from_uint8(np.stack([self.clips.video(i, s, length) for i, s in zip(indices, starts)])).to(self.device)

    # --- optimisation ------------------------------------------------------------------------------------------
    def adamw(self, module: nn.Module) -> torch.optim.Optimizer:
        return torch.optim.AdamW(module.parameters(), lr=self.opts.lr, weight_decay=0.01)

    def rmsprop(self, module: nn.Module) -> torch.optim.Optimizer:
        """APT's optimiser for the adversarial stages: RMSProp with alpha 0.9, no weight decay."""
        return torch.optim.RMSprop(module.parameters(), lr=self.opts.lr, alpha=0.9)

    def apply(self, name: str, step: int) -> dict[str, float]:
        """The optimiser step of `name` on the gradients accumulated so far, then clears them. A discriminator
        learns at --disc-lr-scale times the learning rate."""
        module, optimizer = self.optimizers[name]
        scale = self.opts.disc_lr_scale if name == "discriminator" else 1.0
        for group in optimizer.param_groups:
            group["lr"] = learning_rate(self.opts.lr * scale, self.opts.warmup, step)
        out = {}
        if self.opts.grad_clip:
            norm = torch.nn.utils.clip_grad_norm_(module.parameters(), self.opts.grad_clip)
            out[f"{name}_grad_norm"] = float(norm.full_tensor() if hasattr(norm, "full_tensor") else norm)
        optimizer.step()
        optimizer.zero_grad(set_to_none=True)
        return out

    # --- output ------------------------------------------------------------------------------------------------
    def write_video(self, path: Path, real: np.ndarray, generated: np.ndarray) -> None:
        """reference | generated side by side; frames the reference lacks (long rollouts) are grey."""
        if len(real) < len(generated):
            real = np.concatenate([real, np.full((len(generated) - len(real), *real.shape[1:]), 128, np.uint8)])
        with VideoWriter(path, (2 * real.shape[2], real.shape[1])) as video:
            video.write(np.concatenate([real[:len(generated)], generated], axis=2))

    def save_model(self, path: Path, vae_state: dict, generator_state: dict, step: int) -> None:
        if not self.dist.main:
            return
        vae, generator = VAE(self.config.vae), Generator(self.config.generator)
        vae.load_state_dict(vae_state)
        generator.load_state_dict(generator_state)
        save_checkpoint(path, self.config, vae, generator, self.scaling.to_dict(), self.opts.stage,
                        extra={"step": str(step), "run": self.run.root.name})


@dataclass
class GeneratorBatch:
    indices: np.ndarray
    latents: torch.Tensor  # (B, C, 1 + k, h, w): latent 0 is the first image
    cam: torch.Tensor      # (B, camera_inputs, k, h, w): step j's camera, from video frames 4j .. 4j + 4

    @property
    def first(self) -> torch.Tensor:
        return self.latents[:, :, :1]

    @property
    def x0(self) -> torch.Tensor:
        """The latents the generator's k steps must produce."""
        return self.latents[:, :, 1:]


class GeneratorStage(Stage):
    """The VAE (frozen) and the generator from the source checkpoint, the latent cache, batches."""
    uses_diffusion = False  # the stage loads the diffusion model too (a teacher, a discriminator's start)

    def needs_diffusion(self) -> bool:
        """Whether this stage will load the diffusion model."""
        return self.uses_diffusion

    def __init__(self, *args):
        super().__init__(*args)
        source = self.source_checkpoint()
        loaded = load_checkpoint(source, expect_config=self.config)
        if self.opts.resume:
            # The VAE the stage has trained with, from its state, not the source's as it is now: a VAE stage resumed
            # since (or an --init file replaced) re-encoded the latents, and the generator went on with other ones
            own = read_module(self.run.state_path(self.opts.stage), "vae")
            if own:
                loaded.vae.load_state_dict(own)
        # the diffusion model (a teacher, a discriminator's start), loaded and checked before the latents' minutes
        self.diffusion_generator = self.diffusion_model(loaded.vae) if self.needs_diffusion() else None
        self.vae = loaded.vae.to(self.device).requires_grad_(False)
        self.generator = loaded.generator.to(self.device).train()
        self.shift = self.opts.shift or default_shift(self.config.latent_size())
        folder = latent_folder(self.run.root / "latents", self.clips, self.vae)
        encode_latents(folder, self.clips, self.vae, self.device, self.opts.precision == "bf16", self.dist.rank,
                       self.dist.world)
        self.dist.barrier()
        self.latents = LatentCache(folder, len(self.clips.frames))

    def diffusion_checkpoint(self) -> Path:
        """The diffusion model (consistency's teacher, the discriminator's initialisation)."""
        path = Path(self.opts.diffusion) if self.opts.diffusion else self.run.model_path("diffusion")
        if not path.exists():
            raise InputError(path, None, "the diffusion model is missing: train the diffusion stage first, or pass "
                             "--diffusion CHECKPOINT")
        return path

    def diffusion_model(self, vae: VAE) -> Generator:
        """The diffusion model's generator, checked that it can teach this stage: a trained generator (not the vae
        stage's), on latents of this stage's VAE (the same encoder, to bf16's precision: a shipped model is stored
        in bf16; the decoder stage changes only the decoder)."""
        path = self.diffusion_checkpoint()
        diffusion = load_checkpoint(path, expect_config=self.config)
        if diffusion.stage == "vae":
            raise InputError(path, "stage", "is from the vae stage, whose generator is untrained; give the diffusion "
                             "stage's model")
        ours, theirs = vae.encoder.state_dict(), diffusion.vae.encoder.state_dict()
        if not all(torch.allclose(ours[k].float(), theirs[k].float(), rtol=1 / 64, atol=1e-4) for k in ours):
            raise InputError(path, "vae", "its VAE encodes frames other than this stage's does (its generator learnt "
                             "other latents); give the diffusion model trained on this run's VAE")
        return diffusion.generator

    def shard_generator(self, generator: Generator, zero2: bool = False) -> Generator:
        generator.backbone.grad_checkpointing = self.opts.grad_checkpointing
        return distributed.shard(generator, [m for m in generator.modules() if isinstance(m, Block)], self.dist,
                                 forward_methods=("step",), reshard_after_forward=not zero2)

    def batch_of(self, indices) -> GeneratorBatch:
        latents = self.latents.get(indices).to(self.device)
        return GeneratorBatch(np.asarray(indices), latents,
                              batch_camera(self.clips, indices, self.config, self.scaling).to(self.device))

    def batch(self, step: int) -> GeneratorBatch:
        return self.batch_of(self.indices(step))

    def cache_dtype(self) -> torch.dtype:
        return torch.bfloat16 if self.opts.precision == "bf16" else torch.float32

    # --- what each generator stage provides ----------------------------------------------------------------------
    @abstractmethod
    def sample(self, batch: GeneratorBatch, rng: SampleRNG) -> torch.Tensor:
        """The stage's way of making the latents of the batch's clips, (B, C, k or more, h, w), no gradient."""

    def val_losses(self, batch: GeneratorBatch, rng: SampleRNG) -> dict[str, float]:
        return {}

    # --- shared outputs ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def decode(self, first: torch.Tensor, latents: torch.Tensor) -> torch.Tensor:
        with self.autocast():
            return self.vae.decode(torch.cat([first, latents], dim=2)).float()

    @torch.no_grad()
    def validate(self) -> dict[str, float]:
        batch = self.batch_of(self.val_indices())
        out = self.val_losses(batch, self.val_rng())
        with self.autocast():
            latents = self.sample(batch, self.val_rng())
        latents = latents[:, :, :batch.x0.shape[2]]  # a long rollout is compared where the reference exists
        out["val_psnr"] = float(psnr(self.decode(batch.first, latents), self.real_video(batch.indices)).mean())
        return out

    @torch.no_grad()
    def write_sample(self, path: Path) -> None:
        batch = self.batch_of(self.val_indices()[:1])
        with self.autocast():
            latents = self.sample(batch, self.val_rng(1))
        if self.dist.main:
            self.write_video(path, self.clips.video(batch.indices[0]), to_uint8(self.decode(batch.first, latents)[0]))

    def export(self, path: Path, step: int) -> None:
        self.save_model(path, distributed.full_state(self.vae), distributed.full_state(self.generator), step)


class LossStage(GeneratorStage):
    """A generator stage with one loss on teacher-forced batches (pretrain, diffusion, consistency)."""

    @abstractmethod
    def loss(self, batch: GeneratorBatch, rng: SampleRNG) -> torch.Tensor:
        """The stage's scalar loss on a batch."""

    def train_step(self, step: int) -> dict[str, float]:
        loss = self.loss(self.batch(step), self.rng(step))
        loss.backward()
        return {"loss": loss.item(), **self.apply("generator", step)}

    def val_losses(self, batch: GeneratorBatch, rng: SampleRNG) -> dict[str, float]:
        return {"val_loss": float(self.loss(batch, rng))}
