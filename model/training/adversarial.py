"""Stages `adversarial` and `long`: adversarial post-training with student forcing (APT2.md, recipe steps 3 and 4).

The generator sees only the first real latent and rolls out on its own outputs with the KV cache, exactly as at
inference (sampling.rollout: x_t = z_t - v at t = 1, the recycled input detached, gradients through the cache). The
discriminator, initialised from the diffusion model, judges every frame of a clip in one pass, the frames noised at
a t ~ U(0, 1) shared by the generated clip and the real clip it is paired with. Losses: the relativistic pairing
loss, approximated R1 (real) and R2 (generated), RMSProp with alpha 0.9, no gradient clipping.

`long` rolls out `segments` windows of k latent steps (k = the clip length of the data), consecutive windows sharing
`overlap` steps: the first window generates k steps, each later one k - overlap more, continuing the same stream
from the cache of the one before, detached (backpropagation per segment, as the paper). Each window is judged
against the batch's real clip. The camera beyond the clip is the camera of other training clips, appended step by
step (the embedding is relative to the previous frame, so any sequence of steps is a valid trajectory).
"""
from __future__ import annotations

import torch

from camera.errors import InputError
from model.discriminator import Discriminator
from model.generator import Block
from model.training import distributed
from model.training.data import SampleRNG, batch_camera
from model.training.gate import train_gate_alone
from model.training.losses import generator_loss, noised, penalised_discriminator_loss
from model.training.options import TrainOptions
from model.training.sampling import rollout
from model.training.stage import GeneratorBatch, GeneratorStage
from model.training.state import read_module

MAX_ROLLOUT = 360  # latent steps of one long rollout: 1440 frames, 60 s at 24 fps
DEFAULT_OVERLAP = TrainOptions.overlap
Window = tuple[torch.Tensor, torch.Tensor, torch.Tensor]  # generated frames, their recycled inputs, camera


class AdversarialStage(GeneratorStage):
    uses_diffusion = True

    def __init__(self, *args):
        super().__init__(*args)
        k = self.clips.latent_steps
        self.segments = self.opts.segments if self.opts.stage == "long" else 1
        self.overlap = self.opts.overlap if self.opts.stage == "long" else 0
        if not 0 <= self.overlap < k:
            raise InputError("command line", "--overlap", f"{self.overlap} must be 0 .. {k - 1}: the clips have {k} "
                             f"latent steps ({1 + 4 * k} frames); give a smaller --overlap (the default is "
                             f"{DEFAULT_OVERLAP}) or make clips with more --frames")
        self.steps = k + (self.segments - 1) * (k - self.overlap)  # latent steps of one rollout
        if self.steps > MAX_ROLLOUT:  # held in memory whole; 100000 windows ran for minutes, deaf to SIGTERM
            raise InputError("command line", "--segments", f"{self.segments} windows roll out {self.steps} latent "
                             f"steps; at most {MAX_ROLLOUT} ({MAX_ROLLOUT * 4 / 24:g} s at 24 fps, the paper's longest "
                             f"training videos): at most {1 + (MAX_ROLLOUT - k) // (k - self.overlap)} windows here")
        if self.opts.gate_only:  # the blocks stay as they are; the gate learns what the discriminator takes as real
            train_gate_alone(self.generator)
        disc = self.initial_discriminator().to(self.device).train()
        self.discriminator = distributed.shard(disc, [m for m in disc.modules() if isinstance(m, Block)], self.dist)
        self.generator = self.shard_generator(self.generator, zero2=True)
        self.modules = {"vae": self.vae, "generator": self.generator, "discriminator": self.discriminator}
        self.optimizers = {"generator": (self.generator, self.rmsprop(self.generator)),
                           "discriminator": (self.discriminator, self.rmsprop(self.discriminator))}

    def continues_adversarial(self) -> bool:
        """long whose source is the adversarial stage: its discriminator goes on from that stage's."""
        return self.opts.stage == "long" and not self.opts.init and self.run.state_path("adversarial").exists()

    def needs_diffusion(self) -> bool:
        return not self.continues_adversarial()

    def initial_discriminator(self) -> Discriminator:
        """long: the adversarial stage's discriminator, if that stage is the source; else from the diffusion model
        (the paper: generator and discriminator both start from the diffusion weights)."""
        if self.continues_adversarial():
            disc = Discriminator(self.config.generator)
            disc.load_state_dict(read_module(self.run.state_path("adversarial"), "discriminator"))
            return disc
        disc, self.diffusion_generator = Discriminator.from_generator(self.diffusion_generator), None
        return disc

    # --- data ----------------------------------------------------------------------------------------------------
    def camera(self, batch: GeneratorBatch, rng: SampleRNG) -> torch.Tensor:
        """(B, camera_inputs, self.steps, h, w): the clip's camera, then other training clips' cameras."""
        cams, have = [batch.cam], batch.cam.shape[2]
        while have < self.steps:
            other = self.clips.train[rng.integers(len(self.clips.train)).numpy()]
            cams.append(batch_camera(self.clips, other, self.config, self.scaling).to(self.device))
            have += cams[-1].shape[2]
        return torch.cat(cams, dim=2)[:, :, :self.steps]

    def latent_noise(self, rng: SampleRNG, batch: GeneratorBatch, steps: int) -> torch.Tensor:
        C, _, h, w = batch.x0.shape[1:]
        return rng.randn(C, steps, h, w).to(self.device)

    # --- the two players -----------------------------------------------------------------------------------------
    def judge(self, batch: GeneratorBatch, inputs: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor]],
              rng: SampleRNG) -> list[torch.Tensor]:
        """Logits (B, k) of each (frames, recycled, camera) in `inputs`, in one discriminator pass: every entry is
        noised with the same t and noise, a fresh draw per call."""
        t = rng.rand().to(self.device)
        eps = self.latent_noise(rng, batch, batch.x0.shape[2])
        frames = torch.cat([noised(f, eps, t) for f, _, _ in inputs])
        with self.autocast():
            logits = self.discriminator(frames, torch.cat([p for _, p, _ in inputs]),
                                        torch.cat([c for _, _, c in inputs]), t.repeat(len(inputs)))
        return list(logits.chunk(len(inputs)))

    def real(self, batch: GeneratorBatch) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return batch.x0, batch.latents[:, :, :-1], batch.cam

    def generate(self, batch: GeneratorBatch, rng: SampleRNG, train: bool) -> tuple[float, list[Window]]:
        """Rolls out the windows, the generator loss of each backpropagated at once when `train`.

        Returns the mean generator loss and the windows, detached (for the discriminator)."""
        k = batch.x0.shape[2]
        cam, noise = self.camera(batch, rng), self.latent_noise(rng, batch, self.steps)
        made, cache, windows, total = batch.first, None, [], 0.0
        with torch.set_grad_enabled(train):
            for m in range(self.segments):
                begin = 0 if m == 0 else k + (m - 1) * (k - self.overlap)
                count = k if m == 0 else k - self.overlap
                with self.autocast():
                    new, cache = rollout(self.generator, made[:, :, -1:], cam[:, :, begin:begin + count],
                                         noise[:, :, begin:begin + count], cache, self.cache_dtype())
                stream = torch.cat([made, new], dim=2)  # latent 0 .. begin + count; only `new` carries gradients
                w0 = begin + count - k
                window = (stream[:, :, w0 + 1:w0 + k + 1], stream[:, :, w0:w0 + k], cam[:, :, w0:w0 + k])
                real, fake = self.judge(batch, [self.real(batch), window], rng)
                loss = generator_loss(real, fake) / self.segments
                if train:
                    loss.backward()
                total += loss.item()
                windows.append(tuple(x.detach() for x in window))
                made, cache = stream.detach(), cache.detach()
        return total, windows

    def discriminate(self, batch: GeneratorBatch, windows: list[Window], rng: SampleRNG,
                     train: bool) -> dict[str, float]:
        """The discriminator's loss on the windows against the real clip, with approximated R1 and R2."""
        out = {"d_loss": 0.0, "r1": 0.0, "r2": 0.0, "real_logit": 0.0, "fake_logit": 0.0}
        sigma, lam, n = self.opts.r1_sigma, self.opts.r1_lambda, len(windows)
        real = self.real(batch)
        with torch.set_grad_enabled(train):
            for window in windows:
                shake_real = self.latent_noise(rng, batch, real[0].shape[2]) * sigma
                shake_fake = self.latent_noise(rng, batch, real[0].shape[2]) * sigma
                # as the paper writes it: the clean sample is perturbed, and judge() noises both alike
                lr, lf, pr, pf = self.judge(batch, [real, window, (real[0] + shake_real, *real[1:]),
                                                    (window[0] + shake_fake, *window[1:])], rng)
                loss, d, r1, r2 = penalised_discriminator_loss(lr, lf, pr, pf, lam)
                if train:
                    (loss / n).backward()
                for key, value in (("d_loss", d), ("r1", r1), ("r2", r2), ("real_logit", lr.mean()),
                                   ("fake_logit", lf.mean())):
                    out[key] += value.item() / n
        return out

    def train_step(self, step: int) -> dict[str, float]:
        batch, rng = self.batch(step), self.rng(step)
        g_loss, windows = self.generate(batch, rng, train=True)
        out = {"loss": g_loss, **self.apply("generator", step)}
        self.optimizers["discriminator"][1].zero_grad(set_to_none=True)  # the generator's backward reached D too
        out.update(self.discriminate(batch, windows, rng, train=True))
        out.update(self.apply("discriminator", step))
        return out

    def sample(self, batch, rng) -> torch.Tensor:
        cam = self.camera(batch, rng)
        return rollout(self.generator, batch.first, cam, self.latent_noise(rng, batch, cam.shape[2]),
                       cache_dtype=self.cache_dtype())[0]
