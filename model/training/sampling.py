"""How the stages' models make latent clips: the one-step rollout (inference, student forcing) and the multi-step
samplers of the diffusion stages (their sample videos and validation).

All take the first latent (B, C, 1, h, w), the camera (B, camera_inputs, k, h, w) and the noise (B, C, k, h, w), and return
the k generated latents (B, C, k, h, w).
"""
from __future__ import annotations

import torch

from model.generator import Generator, KVCache
from model.training.losses import noised, shift_time


def rollout(generator: Generator, first: torch.Tensor, cam: torch.Tensor, noise: torch.Tensor,
            cache: KVCache | None = None, cache_dtype: torch.dtype = torch.float32):
    """x_j = z_j - v(z_j, x_{j-1}, camera_j, t = 1), step after step with the KV cache, exactly as
    GeneratedWorld.step. The recycled x_{j-1} is detached; with grad enabled, gradients flow through the cache into
    earlier steps (student forcing). Pass a cache to continue a stream (long-video segments).

    Returns (latents (B, C, k, h, w), cache).
    """
    B = first.shape[0]
    if cache is None:
        cache = generator.new_cache(B, first.device, cache_dtype)
    t = torch.ones(B, device=first.device)
    prev, out = first, []
    for j in range(cam.shape[2]):
        z = noise[:, :, j:j + 1]
        x = z - generator.step(z, prev.detach(), cam[:, :, j:j + 1], t, cache)
        out.append(x)
        prev = x
    return torch.cat(out, dim=2), cache


def euler_times(steps: int, shift: float, device=None) -> torch.Tensor:
    """steps + 1 times from 1 down to 0, on the shifted grid the model was trained on."""
    return shift_time(torch.linspace(1.0, 0.0, steps + 1, device=device), shift)


@torch.no_grad()
def sample_full(generator: Generator, first, cam, noise, steps: int, shift: float) -> torch.Tensor:
    """The bidirectional (pretrain) model: all frames denoised together, each conditioned on the first latent."""
    times = euler_times(steps, shift, first.device)
    prev = first.expand_as(noise)
    x = noise
    for t, t_next in zip(times[:-1], times[1:]):
        v = generator(x, prev, cam, t.expand(len(x)), attention="full")
        x = x + (t_next - t) * v
    return x


@torch.no_grad()
def sample_causal(generator: Generator, first, cam, noise, steps: int, shift: float) -> torch.Tensor:
    """The teacher-forced (diffusion) model, frame by frame. Training gave every frame of a clip the same t, so
    at each sampling time the frames already made are noised to that time again (each with its own fixed noise)
    and the prefix is recomputed: the history the model sees is distributed as in training."""
    times = euler_times(steps, shift, first.device)
    B, done = len(first), []
    for j in range(noise.shape[2]):
        x = noise[:, :, j:j + 1]
        history = torch.cat(done, dim=2) if done else noise[:, :, :0]
        prev = torch.cat([first, history], dim=2)
        for t, t_next in zip(times[:-1], times[1:]):
            tt = t.expand(B)
            inp = torch.cat([noised(history, noise[:, :, :j], tt), x], dim=2)
            v = generator(inp, prev, cam[:, :, :j + 1], tt)[:, :, -1:]
            x = x + (t_next - t) * v
        done.append(x)
    return torch.cat(done, dim=2)
