"""Scaled dot-product attention with a choice of backend.

"flash" is flash_attn.flash_attn_func (CUDA, fp16/bf16, no arbitrary mask: used for the streaming step, where the
cache holds exactly what a frame may see, and for full attention). "sdpa" is torch's scaled_dot_product_attention,
which takes the boolean block-causal mask. "auto" takes flash where it can and sdpa otherwise.
"""
from __future__ import annotations

import torch
import torch.nn.functional as F

try:
    from flash_attn import flash_attn_func
except ImportError:  # not installed, or no CUDA build: sdpa serves every case
    flash_attn_func = None

BACKENDS = ("auto", "flash", "sdpa")


def flash_available(device) -> bool:
    """Whether flash attention can run on `device` at all (installed, and a CUDA device)."""
    return flash_attn_func is not None and torch.device(device).type == "cuda"


def flash_usable(q: torch.Tensor, mask: torch.Tensor | None) -> bool:
    return (flash_attn_func is not None and mask is None and q.is_cuda
            and q.dtype in (torch.float16, torch.bfloat16))


def attention(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None,
              backend: str = "auto") -> torch.Tensor:
    """q (B, heads, Lq, head_dim), k/v (B, heads, Lk, head_dim), mask (Lq, Lk) bool, True = may attend.

    Returns (B, heads, Lq, head_dim).
    """
    if backend not in BACKENDS:
        raise ValueError(f"attention backend must be one of {BACKENDS}, got {backend!r}")
    if backend == "flash" and not flash_usable(q, mask):
        raise RuntimeError("flash attention needs flash_attn installed, CUDA fp16/bf16 tensors and no mask")
    if backend == "flash" or (backend == "auto" and flash_usable(q, mask)):
        # flash_attn works on (B, L, heads, head_dim)
        out = flash_attn_func(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2))
        return out.transpose(1, 2)
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)
