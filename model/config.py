"""Model configurations: the frame size, the VAE and the generator, checked to agree, and the named presets.

`tiny` is for tests, `mini` is the shipped default that runs in real time on two CPU cores, `apt2-8b` is the paper's
size for GPU benchmarks. A config travels inside every checkpoint as JSON (model/checkpoint.py).
"""
from __future__ import annotations

import copy
import dataclasses
import json
import math
from dataclasses import dataclass, replace

import torch

from camera.errors import InputError, is_number, parse_json
from model.generator import GENERATOR_PRESETS, GeneratorConfig
from model.vae import VAEConfig

DTYPES = {"bfloat16": torch.bfloat16, "float32": torch.float32}
RAY_CHANNELS = 6  # per video frame: ray origin (3) and direction (3), see DESIGN "Camera embedding"


@dataclass
class ModelConfig:
    name: str
    width: int                     # native frame size in pixels
    height: int
    vae: VAEConfig
    generator: GeneratorConfig
    dtype: str = "bfloat16"        # for CPU inference: "bfloat16" or "float32"

    def __post_init__(self):
        self.check()

    def latent_size(self) -> tuple[int, int]:
        f = self.vae.spatial_factor
        return self.width // f, self.height // f

    def torch_dtype(self) -> torch.dtype:
        return DTYPES[self.dtype]

    def check(self) -> None:
        """Raises InputError naming the field unless the frame size, the VAE and the generator agree."""
        source, f, gen = f"model config {self.name!r}", self.vae.spatial_factor, self.generator
        for field, kind in (("name", str), ("width", int), ("height", int), ("dtype", str)):
            if not isinstance(getattr(self, field), kind):
                raise InputError(source, field, f"must be a {kind.__name__}, got {getattr(self, field)!r}")
        if self.dtype not in DTYPES:
            raise InputError(source, "dtype", f"must be one of {', '.join(DTYPES)}, got {self.dtype!r}")
        for field, size in (("width", self.width), ("height", self.height)):
            if size <= 0 or size % f:
                raise InputError(source, field, f"must be a positive multiple of the VAE's {f}, got {size}")
        if tuple(gen.latent_size) != self.latent_size():
            raise InputError(source, "generator.latent_size", f"must be {self.latent_size()} "
                             f"(the frame size {self.width}x{self.height} / {f}), got {tuple(gen.latent_size)}")
        if gen.latent_channels != self.vae.latent_channels:
            raise InputError(source, "generator.latent_channels",
                             f"must equal vae.latent_channels ({self.vae.latent_channels}), got {gen.latent_channels}")
        w, h = self.latent_size()
        if w % gen.patch or h % gen.patch:
            raise InputError(source, "generator.patch", f"the latent size {w}x{h} is not divisible by {gen.patch}")
        rays = RAY_CHANNELS * self.vae.temporal_factor
        if gen.camera_channels != rays:
            raise InputError(source, "generator.camera_channels",
                             f"must be {rays} ({RAY_CHANNELS} per video frame of a step), got {gen.camera_channels}")

    def to_dict(self) -> dict:
        return {"name": self.name, "width": self.width, "height": self.height, "vae": self.vae.to_dict(),
                "generator": self.generator.to_dict(), "dtype": self.dtype}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @staticmethod
    def from_dict(d: dict, source: str = "model config") -> ModelConfig:
        """Builds and checks a config; any problem is an InputError naming `source` and the dotted field."""
        _expect_fields(d, ModelConfig, "config", source)
        _expect_fields(d["vae"], VAEConfig, "config.vae", source)
        _expect_fields(d["generator"], GeneratorConfig, "config.generator", source)
        _check_values(d["vae"], VAEConfig, "config.vae", source)
        _check_values(d["generator"], GeneratorConfig, "config.generator", source)
        vae = _build(VAEConfig.from_dict, d["vae"], "config.vae", source)
        generator = _build(GeneratorConfig.from_dict, d["generator"], "config.generator", source)
        try:
            return ModelConfig(**{**d, "vae": vae, "generator": generator})
        except InputError as e:  # from check(): attribute it to the file
            raise InputError(source, f"config.{e.field}", e.problem) from None
        except TypeError as e:  # a value of the wrong type inside a sub-config, e.g. a string for a number
            raise InputError(source, "config", str(e)) from None

    @staticmethod
    def from_json(text: str, source: str = "model config") -> ModelConfig:
        return ModelConfig.from_dict(parse_json(text, source, "config"), source)


def _expect_fields(d, cls, field: str, source: str) -> None:
    """No field unknown to the dataclass `cls`, and every field without a default present. (A field added to a config
    later, with a default, leaves older checkpoints loadable; if it changes the architecture the tensor shapes say so.)
    """
    if not isinstance(d, dict):
        raise InputError(source, field, f"must be an object, got {type(d).__name__}")
    fields = dataclasses.fields(cls)
    for key in d:
        if key not in [f.name for f in fields]:
            raise InputError(source, f"{field}.{key}", "unknown field")
    for f in fields:
        if f.name not in d and f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING:
            raise InputError(source, f"{field}.{f.name}", "missing")


SIZE_LIMIT = 65536  # a bound on every count and size in a config (the 8B model's largest, its width, is 3456)
FLOAT_LIMITS = {"mlp_ratio": 64.0}  # the MLP's width over the model's (4 in every preset); 1e300 overflowed torch


def _check_values(d: dict, cls, field: str, source: str) -> None:
    """Each value of the kind of its field's default, in range: whole numbers from 1 to SIZE_LIMIT (lists of them,
    block counts from 0, disc_layers up to depth), positive finite floats, booleans, and a known attention backend;
    and heads that divide the width. A checkpoint's config is read from its metadata, which anyone can edit."""
    from model.attention import BACKENDS

    def whole(v, lo):
        return isinstance(v, int) and not isinstance(v, bool) and lo <= v <= SIZE_LIMIT

    for f in dataclasses.fields(cls):
        if f.name not in d:
            continue
        v, default = d[f.name], f.default
        if isinstance(default, bool):
            ok, want = isinstance(v, bool), "true or false"
        elif isinstance(default, int):
            ok, want = whole(v, 1), f"a whole number from 1 to {SIZE_LIMIT}"
        elif isinstance(default, float):
            limit = FLOAT_LIMITS.get(f.name, math.inf)
            ok = is_number(v) and 0 < v <= limit
            want = "a positive number" + (f" up to {limit:g}" if limit < math.inf else "")
        elif f.name == "attention_backend":
            ok, want = v in BACKENDS, f"one of {', '.join(BACKENDS)}"
        elif isinstance(default, str):
            ok, want = isinstance(v, str), "a string"
        elif f.name == "disc_layers":
            depth = d.get("depth", 0)
            ok = isinstance(v, list) and all(whole(x, 1) and x <= depth for x in v)
            want = f"a list of depths from 1 to depth ({depth})"
        else:  # per-scale channels, kernels (from 1) and block counts (from 0)
            lo = 0 if f.name.endswith("_blocks") else 1
            ok = isinstance(v, list) and len(v) > 0 and all(whole(x, lo) for x in v)
            want = f"a list of whole numbers from {lo} to {SIZE_LIMIT}"
        if not ok:
            raise InputError(source, f"{field}.{f.name}", f"must be {want}, got {v!r}")
    if "heads" in d and "dim" in d and d["dim"] % d["heads"]:
        raise InputError(source, f"{field}.heads", f"must divide dim ({d['dim']}), got {d['heads']}")


def _build(from_dict, d: dict, field: str, source: str):
    try:
        return from_dict(d)
    except (TypeError, ValueError) as e:
        raise InputError(source, field, str(e)) from None


def _generator(preset: str, vae: VAEConfig, width: int, height: int, **changes) -> GeneratorConfig:
    """A generator preset with the latent channels and grid that the VAE and the frame size imply."""
    f = vae.spatial_factor
    return replace(GENERATOR_PRESETS[preset], latent_channels=vae.latent_channels,
                   latent_size=(width // f, height // f), **changes)


def _tiny() -> ModelConfig:
    vae = VAEConfig(latent_channels=4, enc_channels=(8, 16, 16, 32), enc_blocks=(1, 1, 1, 1),
                    enc_time_kernels=(3, 3, 3, 3), dec_channels=(8, 8, 16, 16), dec_blocks=(1, 1, 1, 1),
                    dec_time_kernels=(3, 3, 3, 3))
    return ModelConfig("tiny", 64, 32, vae, _generator("tiny", vae, 64, 32, patch=1, window=3), "float32")


def _mini() -> ModelConfig:
    # 128x72, patch 1: the same 16x9 = 144 tokens per latent frame as 256x144 at patch 2, so the generator costs the
    # same, while the VAE, the data and the streaming decode cost a quarter (CALIBRATION.md: the size that trains well
    # on this CPU; the presenter upscales). The decode is then about 6 ms of a ~36 ms step, which is what lets the one-
    # step generator beat a 4-step sampler by 4x (docs/benchmarks.md). The decoder keeps its wide layers and temporal
    # kernels at the two lowest resolutions; the encoder (data preparation, reset, VAE training) has 1.7x its
    # parameters; its widest scale is 160 channels so that the whole model (VAE 6.9M + generator 7.5M parameters)
    # ships in bf16 under 30 MiB.
    vae = VAEConfig(latent_channels=16, enc_channels=(32, 64, 128, 160), enc_blocks=(1, 1, 1, 2),
                    enc_time_kernels=(1, 1, 3, 3), dec_channels=(16, 32, 64, 128), dec_blocks=(0, 1, 1, 2),
                    dec_time_kernels=(1, 1, 3, 3))
    return ModelConfig("mini", 128, 72, vae, _generator("mini", vae, 128, 72), "bfloat16")


def _apt2_8b() -> ModelConfig:
    vae = VAEConfig()  # Seaweed-like: encoder 128/256/512/512 x 3 blocks, lighter decoder 64/128/256/512 x 2
    return ModelConfig("apt2-8b", 736, 416, vae, _generator("apt2-8b", vae, 736, 416), "bfloat16")


CONFIGS: dict[str, ModelConfig] = {c.name: c for c in (_tiny(), _mini(), _apt2_8b())}


def get_config(name: str, source: str = "model config") -> ModelConfig:
    """A fresh copy of a named config; an unknown name is an InputError listing the known ones."""
    if name not in CONFIGS:
        raise InputError(source, None, f"unknown config {name!r}; known: {', '.join(CONFIGS)}")
    return copy.deepcopy(CONFIGS[name])
