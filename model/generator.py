"""The APT2 generator: a block-causal transformer over patchified latent frames, with a KV cache for streaming."""
from __future__ import annotations

from dataclasses import asdict, dataclass


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

    def tokens_per_frame(self) -> int:
        w, h = self.latent_size
        return (w // self.patch) * (h // self.patch)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d: dict) -> "GeneratorConfig":
        d = dict(d)
        for key in ("latent_size", "disc_layers"):
            if key in d:
                d[key] = tuple(d[key])
        return GeneratorConfig(**d)


GENERATOR_PRESETS = {
    "tiny": GeneratorConfig(latent_size=(8, 6), dim=64, depth=2, heads=2, window=3, disc_layers=(1, 2)),
    "mini": GeneratorConfig(latent_size=(32, 18), dim=256, depth=8, heads=4, window=30),
    "apt2-8b": GeneratorConfig(latent_size=(92, 52), dim=3584, depth=36, heads=28, window=30),
}
