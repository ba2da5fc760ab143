"""The losses of the training recipe (APT2.md, DESIGN section 4), as small pure functions of tensors.

Flow matching: x_t = (1 - t) x0 + t eps, the model predicts v = eps - x0, so x0 = x_t - t v and the one-step
generator's frame at t = 1 is z - v(z, 1). Times are drawn uniformly and shifted towards the noise end by
s t / (1 + (s - 1) t): the larger the latent, the more of its content survives a given t, so the larger the s.

Adversarial: the relativistic pairing loss of R3GAN on the logit difference d = D(fake) - D(real) of a paired real
and generated clip. The discriminator maximises f_D(d) = -log(1 + e^d), the generator maximises
f_G(d) = -log(1 + e^-d); as losses to minimise they are softplus(d) and softplus(-d). R1 and R2 are approximated
by how much the logits move under a small perturbation of the input, which needs no double backward.
"""
from __future__ import annotations

import math
from typing import Callable

import torch
import torch.nn.functional as F

PAPER_SHIFT = 24.0            # APT2's s for a 92x52 latent (736x416 video)
PAPER_LATENT_PIXELS = 92 * 52


# ---------------------------------------------------------------------------------------------------------------
# Flow matching


def shift_time(t: torch.Tensor, s: float) -> torch.Tensor:
    """s t / (1 + (s - 1) t): 0 and 1 stay put, and s > 1 moves everything in between towards 1 (more noise)."""
    return s * t / (1 + (s - 1) * t)


def default_shift(latent_size: tuple[int, int]) -> float:
    """The paper's s = 24 scaled to another latent size by the square root of the pixel count (the resolution rule
    of SD3: the signal left at a given t grows with the pixels that carry it). 16x9 (mini) -> 4.2, 8x4 (tiny) -> 2.0."""
    w, h = latent_size
    return PAPER_SHIFT * math.sqrt(w * h / PAPER_LATENT_PIXELS)


def noised(x0: torch.Tensor, eps: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """x_t = (1 - t) x0 + t eps with one t per clip: x0/eps (B, C, T, h, w), t (B,)."""
    t = t.view(-1, *([1] * (x0.dim() - 1)))
    return (1 - t) * x0 + t * eps


def flow_matching_loss(v: torch.Tensor, x0: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """MSE of the predicted velocity against the target eps - x0."""
    return F.mse_loss(v.float(), (eps - x0).float())


# ---------------------------------------------------------------------------------------------------------------
# Consistency distillation


def consistency_times(steps: int, s: float) -> torch.Tensor:
    """The fixed grid t_0 = 0 < t_1 < ... < t_steps = 1 (steps + 1 values): uniform, then shifted."""
    return shift_time(torch.linspace(0.0, 1.0, steps + 1, dtype=torch.float64), s).float()


def x0_from_v(x_t: torch.Tensor, v: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
    """The clean sample a velocity points at: x0 = x_t - t v (t (B,), one per clip)."""
    return x_t - t.view(-1, *([1] * (x_t.dim() - 1))) * v


def consistency_target(x_t: torch.Tensor, t: torch.Tensor, t_next: torch.Tensor, v_teacher: torch.Tensor,
                       student: Callable[[torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
    """What the student's x0 at (x_t, t) must equal: the teacher's Euler step from t down to t_next, then the
    student's own x0 there (no gradient: the caller passes a no-grad student). At t_next = 0 the sample is clean and
    is its own target (the consistency boundary condition).

    x_t/v_teacher (B, C, T, h, w); t, t_next (B,); student(x, t) -> v.
    """
    dt = (t - t_next).view(-1, *([1] * (x_t.dim() - 1)))
    x_next = x_t - dt * v_teacher
    return x0_from_v(x_next, student(x_next, t_next), t_next)


# ---------------------------------------------------------------------------------------------------------------
# Adversarial


def discriminator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-f_D(D(fake) - D(real)) = softplus(D(fake) - D(real)), averaged over the paired logits (B, T)."""
    return F.softplus(fake - real).mean()


def generator_loss(real: torch.Tensor, fake: torch.Tensor) -> torch.Tensor:
    """-f_G(D(fake) - D(real)) = softplus(D(real) - D(fake)), averaged over the paired logits (B, T)."""
    return F.softplus(real - fake).mean()


def approximate_r_penalty(logits: torch.Tensor, perturbed: torch.Tensor) -> torch.Tensor:
    """||D(x) - D(x + sigma n)||^2, averaged over clips and frames (so its scale does not depend on clip length):
    about sigma^2 ||grad_x D||^2, the R1 penalty on real inputs or R2 on generated ones. The caller multiplies by
    lambda."""
    return (logits.float() - perturbed.float()).pow(2).mean()


def penalised_discriminator_loss(real: torch.Tensor, fake: torch.Tensor, real_shaken: torch.Tensor,
                                 fake_shaken: torch.Tensor, lam: float) -> tuple[torch.Tensor, ...]:
    """The discriminator's whole loss from its logits on real and generated samples and on the same perturbed:
    pairing + lam (R1 + R2). Returns (loss, pairing, r1, r2)."""
    d, r1, r2 = (discriminator_loss(real, fake), approximate_r_penalty(real, real_shaken),
                 approximate_r_penalty(fake, fake_shaken))
    return d + lam * (r1 + r2), d, r1, r2


# ---------------------------------------------------------------------------------------------------------------
# VAE


def gradient_loss(a: torch.Tensor, b: torch.Tensor, scales: int = 3) -> torch.Tensor:
    """L1 between the horizontal and vertical finite differences of two videos (B, 3, T, H, W), at `scales`
    resolutions (2x average pooling between them): a structural term that needs no downloaded network and that
    punishes blur, which an L1 on pixels alone tolerates."""
    a, b = a.flatten(1, 2).float(), b.flatten(1, 2).float()  # (B, 3T, H, W): frames are images here
    total = a.new_zeros(())
    for scale in range(scales):
        if scale:
            a, b = F.avg_pool2d(a, 2), F.avg_pool2d(b, 2)
        for dim in (-1, -2):
            total = total + F.l1_loss(a.diff(dim=dim), b.diff(dim=dim))
    return total / scales


def colour_loss(a: torch.Tensor, b: torch.Tensor, block: int = 8) -> torch.Tensor:
    """MSE between the mean colours of `block` x `block` patches of each frame of two videos (B, 3, T, H, W): the
    colours at the latent's own resolution. A per-pixel L1 pulls every pixel with the same force whatever its error,
    and on these frames most pixels carry unpredictable pixel-scale texture; a whole field drawn in the wrong colour
    (grass drawn grey) is a large error that the patch means isolate and a square weights up."""
    a, b = a.flatten(1, 2).float(), b.flatten(1, 2).float()  # (B, 3T, H, W)
    return F.mse_loss(F.avg_pool2d(a, block), F.avg_pool2d(b, block))


def kl_loss(mean: torch.Tensor, logvar: torch.Tensor) -> torch.Tensor:
    """KL(N(mean, e^logvar) || N(0, 1)) per latent element, averaged."""
    return 0.5 * (mean.float().pow(2) + logvar.float().exp() - 1.0 - logvar.float()).mean()


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """PSNR in dB of videos in [-1, 1] (peak-to-peak 2), one value per clip: (B, ...) -> (B,)."""
    mse = (a.float() - b.float()).pow(2).flatten(1).mean(1)
    return 10 * torch.log10(4.0 / mse)
