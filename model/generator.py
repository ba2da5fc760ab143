"""The APT2 generator: a block-causal transformer over patchified latent frames, with a KV cache for streaming.

One latent step t (one latent frame = four video frames) goes in as, per latent pixel, the noise z_t, the previous
latent frame x_{t-1} (recycled) and the camera rays, concatenated on channels; out comes a velocity v, and the
one-step generator's frame is x_t = z_t - v (APT2.md, "one-step form").

Attention is block-causal over latent frames: frame f sees frame 0 (the sink, kept for ever) and frames
max(1, f - N) .. f (a sliding window of N earlier frames plus itself). `forward` runs a whole clip with that mask
(training); `step` runs one frame against a KVCache of the sink and the last N frames (inference), and the two agree
to float tolerance. With several blocks the receptive field still reaches depth * N frames back, through the
earlier frames' hidden states, exactly as in the masked forward.
"""
from __future__ import annotations

import functools
import math
from dataclasses import asdict, dataclass, replace

import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.utils.checkpoint import checkpoint

from model.attention import attention
from model.rope import apply_rope, rope_tables, token_positions


@dataclass
class GeneratorConfig:
    latent_channels: int = 16          # C of the VAE latent
    latent_size: tuple[int, int] = (32, 18)  # (w, h) of the latent grid at the native resolution
    patch: int = 2                     # p: tokens are p x p latent pixels
    camera_channels: int = 24          # 4 video frames x (ray origin 3 + ray direction 3) per latent pixel
    dim: int = 256
    depth: int = 8
    heads: int = 4
    mlp_ratio: float = 4.0             # SwiGLU hidden = round(2/3 * mlp_ratio * dim) to a multiple of 64
    window: int = 30                   # N: latent frames of history each frame sees (besides the sink)
    rope_theta: float = 10000.0
    disc_layers: tuple[int, ...] = ()  # depths where the discriminator's query tokens cross-attend (default: evenly spaced 3)
    attention_backend: str = "auto"    # "auto" | "flash" | "sdpa", see model/attention.py
    warp: bool = False                 # also take the recycled frame warped by the camera's rotation (see warp_latent)
    warp_gate: bool = False            # and let the output lean on it by a learnt gate (Generator._velocity); needs
                                       # warp. Off in the presets: only the `gate` stage adds it (docs/training.md run 9)

    def __post_init__(self):
        if self.warp_gate and not self.warp:
            raise ValueError("warp_gate needs warp: the gate leans on the warped recycled frame")

    def camera_inputs(self) -> int:
        """Channels of the camera tensor the model takes: the rays, and with `warp` the rotation flow (2)."""
        return self.camera_channels + (2 if self.warp else 0)

    def tokens_per_frame(self) -> int:
        w, h = self.latent_size
        return (w // self.patch) * (h // self.patch)

    def head_dim(self) -> int:
        return self.dim // self.heads

    def mlp_hidden(self) -> int:
        return 64 * round(2 / 3 * self.mlp_ratio * self.dim / 64)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "GeneratorConfig":
        d = dict(d)
        for key in ("latent_size", "disc_layers"):
            if key in d:
                d[key] = tuple(d[key])
        return GeneratorConfig(**d)


# tiny: for tests. mini: the CPU default (7.5M parameters); a streaming step with a full cache takes about 29 ms at
# batch 1 on 2 threads with the module cast to bf16 (autocast: the same, fp32: 46 ms). Its window is 15 latent
# frames (2.5 s, the paper's N at 1280x720) rather than 30: attention over the cache is most of the step on a CPU,
# and N = 30 at this width costs about 60 ms. apt2-8b: 36 blocks of dim 3456 (27 heads of 128) = 7.78B parameters,
# 1196 tokens per latent frame at 736x416, N = 30.
GENERATOR_PRESETS = {
    "tiny": GeneratorConfig(latent_size=(8, 6), dim=64, depth=2, heads=2, window=3, disc_layers=(1, 2), warp=True),
    "mini": GeneratorConfig(latent_size=(16, 9), patch=1, dim=256, depth=6, heads=4, window=15, warp=True),
    "apt2-8b": GeneratorConfig(latent_size=(92, 52), dim=3456, depth=36, heads=27, window=30),
}


# ---------------------------------------------------------------------------------------------------------------
# Patches, masks, conditioning


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, ch, T, h, w) -> (B, T * h/p * w/p, ch * p * p), tokens frame-major then row-major."""
    B, ch, T, h, w = x.shape
    if h % p or w % p:
        raise ValueError(f"latent size {w}x{h} is not divisible by the patch size {p}")
    x = x.reshape(B, ch, T, h // p, p, w // p, p).permute(0, 2, 3, 5, 1, 4, 6)  # (B, T, gh, gw, ch, p, p)
    return x.reshape(B, T * (h // p) * (w // p), ch * p * p)


def unpatchify(x: torch.Tensor, T: int, grid: tuple[int, int], p: int) -> torch.Tensor:
    """(B, T * gh * gw, ch * p * p) -> (B, ch, T, gh * p, gw * p)."""
    B, gh, gw = x.shape[0], *grid
    x = x.reshape(B, T, gh, gw, -1, p, p).permute(0, 4, 1, 2, 5, 3, 6)  # (B, ch, T, gh, p, gw, p)
    return x.reshape(B, -1, T, gh * p, gw * p)


@functools.lru_cache(maxsize=8)
def block_causal_mask(positions: tuple[int, ...], tokens: int, window: int, device: torch.device) -> torch.Tensor:
    """(T * tokens, T * tokens) bool, True = may attend: frame i sees frame j <= i if j is the sink (position 0)
    or within `window` steps. Positions are absolute step indices, so a window recomputed late in a stream
    (sink + last N frames) gets the same visibility as the stream had."""
    pos = torch.tensor(positions, device=device)
    i, j = pos[:, None], pos[None, :]
    frames = (j <= i) & ((j == 0) | (i - j <= window))  # (T, T)
    return frames.repeat_interleave(tokens, 0).repeat_interleave(tokens, 1)


def source_pixels(flow: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(B, 2, T, h, w) flow in latent pixels (camera.embedding.rotation_flow) -> where each pixel's content was,
    (x, y), each (B, T, h, w) in pixel coordinates (pixel centre i = i)."""
    _, _, _, h, w = flow.shape
    ys, xs = torch.meshgrid(torch.arange(h, device=flow.device), torch.arange(w, device=flow.device), indexing="ij")
    flow = flow.float()
    return xs + flow[:, 0], ys + flow[:, 1]


def warp_latent(prev: torch.Tensor, flow: torch.Tensor) -> torch.Tensor:
    """prev (B, C, T, h, w) resampled at each pixel's source (B, 2, T, h, w), the flow in latent pixels (x, y)
    from camera.embedding.rotation_flow; bilinear, the border repeated where the source lies outside the picture."""
    B, C, T, h, w = prev.shape
    frames = prev.transpose(1, 2).reshape(B * T, C, h, w).float()
    x, y = source_pixels(flow)
    # pixel centre i -> (2i + 1) / w - 1, the normalised coordinate of grid_sample with align_corners=False
    gx = ((2.0 * x + 1.0) / w - 1.0).reshape(B * T, h, w)
    gy = ((2.0 * y + 1.0) / h - 1.0).reshape(B * T, h, w)
    out = F.grid_sample(frames, torch.stack([gx, gy], dim=-1), mode="bilinear", padding_mode="border",
                        align_corners=False)  # (B * T, C, h, w)
    return out.reshape(B, T, C, h, w).transpose(1, 2).to(prev.dtype)


GATE_FULL_TURN = 0.035  # of the picture's width per step: about 3.3 degrees per step (20 deg/s) at mini's field of
                        # view (a pure 4-degree step moves the median latent pixel 0.043 of the width)


def turning(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, T, h, w) rotation flow -> (B, 1, T, 1, 1) in [0, 1]: how much the camera turns over the step, the
    picture's median horizontal displacement over GATE_FULL_TURN of its width. The warp gate is scaled by it: the
    warped frame only knows more than the recycled one while the camera turns, and a gate left open on a still or
    walking camera holds the picture where it was, step after step, until it fades (docs/training.md run 9)."""
    B, _, T, h, w = flow.shape
    shift = flow[:, 0].abs().flatten(2).clamp(max=w).median(dim=-1).values  # (B, T): behind-the-camera sources clamped
    return (shift / (GATE_FULL_TURN * w)).clamp(0.0, 1.0).view(B, 1, T, 1, 1)


def seen_before(flow: torch.Tensor) -> torch.Tensor:
    """(B, 2, T, h, w) rotation flow -> (B, 1, T, h, w): 1 where the content's source lies inside the previous picture,
    0 in the strip a turn reveals (where warp_latent can only repeat the border, and the gate stays shut)."""
    _, _, _, h, w = flow.shape
    x, y = source_pixels(flow)
    inside = (x >= -0.5) & (x <= w - 0.5) & (y >= -0.5) & (y <= h - 0.5)
    return inside.unsqueeze(1).to(flow.dtype)


def modulate(x: torch.Tensor, shift: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    return x * (1 + scale) + shift


def norm_fp32(norm: nn.RMSNorm, x: torch.Tensor) -> torch.Tensor:
    """The query/key RMSNorm in float32 whatever the dtype of x or of the module (bf16 cast or autocast)."""
    return F.rms_norm(x.float(), norm.normalized_shape, norm.weight.float(), norm.eps)


class TimestepEmbedding(nn.Module):
    """Diffusion time t in [0, 1] (B,) -> conditioning vector (B, dim): sinusoids, then an MLP."""

    def __init__(self, dim: int, freq_dim: int = 256):
        super().__init__()
        self.freq_dim = freq_dim
        self.mlp = nn.Sequential(nn.Linear(freq_dim, dim), nn.SiLU(), nn.Linear(dim, dim))

    def forward(self, t: torch.Tensor) -> torch.Tensor:
        half = self.freq_dim // 2
        freqs = torch.exp(-math.log(10000.0) * torch.arange(half, device=t.device, dtype=torch.float32) / half)
        args = 1000.0 * t.float()[:, None] * freqs  # scaled as for integer diffusion steps 0..1000
        emb = torch.cat([args.cos(), args.sin()], dim=-1)  # (B, freq_dim)
        return self.mlp(emb.to(self.mlp[0].weight.dtype))


# ---------------------------------------------------------------------------------------------------------------
# KV cache


class KVCache:
    """Per layer, the keys (after RoPE) and values of the sink frame, the last `window` frames and the frame being
    stepped.

    Buffers are preallocated, (B, heads, (2 + window) * tokens, head_dim) each: slot 0 is the sink (frame 0), slots
    1..window+1 a ring over frames 1, 2, ... (frame f >= 1 lives in slot 1 + (f - 1) % (window + 1)). A step first
    writes its frame's keys into its slot, evicting the frame window + 1 back, which it may no longer see; the buffer
    then holds exactly what the frame attends to, and the attention reads it where it is: no copy of the cache per
    step (for apt2-8b on a GPU that copy took three quarters of the attention's time, docs/benchmarks.md). Slots
    fill in order, so the valid part is always a prefix of the buffer, and memory is constant however long the
    stream runs. A step that does not commit (a sampler's trial pass) writes the slot too, but the frame is not
    counted: the slot is the next frame's scratch.

    Writes are in place when no autograd is involved (inference). When the new keys or the buffer need gradients
    (student forcing: gradients flow through the cache into earlier frames), a write builds a new buffer
    out of place with slice_scatter instead, so every step's keys stay in the graph; the size is the same.
    """

    def __init__(self, k: list[torch.Tensor], v: list[torch.Tensor], tokens: int, window: int, steps: int = 0,
                 frame: torch.Tensor | None = None):
        self.k, self.v = k, v
        self.tokens, self.window = tokens, window
        self.steps = steps  # frames committed so far = the absolute step index of the next frame
        # the same count on the cache's device (float64, shape (1,)), advanced in place: the step's RoPE reads it
        # there, so a CUDA graph of the step (world/cuda_graphs.py) replays with the right position every time
        self.frame = torch.full((1,), float(steps), dtype=torch.float64, device=k[0].device) if frame is None else frame

    def valid_tokens(self) -> int:
        """The tokens the next frame attends to, itself included: the sink and up to `window` frames before it."""
        return (1 + min(self.steps, self.window + 1)) * self.tokens

    def full(self) -> bool:
        """From here on each step reads the whole buffer (static shapes): it fills the last empty slot or evicts."""
        return self.steps > self.window

    def slot(self) -> int:
        """The slot the next frame is written to."""
        return 0 if self.steps == 0 else 1 + (self.steps - 1) % (self.window + 1)

    def advance(self) -> None:
        """Count the frame just written (both counters)."""
        self.steps += 1
        self.frame.add_(1)

    def write_and_read(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this frame's k/v (B, heads, tokens, head_dim) of `layer` in its slot; return the keys and values
        the frame attends to, itself included (views of the buffers when nothing needs gradients)."""
        if k.shape[2] != self.tokens:
            raise ValueError(f"the cache holds {self.tokens} tokens per frame, the step has {k.shape[2]}")
        slot = self.slot()
        start, end = slot * self.tokens, (slot + 1) * self.tokens
        for bufs, new in ((self.k, k), (self.v, v)):
            buf, new = bufs[layer], new.to(bufs[layer].dtype)
            if new.requires_grad or buf.requires_grad:
                bufs[layer] = torch.slice_scatter(buf, new, dim=2, start=start, end=end)
            else:
                buf[:, :, start:end] = new
        n = self.valid_tokens()
        return self.k[layer][:, :, :n].to(k.dtype), self.v[layer][:, :, :n].to(v.dtype)

    def clone(self) -> "KVCache":
        """A deep copy (buffers and counter), for rewind and branching."""
        return KVCache([k.clone() for k in self.k], [v.clone() for v in self.v], self.tokens, self.window, self.steps,
                       self.frame.clone())

    def load_(self, other: "KVCache") -> None:
        """Become a copy of `other` (of the same shape) in place: the buffers keep their addresses, which the CUDA
        graphs of the step are bound to (a rewind restores this way)."""
        if [k.shape for k in other.k] != [k.shape for k in self.k]:
            raise ValueError("load_ needs a cache of the same shape")
        for mine, theirs in zip(self.k + self.v, other.k + other.v):
            mine.copy_(theirs)
        self.steps = other.steps
        self.frame.copy_(other.frame)

    def detach(self) -> "KVCache":
        """The same cache cut from the autograd graph (long-video training, between segments); shares storage."""
        return KVCache([k.detach() for k in self.k], [v.detach() for v in self.v], self.tokens, self.window,
                       self.steps, self.frame.clone())

    def nbytes(self) -> int:
        return sum(t.untyped_storage().nbytes() for t in self.k + self.v)


# ---------------------------------------------------------------------------------------------------------------
# Transformer


class SelfAttention(nn.Module):
    def __init__(self, cfg: GeneratorConfig, index: int):
        super().__init__()
        self.index, self.heads, self.backend = index, cfg.heads, cfg.attention_backend
        self.qkv = nn.Linear(cfg.dim, 3 * cfg.dim, bias=False)
        self.q_norm = nn.RMSNorm(cfg.head_dim(), eps=1e-6)
        self.k_norm = nn.RMSNorm(cfg.head_dim(), eps=1e-6)
        self.proj = nn.Linear(cfg.dim, cfg.dim, bias=False)

    def forward(self, x, rope, mask=None, cache: KVCache | None = None):
        B, L, D = x.shape  # (B, L, D) -> (B, L, D)
        q, k, v = self.qkv(x).view(B, L, 3, self.heads, D // self.heads).permute(2, 0, 3, 1, 4)  # (B, H, L, hd)
        q = apply_rope(norm_fp32(self.q_norm, q), *rope).to(v.dtype)
        k = apply_rope(norm_fp32(self.k_norm, k), *rope).to(v.dtype)
        if cache is None:
            out = attention(q, k, v, mask, self.backend)
        else:  # with this frame written, the cache holds exactly what the frame may see: no mask
            k_all, v_all = cache.write_and_read(self.index, k, v)
            out = attention(q, k_all, v_all, None, self.backend)
        return self.proj(out.transpose(1, 2).reshape(B, L, D))


class SwiGLU(nn.Module):
    def __init__(self, dim: int, hidden: int):
        super().__init__()
        self.gate_up = nn.Linear(dim, 2 * hidden, bias=False)
        self.down = nn.Linear(hidden, dim, bias=False)

    def forward(self, x):
        gate, up = self.gate_up(x).chunk(2, dim=-1)
        return self.down(F.silu(gate) * up)


class Block(nn.Module):
    """Pre-norm transformer block with adaLN shift/scale/gate from the conditioning vector."""

    def __init__(self, cfg: GeneratorConfig, index: int):
        super().__init__()
        self.norm1 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.attn = SelfAttention(cfg, index)
        self.norm2 = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.mlp = SwiGLU(cfg.dim, cfg.mlp_hidden())
        self.modulation = nn.Linear(cfg.dim, 6 * cfg.dim)

    def forward(self, x, c, rope, mask=None, cache: KVCache | None = None):
        # x (B, L, D), c (B, D)
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(c))[:, None].chunk(6, dim=-1)
        x = x + gate1 * self.attn(modulate(self.norm1(x), shift1, scale1), rope, mask, cache)
        return x + gate2 * self.mlp(modulate(self.norm2(x), shift2, scale2))


class Backbone(nn.Module):
    """Input embedding, time conditioning and the blocks: shared by the generator and the discriminator.

    `depth` below cfg.depth builds only the first blocks (a discriminator whose last query sits earlier).
    """

    def __init__(self, cfg: GeneratorConfig, depth: int | None = None):
        super().__init__()
        self.config = cfg
        C, p = cfg.latent_channels, cfg.patch
        self.latent_in = nn.Linear(2 * C * p * p, cfg.dim)  # noise (or frames) and the recycled previous frame
        self.camera_in = nn.Linear(cfg.camera_channels * p * p, cfg.dim)  # random init: the camera must count
        if cfg.warp:  # the recycled frame carried along by the camera's rotation, and the flow that moved it;
            # zero-initialised, so a model grown from one without (checkpoint.GROWABLE) starts as that model
            self.warped_in = nn.Linear((C + 2) * p * p, cfg.dim)
            nn.init.zeros_(self.warped_in.weight)
            nn.init.zeros_(self.warped_in.bias)
        self.time_embed = TimestepEmbedding(cfg.dim)
        self.blocks = nn.ModuleList(Block(cfg, i) for i in range(depth or cfg.depth))
        self.grad_checkpointing = False  # recompute each block in backward (large models)

    def embed(self, noisy, prev, cam) -> torch.Tensor:
        """(B, C, T, h, w) x2 and (B, camera_inputs, T, h, w) -> tokens (B, T * tokens, D)."""
        cfg, dtype = self.config, self.latent_in.weight.dtype
        if cam.shape[1] != cfg.camera_inputs():
            raise ValueError(f"the camera has {cam.shape[1]} channels, the model takes {cfg.camera_inputs()}")
        rays, flow = cam[:, :cfg.camera_channels], cam[:, cfg.camera_channels:]
        x = self.latent_in(patchify(torch.cat([noisy, prev], dim=1).to(dtype), cfg.patch))
        x = x + self.camera_in(patchify(rays.to(dtype), cfg.patch))
        if cfg.warp:
            warped = warp_latent(prev, flow)
            x = x + self.warped_in(patchify(torch.cat([warped, flow.to(warped.dtype)], dim=1).to(dtype), cfg.patch))
        return x

    def rope(self, frames: torch.Tensor, h: int, w: int):
        p = self.config.patch
        positions = token_positions(frames, (h // p, w // p))
        return rope_tables(positions, self.config.head_dim(), self.config.rope_theta)

    def forward(self, noisy, prev, cam, t, attention="block_causal", positions=None, taps=()):
        """Returns the last hidden state (B, L, D), the conditioning (B, D) and the hidden states after the
        blocks numbered in `taps` (1-based depths)."""
        if attention not in ("block_causal", "full"):
            raise ValueError(f"attention must be 'block_causal' or 'full', got {attention!r}")
        _, _, T, h, w = noisy.shape
        positions = tuple(range(T)) if positions is None else tuple(int(i) for i in positions)
        if len(positions) != T:
            raise ValueError(f"{len(positions)} positions for {T} frames")
        x, c = self.embed(noisy, prev, cam), self.time_embed(t)
        rope = self.rope(torch.tensor(positions, device=x.device), h, w)
        tokens = x.shape[1] // T
        mask = None if attention == "full" else block_causal_mask(positions, tokens, self.config.window, x.device)
        kept = []
        for depth, block in enumerate(self.blocks, start=1):
            if self.grad_checkpointing and torch.is_grad_enabled():
                x = checkpoint(block, x, c, rope, mask, use_reentrant=False)
            else:
                x = block(x, c, rope, mask)
            if depth in taps:
                kept.append(x)
        return x, c, kept

    def step(self, noisy, prev, cam, t, cache: KVCache, commit: bool = True):
        """One latent frame (B, C, 1, h, w) against the cache -> hidden state (B, tokens, D), conditioning (B, D)."""
        _, _, T, h, w = noisy.shape
        if T != 1:
            raise ValueError(f"step takes one latent frame, got {T}")
        x, c = self.embed(noisy, prev, cam), self.time_embed(t)
        rope = self.rope(cache.frame, h, w)
        for block in self.blocks:
            x = block(x, c, rope, cache=cache)
        if commit:
            cache.advance()
        return x, c


class FinalLayer(nn.Module):
    """adaLN norm and a linear map to the velocity of each patch; zero-initialised, so training starts at v = 0."""

    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.norm = nn.LayerNorm(cfg.dim, elementwise_affine=False, eps=1e-6)
        self.modulation = nn.Linear(cfg.dim, 2 * cfg.dim)
        self.linear = nn.Linear(cfg.dim, cfg.latent_channels * cfg.patch ** 2)
        nn.init.zeros_(self.linear.weight)
        nn.init.zeros_(self.linear.bias)

    def forward(self, x, c):
        shift, scale = self.modulation(F.silu(c))[:, None].chunk(2, dim=-1)
        return self.linear(modulate(self.norm(x), shift, scale))


class Generator(nn.Module):
    def __init__(self, cfg: GeneratorConfig):
        super().__init__()
        self.config = cfg
        self.backbone = Backbone(cfg)
        self.head = FinalLayer(cfg)
        if cfg.warp_gate:  # zero-initialised: a model grown from one without computes what it did
            self.gate = nn.Linear(cfg.dim, cfg.latent_channels * cfg.patch ** 2)
            nn.init.zeros_(self.gate.weight)
            nn.init.zeros_(self.gate.bias)

    def _velocity(self, x, c, noisy, prev, cam, t) -> torch.Tensor:
        """The last hidden state (B, L, D) -> v (B, C, T, h, w).

        With warp_gate, the clean frame the head implies, x0 = noisy - t v, is pulled towards the recycled frame
        carried along by the camera's rotation by a learnt gate a in [0, 1] (per latent pixel and channel, scaled by
        `turning`), in proportion to t so that v stays finite as t -> 0: x0' = x0 + t a (warped - x0), that is
        v' = v - a (warped - x0). Where the camera turns, the warped frame is most of the answer; the gate passes it
        through instead of the blocks having to redraw it (a pure warp beats the shipped model's blocks by 2.4 dB at
        1 s, docs/training.md run 9)."""
        _, _, T, h, w = noisy.shape
        p, grid = self.config.patch, (h // self.config.patch, w // self.config.patch)
        v = unpatchify(self.head(x, c), T, grid, p)
        if self.config.warp_gate:
            # from unit-scale features; clamped so that x0' lies between the two frames, never beyond either
            a = unpatchify(self.gate(self.head.norm(x)), T, grid, p).float().clamp(0.0, 1.0)
            flow = cam[:, self.config.camera_channels:].float()   # (B, 2, T, h, w) latent pixels
            a = a * turning(flow) * seen_before(flow)
            warped = warp_latent(prev, flow).float()
            x0 = noisy.float() - t.float().view(-1, 1, 1, 1, 1) * v.float()
            v = v.float() - a * (warped - x0)
        return v.to(noisy.dtype)

    def forward(self, noisy, prev, cam, t, attention: str = "block_causal", positions=None) -> torch.Tensor:
        """noisy/prev (B, C, T, h, w), cam (B, camera_inputs, T, h, w), t (B,) -> v (B, C, T, h, w).

        attention: "block_causal" (sink + window) or "full" (bidirectional over the clip). positions: the absolute
        step index of each frame (default 0..T-1); the no-cache baseline recomputes a window late in a stream as
        forward(sink + last frames, positions=[0, f - N, ..., f]) and keeps the last frame's v.
        """
        x, c, _ = self.backbone(noisy, prev, cam, t, attention, positions)
        return self._velocity(x, c, noisy, prev, cam, t)

    def new_cache(self, batch: int, device=None, dtype=None) -> KVCache:
        """An empty cache for `batch` streams; dtype is the dtype the keys are stored in (that of the compute)."""
        cfg = self.config
        shape = (batch, cfg.heads, (2 + cfg.window) * cfg.tokens_per_frame(), cfg.head_dim())
        k = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.depth)]
        v = [torch.zeros(shape, device=device, dtype=dtype) for _ in range(cfg.depth)]
        return KVCache(k, v, cfg.tokens_per_frame(), cfg.window)

    def step(self, noisy, prev, cam, t, cache: KVCache, commit: bool = True) -> torch.Tensor:
        """One latent frame: noisy/prev (B, C, 1, h, w), cam (B, camera_inputs, 1, h, w), t (B,) -> v (B, C, 1, h, w).

        commit=True stores this frame's keys/values as frame `cache.steps` and advances the cache; commit=False
        attends to the cache but leaves its frames as they are (multi-step samplers refresh it afterwards with a clean
        pass; the trial's keys sit in the next frame's slot, which that pass overwrites).
        """
        x, c = self.backbone.step(noisy, prev, cam, t, cache, commit)
        return self._velocity(x, c, noisy, prev, cam, t)

    def set_attention_backend(self, backend: str) -> None:
        """Switch every block to "auto" | "flash" | "sdpa" (e.g. to compare them in a benchmark)."""
        for block in self.backbone.blocks:
            block.attn.backend = backend
        self.config = self.backbone.config = replace(self.config, attention_backend=backend)
