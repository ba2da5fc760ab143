"""The causal 3D VAE: 8x in space, 4x in time, the first frame encoded alone, and a streaming decoder.

A clip of 1 + 4k frames becomes 1 + k latent frames: latent 0 is the first frame alone, latent i >= 1 covers frames
4i-3 .. 4i. Every convolution is causal in time (padded only on the past side, the first frame replicated), so a
latent frame depends only on the frames up to its own, and a decoded frame only on the latents up to its own.

The decoder is lighter than the encoder (APT2.md: fewer blocks and channels) and streams: `decode_step` takes one
latent frame and returns its four video frames (one for latent 0), keeping each causal conv's last few input frames
in a `DecoderCache` of constant size. `decode` runs the same code on the whole clip with a fresh cache, so the two
agree to float tolerance.

Channel lists go from the full resolution down to the latent resolution (as the paper writes "64/128/256/512").
The time compression happens at the highest resolutions (encoder's first downsamplers, decoder's last upsamplers),
where it saves the most work, and the decoder puts its wide layers at low resolution, where they are cheap.
"""
from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F


_PER_SCALE = ("enc_channels", "enc_blocks", "enc_time_kernels", "dec_channels", "dec_blocks", "dec_time_kernels")


@dataclass
class VAEConfig:
    image_channels: int = 3
    latent_channels: int = 16
    enc_channels: tuple[int, ...] = (128, 256, 512, 512)  # per scale, full resolution first
    enc_blocks: tuple[int, ...] = (3, 3, 3, 3)            # residual blocks per scale
    enc_time_kernels: tuple[int, ...] = (3, 3, 3, 3)      # temporal kernel of the blocks' convs, per scale
    dec_channels: tuple[int, ...] = (64, 128, 256, 512)
    dec_blocks: tuple[int, ...] = (2, 2, 2, 2)
    dec_time_kernels: tuple[int, ...] = (3, 3, 3, 3)
    temporal_factor: int = 4
    spatial_factor: int = 8

    def __post_init__(self):
        scales = int(math.log2(self.spatial_factor)) + 1
        if 2 ** (scales - 1) != self.spatial_factor:
            raise ValueError(f"spatial_factor must be a power of 2, got {self.spatial_factor}")
        if self.temporal_factor not in (1, 2, 4, 8) or self.temporal_factor > self.spatial_factor:
            raise ValueError(f"temporal_factor must be a power of 2 up to spatial_factor, got {self.temporal_factor}")
        for name in _PER_SCALE:
            if len(getattr(self, name)) != scales:
                raise ValueError(f"{name} needs {scales} entries (one per scale), got {getattr(self, name)}")

    def time_stages(self) -> int:
        """How many of the 2x resamplers also resample time (the ones nearest the full resolution)."""
        return int(math.log2(self.temporal_factor))

    def latent_frames(self, frames: int) -> int:
        """1 + 4k video frames -> 1 + k latent frames."""
        if frames < 1 or (frames - 1) % self.temporal_factor:
            raise ValueError(f"a clip needs 1 + {self.temporal_factor}k frames, got {frames}")
        return 1 + (frames - 1) // self.temporal_factor

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> VAEConfig:
        d = dict(d)
        for key in _PER_SCALE:
            if key in d:
                d[key] = tuple(d[key])
        return VAEConfig(**d)


# ---------------------------------------------------------------------------------------------------------------
# Building blocks


class DecoderCache:
    """The decoder's streaming state: each causal conv's last (kernel_t - 1) input frames, and the step count.

    Its size is fixed after the first step (a few frames per conv), however long the stream runs.
    """

    def __init__(self):
        self.frames: dict[nn.Module, torch.Tensor] = {}
        self.step = 0  # latent frames decoded so far

    def clone(self) -> DecoderCache:
        """A copy for rewind and branching (the modules are keys, the frames are copied)."""
        other = DecoderCache()
        other.frames = {module: t.clone() for module, t in self.frames.items()}
        other.step = self.step
        return other

    def keep(self, module: nn.Module, frames: torch.Tensor) -> None:
        """Store a conv's last input frames: copied into the tensor already there, so that after the first step the
        state lives at fixed addresses (a CUDA graph of the decode step is bound to them); a copy in any case, since
        a view would keep all of the conv's input alive."""
        kept = self.frames.get(module)
        if kept is not None and kept.shape == frames.shape and not torch.is_grad_enabled():
            kept.copy_(frames)
        else:
            self.frames[module] = frames.clone()

    def load_(self, other: DecoderCache) -> None:
        """Become a copy of `other` in place where the tensors match (a rewind keeps the addresses)."""
        if self.frames.keys() == other.frames.keys() and all(
                self.frames[m].shape == t.shape for m, t in other.frames.items()):
            for module, t in other.frames.items():
                self.frames[module].copy_(t)
        else:
            self.frames = {module: t.clone() for module, t in other.frames.items()}
        self.step = other.step

    def nbytes(self) -> int:
        return sum(t.untyped_storage().nbytes() for t in self.frames.values())


class CausalConv3d(nn.Conv3d):
    """A 3D conv that sees only the present and the past: time is padded on the past side only.

    The padding is the first frame replicated, or, when streaming, the last (kernel_t - 1) input frames of the
    previous call, read from and written to `cache`. Streaming needs temporal stride 1 (the decoder); the encoder
    passes no cache.
    """

    def __init__(self, cin: int, cout: int, kernel: tuple[int, int, int], stride: tuple[int, int, int] = (1, 1, 1)):
        super().__init__(cin, cout, kernel, stride, padding=(0, kernel[1] // 2, kernel[2] // 2))

    def forward(self, x: torch.Tensor, cache: DecoderCache | None = None) -> torch.Tensor:
        pad = self.kernel_size[0] - 1  # x (B, cin, T, H, W) -> (B, cout, T', H', W')
        if pad:
            past = cache.frames.get(self) if cache is not None else None
            if past is None:
                past = x[:, :, :1].expand(-1, -1, pad, -1, -1)
            x = torch.cat([past, x], dim=2)
            if cache is not None:
                cache.keep(self, x[:, :, -pad:])
        return super().forward(x)


class FrameGroupNorm(nn.GroupNorm):
    """GroupNorm with statistics per frame (over the frame's pixels and a group of channels), never across time, so
    it stays causal. About 8 channels per group, at most 32 groups. (A per-pixel RMS norm over channels, the other
    causal choice, was 5x slower in bf16 on the CPU at the full resolution's 16 channels.)"""

    def __init__(self, channels: int):
        super().__init__(min(32, max(1, channels // 8)), channels, eps=1e-6)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        B, C, T, H, W = x.shape  # frames folded into the batch: a free view in channels-last-3d memory
        y = super().forward(x.transpose(1, 2).reshape(B * T, C, H, W))
        return y.reshape(B, T, C, H, W).transpose(1, 2)


class ResBlock(nn.Module):
    def __init__(self, channels: int, time_kernel: int):
        super().__init__()
        self.norm1 = FrameGroupNorm(channels)
        self.conv1 = CausalConv3d(channels, channels, (time_kernel, 3, 3))
        self.norm2 = FrameGroupNorm(channels)
        self.conv2 = CausalConv3d(channels, channels, (time_kernel, 3, 3))

    def forward(self, x: torch.Tensor, cache: DecoderCache | None = None) -> torch.Tensor:
        h = self.conv1(F.silu(self.norm1(x)), cache)
        return x + self.conv2(F.silu(self.norm2(h)), cache)


class Downsample(nn.Module):
    """2x in space (and in time if `time`) by a strided causal conv; in time, out frame t sees in frames 2t-2 .. 2t,
    so out frame 0 is in frame 0 alone and 1 + 2k frames become 1 + k."""

    def __init__(self, cin: int, cout: int, time: bool):
        super().__init__()
        self.conv = CausalConv3d(cin, cout, (3 if time else 1, 3, 3), (2 if time else 1, 2, 2))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.conv(x)


class Upsample(nn.Module):
    """2x in space (and in time if `time`) by a causal conv to r = 4 (or 8) times the channels, then depth-to-space.

    In time each frame becomes two; the very first output frame is dropped, so 1 + k frames become 1 + 2k and the
    first latent frame still yields exactly one frame. The conv starts with the r sub-pixel weights equal (ICNR), so
    at initialisation it is nearest-neighbour upsampling followed by a conv: no checkerboard.
    """

    def __init__(self, cin: int, cout: int, time: bool):
        super().__init__()
        self.st = 2 if time else 1
        self.cout = cout
        self.conv = CausalConv3d(cin, cout * self.st * 4, (1, 3, 3))  # time is mixed by the blocks' convs
        with torch.no_grad():  # sub-pixel index is the fastest-varying part of the output channel (see forward)
            for param in (self.conv.weight, self.conv.bias):
                param.copy_(param[:: self.st * 4].repeat_interleave(self.st * 4, dim=0))

    def forward(self, x: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        B, _, T, h, w = x.shape  # (B, cin, T, h, w) -> (B, cout, T * st, 2h, 2w), minus frame 0 at step 0
        y = self.conv(x, cache).reshape(B, self.cout, self.st, 2, 2, T, h, w)
        y = y.permute(0, 5, 2, 6, 3, 7, 4, 1)  # (B, T, st, h, dy, w, dx, cout): channels-last order, one copy below
        y = y.reshape(B, T * self.st, 2 * h, 2 * w, self.cout).permute(0, 4, 1, 2, 3)
        if self.st == 2 and cache.step == 0:
            y = y[:, :, 1:]
        return y


# ---------------------------------------------------------------------------------------------------------------
# Encoder and decoder


class Encoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, kt = cfg.enc_channels, cfg.enc_time_kernels
        self.conv_in = CausalConv3d(cfg.image_channels, ch[0], (kt[0], 3, 3))
        self.scales = nn.ModuleList()
        for i in range(len(ch)):
            blocks = [ResBlock(ch[i], kt[i]) for _ in range(cfg.enc_blocks[i])]
            if i + 1 < len(ch):
                blocks.append(Downsample(ch[i], ch[i + 1], time=i < cfg.time_stages()))
            self.scales.append(nn.Sequential(*blocks))
        self.norm_out = FrameGroupNorm(ch[-1])
        self.conv_out = CausalConv3d(ch[-1], 2 * cfg.latent_channels, (kt[-1], 3, 3))

    def forward(self, video: torch.Tensor) -> torch.Tensor:
        # (B, 3, 1 + 4k, H, W) -> (B, 2C, 1 + k, H/8, W/8)
        x = self.conv_in(video.contiguous(memory_format=torch.channels_last_3d))
        for scale in self.scales:
            x = scale(x)
        return self.conv_out(F.silu(self.norm_out(x)))


class Decoder(nn.Module):
    def __init__(self, cfg: VAEConfig):
        super().__init__()
        ch, kt = cfg.dec_channels, cfg.dec_time_kernels
        self.conv_in = CausalConv3d(cfg.latent_channels, ch[-1], (kt[-1], 3, 3))
        self.blocks = nn.ModuleList()  # scale by scale from the latent resolution up
        self.upsamplers = nn.ModuleList()
        for i in reversed(range(len(ch))):
            self.blocks.append(nn.ModuleList(ResBlock(ch[i], kt[i]) for _ in range(cfg.dec_blocks[i])))
            if i > 0:
                self.upsamplers.append(Upsample(ch[i], ch[i - 1], time=i - 1 < cfg.time_stages()))
        self.norm_out = FrameGroupNorm(ch[0])
        self.conv_out = CausalConv3d(ch[0], cfg.image_channels, (kt[0], 3, 3))

    def forward(self, latent: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        # (B, C, n, h, w) -> (B, 3, 4n, 8h, 8w), or (B, 3, 1 + 4(n-1), 8h, 8w) when the cache is fresh (step 0)
        x = self.conv_in(latent.contiguous(memory_format=torch.channels_last_3d), cache)
        for i, blocks in enumerate(self.blocks):
            for block in blocks:
                x = block(x, cache)
            if i < len(self.upsamplers):
                x = self.upsamplers[i](x, cache)
        return self.conv_out(F.silu(self.norm_out(x)), cache)


class VAE(nn.Module):
    def __init__(self, config: VAEConfig):
        super().__init__()
        self.config = config
        self.encoder = Encoder(config)
        self.decoder = Decoder(config)

    def encode(self, video: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """video (B, 3, 1 + 4k, H, W) in [-1, 1] -> mean, logvar, each (B, C, 1 + k, H/8, W/8)."""
        _, _, T, H, W = video.shape
        self.config.latent_frames(T)
        f = self.config.spatial_factor
        if H % f or W % f:
            raise ValueError(f"frame size {W}x{H} is not divisible by {f}")
        mean, logvar = self.encoder(video.to(self.encoder.conv_in.weight.dtype)).chunk(2, dim=1)
        return mean.contiguous(), logvar.clamp(-30.0, 20.0).contiguous()

    def encode_first(self, image: torch.Tensor) -> torch.Tensor:
        """A first frame alone (B, 3, H, W) in [-1, 1] -> its latent mean (B, C, 1, H/8, W/8): deterministic."""
        return self.encode(image[:, :, None])[0]

    def decode(self, latent: torch.Tensor) -> torch.Tensor:
        """latent (B, C, 1 + k, h, w) -> video (B, 3, 1 + 4k, 8h, 8w), in the module's dtype."""
        return self.decoder(latent.to(self.decoder.conv_in.weight.dtype), DecoderCache()).contiguous()

    def decoder_cache(self) -> DecoderCache:
        """A fresh streaming state; the first `decode_step` with it must get latent frame 0."""
        return DecoderCache()

    def decode_step(self, latent_frame: torch.Tensor, cache: DecoderCache) -> torch.Tensor:
        """The next latent frame (B, C, 1, h, w) -> its frames (B, 3, 4, 8h, 8w); (B, 3, 1, ...) for latent frame 0.

        The frames streamed this way, concatenated, equal `decode` of the whole latent clip.
        """
        frames = self.decoder(latent_frame.to(self.decoder.conv_in.weight.dtype), cache).contiguous()
        cache.step += latent_frame.shape[2]
        return frames


def sample_latent(mean: torch.Tensor, logvar: torch.Tensor, eps: torch.Tensor) -> torch.Tensor:
    """The reparameterised sample mean + sigma * eps, eps ~ N(0, 1) of mean's shape (the training stages draw it
    from their per-sample generators): differentiable in mean and logvar."""
    return mean + torch.exp(0.5 * logvar) * eps


def from_uint8(frames: np.ndarray | torch.Tensor) -> torch.Tensor:
    """(..., T, H, W, 3) uint8 -> (..., 3, T, H, W) float32 in [-1, 1]; e.g. (T, H, W, 3) -> (3, T, H, W)."""
    x = torch.as_tensor(frames)
    if x.dtype != torch.uint8:
        raise ValueError(f"frames must be uint8, got {x.dtype}")
    return (x.float() / 127.5 - 1.0).movedim(-1, -4).contiguous()


def to_uint8(video: torch.Tensor) -> np.ndarray:
    """(..., 3, T, H, W) float in [-1, 1] -> (..., T, H, W, 3) uint8, rounded to the nearest level, clipped."""
    x = ((video.detach().float().clamp(-1.0, 1.0) + 1.0) * 127.5).round()
    return x.to(torch.uint8).movedim(-4, -1).contiguous().cpu().numpy()
