"""Stage `gate`: give a finished one-step generator a warp gate (GeneratorConfig.warp_gate, zero-initialised) and
teach it how far to lean on the recycled frame carried along by the camera's rotation, everything else frozen.

The generator rolls out on its own outputs with the KV cache from the first real latent, exactly as at inference
(sampling.rollout, student forcing), and each step's latent is scored against the clip's real one (MSE). Only the
gate learns: a linear map from the last hidden state to a mix per latent pixel and channel, so a few hundred steps
settle it, and the shipped file changes in a few kilobytes (its other tensors stay byte for byte). The blocks stay
as the adversarial stage left them: the regression only chooses how much of the model's own frame and of the warped
previous one to take where (a mix of two misaligned frames is itself a blur: eval's sharpness ratio shows it).
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

from model.training.data import SampleRNG
from model.training.sampling import rollout
from model.training.stage import GeneratorBatch, LossStage


def train_gate_alone(generator) -> None:
    """Freezes the generator but for its warp gate (the gate stage, and --gate-only in the adversarial ones)."""
    generator.requires_grad_(False)
    generator.gate.requires_grad_(True)


class GateStage(LossStage):
    """Built with the gated config (train.with_warp_gate): a model without a gate grows one at zero and starts
    computing what it did; a model with one goes on from it."""

    def __init__(self, *args):
        super().__init__(*args)
        train_gate_alone(self.generator)
        self.modules = {"vae": self.vae, "generator": self.generator}
        self.optimizers = {"generator": (self.generator, torch.optim.AdamW(self.generator.gate.parameters(),
                                                                           lr=self.opts.lr, weight_decay=0.0))}

    def loss(self, batch: GeneratorBatch, rng: SampleRNG) -> torch.Tensor:
        with self.autocast():
            latents = self.sample(batch, rng)
        return F.mse_loss(latents.float(), batch.x0.float())

    def sample(self, batch, rng) -> torch.Tensor:
        noise = rng.randn(*batch.x0.shape[1:]).to(self.device)
        return rollout(self.generator, batch.first, batch.cam, noise, cache_dtype=self.cache_dtype())[0]
