"""The APT2 discriminator: the generator's backbone with learnable query tokens that read each latent frame.

It takes frames noised at a random t (x_t = (1 - t) x0 + t eps; the caller noises them) in place of the noise
channels, with the recycled previous frame and the camera as in the generator, and runs the block-causal backbone
over all frames in one pass. After each depth in `disc_layers`, one learnable query token per latent frame
cross-attends to that frame's tokens; the query outputs are concatenated, normalised and projected to one logit
per latent frame (APT's cross-attention-only heads). The backbone is initialised from the diffusion model with
`from_generator`.
"""
from __future__ import annotations

import torch
import torch.nn as nn

from model.attention import attention
from model.generator import Backbone, Generator, GeneratorConfig, norm_fp32


def tap_depths(cfg: GeneratorConfig) -> tuple[int, ...]:
    """The 1-based depths read by the query tokens: cfg.disc_layers, or three evenly spaced ending at the top."""
    taps = cfg.disc_layers or tuple(sorted({round(cfg.depth * (i + 1) / 3) for i in range(3)} - {0}))
    if list(taps) != sorted(set(taps)) or not all(1 <= d <= cfg.depth for d in taps):
        raise ValueError(f"disc_layers must be increasing depths in 1..{cfg.depth}, got {taps}")
    return tuple(taps)


class QueryHead(nn.Module):
    """One learnable query token per latent frame, cross-attending to that frame's tokens."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.heads = cfg.heads
        self.query = nn.Parameter(0.02 * torch.randn(cfg.dim))
        self.norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.q = nn.Linear(cfg.dim, cfg.dim, bias=False)
        self.kv = nn.Linear(cfg.dim, 2 * cfg.dim, bias=False)
        self.q_norm = nn.RMSNorm(cfg.head_dim(), eps=1e-6)
        self.k_norm = nn.RMSNorm(cfg.head_dim(), eps=1e-6)
        self.proj = nn.Linear(cfg.dim, cfg.dim)
        self.backend = cfg.attention_backend

    def forward(self, x: torch.Tensor, frames: int) -> torch.Tensor:
        """x (B, T * tokens, D) -> (B, T, D)."""
        B, L, D = x.shape
        H, hd = self.heads, D // self.heads
        tokens = self.norm(x).reshape(B * frames, L // frames, D)  # each frame on its own
        k, v = self.kv(tokens).view(B * frames, -1, 2, H, hd).permute(2, 0, 3, 1, 4)  # (B*T, H, tokens, hd)
        q = self.q(self.query).view(1, H, 1, hd).expand(B * frames, H, 1, hd)
        q, k = norm_fp32(self.q_norm, q).to(v.dtype), norm_fp32(self.k_norm, k).to(v.dtype)
        out = attention(q, k, v, None, self.backend)  # (B*T, H, 1, hd)
        return self.proj(out.reshape(B, frames, D))


class Discriminator(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.config = cfg
        self.taps = tap_depths(cfg)
        self.backbone = Backbone(cfg, depth=self.taps[-1])  # blocks past the last query would be unused
        self.heads = nn.ModuleList(QueryHead(cfg) for _ in self.taps)
        self.norm = nn.LayerNorm(len(self.taps) * cfg.dim)
        self.logit = nn.Linear(len(self.taps) * cfg.dim, 1)

    def forward(self, frames, prev, cam, t) -> torch.Tensor:
        """frames (noised at t)/prev (B, C, T, h, w), cam (B, camera_inputs, T, h, w), t (B,) -> logits (B, T)."""
        T = frames.shape[2]
        _, _, kept = self.backbone(frames, prev, cam, t, "block_causal", taps=self.taps)
        features = torch.cat([head(x, T) for head, x in zip(self.heads, kept)], dim=-1)  # (B, T, taps * D)
        return self.logit(self.norm(features)).squeeze(-1).float()

    @classmethod
    def from_generator(cls, gen: Generator) -> "Discriminator":
        """A discriminator on the generator's device and dtype, its backbone a copy of the generator's."""
        weight = gen.backbone.latent_in.weight
        with torch.device(weight.device):
            disc = cls(gen.config).to(weight.dtype)
        own = disc.backbone.state_dict()
        disc.backbone.load_state_dict({k: v for k, v in gen.backbone.state_dict().items() if k in own})
        return disc
