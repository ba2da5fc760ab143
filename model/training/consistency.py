"""Stage `consistency`: distil the diffusion model into a one-step generator (APT2.md, recipe step 2).

32 fixed times on the shifted grid; for a clip at t_n the teacher (the frozen diffusion model, no CFG) takes one
Euler step to t_{n-1}, and the student's x0 there, without gradient (no EMA target), is the target of the student's
x0 at t_n. Teacher forcing as in the diffusion stage, one t per clip. At t = 1 the student's x0 is the one-step
generator of inference, z - v(z, 1); the result is blurry and serves only as the adversarial stage's start.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.training.data import SampleRNG
from model.training.diffusion import recycled
from model.training.losses import consistency_target, consistency_times, noised, x0_from_v
from model.training.sampling import rollout
from model.training.stage import GeneratorBatch, LossStage


class ConsistencyStage(LossStage):
    uses_diffusion = True

    def __init__(self, *args):
        super().__init__(*args)
        teacher, self.diffusion_generator = self.diffusion_generator, None
        self.teacher = self.shard_generator(teacher.to(self.device).eval().requires_grad_(False))
        self.generator = self.shard_generator(self.generator)
        self.times = consistency_times(self.opts.cd_steps, self.shift).to(self.device)
        self.modules = {"vae": self.vae, "generator": self.generator, "teacher": self.teacher}
        self.optimizers = {"generator": (self.generator, self.adamw(self.generator))}

    def loss(self, batch: GeneratorBatch, rng: SampleRNG) -> torch.Tensor:
        x0, cam = batch.x0, batch.cam
        eps = rng.randn(*x0.shape[1:]).to(self.device)
        n = rng.integers(self.opts.cd_steps).to(self.device) + 1
        prev = recycled(batch, "block_causal", rng, self.opts.history_noise)  # the teacher sees the same history
        t, t_next = self.times[n], self.times[n - 1]
        x_t = noised(x0, eps, t)
        with torch.no_grad(), self.autocast():
            target = consistency_target(x_t, t, t_next, self.teacher(x_t, prev, cam, t),
                                        lambda x, tt: self.generator(x, prev, cam, tt))
        with self.autocast():
            predicted = x0_from_v(x_t, self.generator(x_t, prev, cam, t), t)
        return F.mse_loss(predicted.float(), target.float())

    def sample(self, batch, rng) -> torch.Tensor:
        noise = rng.randn(*batch.x0.shape[1:]).to(self.device)
        return rollout(self.generator, batch.first, batch.cam, noise, cache_dtype=self.cache_dtype())[0]
