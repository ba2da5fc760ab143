"""3D rotary position embedding: each head's dims are split over (time, height, width).

Time is the absolute latent step index with a fixed interval of one per step, so a stream of any length gets
positions; relative offsets between frames are what the attention scores see. Angles are computed in float64 and
rotated in float32, so that positions far into a long stream keep their precision.
"""
from __future__ import annotations

import torch


def axis_dims(head_dim: int) -> tuple[int, int, int]:
    """Head dims given to (time, height, width); each even, height and width equal (128 -> 44, 42, 42)."""
    spatial = 2 * (head_dim // 6)
    return head_dim - 2 * spatial, spatial, spatial


def token_positions(frames: torch.Tensor, grid: tuple[int, int]) -> torch.Tensor:
    """(T,) frame indices and the token grid (gh, gw) -> (T * gh * gw, 3) (t, y, x) per token, frame-major."""
    gh, gw = grid
    t, y, x = torch.meshgrid(frames.to(torch.float64),
                             torch.arange(gh, dtype=torch.float64, device=frames.device),
                             torch.arange(gw, dtype=torch.float64, device=frames.device), indexing="ij")
    return torch.stack([t, y, x], dim=-1).reshape(-1, 3)


def rope_tables(positions: torch.Tensor, head_dim: int, theta: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(L, 3) positions -> cos, sin, each (L, head_dim // 2) float32."""
    angles = []
    for axis, dims in enumerate(axis_dims(head_dim)):
        freqs = theta ** (-torch.arange(0, dims, 2, dtype=torch.float64, device=positions.device) / dims)
        angles.append(positions[:, axis, None] * freqs)  # (L, dims // 2)
    angles = torch.cat(angles, dim=-1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate pairs (i, i + head_dim/2) of x (B, heads, L, head_dim) by the angles of each token, in float32;
    returns x's dtype."""
    x1, x2 = x.float().chunk(2, dim=-1)
    return torch.cat([x1 * cos - x2 * sin, x2 * cos + x1 * sin], dim=-1).to(x.dtype)
