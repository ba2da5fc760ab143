"""The generated world: the APT2 generator streams one latent frame per step; the VAE decodes it into four frames.

One `step` is one generator forward (x_t = z_t - v(z_t, x_{t-1}, camera, t = 1)) plus one streaming decode, exactly
as DESIGN section 3 describes. The noise of step t is drawn from (seed, t) by its own torch.Generator, never from a
global random state, so a replay of the same level, seed and poses reproduces every frame on the same device.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
import torch

from camera.embedding import CameraScaling, camera_embedding
from camera.errors import InputError
from camera.pose import Pose, at_rest
from model.checkpoint import (LoadedCheckpoint, checkpoint_sha256, default_checkpoint_path, load_checkpoint,
                              warn_if_untrained)
from model.config import ModelConfig, get_config
from model.generator import Generator, KVCache
from model.vae import VAE, DecoderCache, from_uint8, to_uint8
from world.base import FRAMES_PER_STEP
from world.cuda_graphs import StreamGraphs


def pick_device(device: str = "auto") -> torch.device:
    if device == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise InputError("command line", "--device", "cuda was asked for but no CUDA GPU is available")
    if device not in ("cpu", "cuda"):
        raise InputError("command line", "--device", f"must be auto, cpu or cuda, got {device!r}")
    return torch.device(device)


GiB = 2**30


def memory_needed(config: ModelConfig, dtype: torch.dtype) -> tuple[int, int]:
    """Bytes a stream of `config` holds in `dtype`: (weights, KV cache), the cache preallocated for its whole window.
    The weights are counted on the meta device: nothing is allocated."""
    with torch.device("meta"):
        parts = (VAE(config.vae), Generator(config.generator))
    weights = sum(t.numel() for part in parts for t in (*part.parameters(), *part.buffers()))
    return weights * dtype.itemsize, kv_cache_bytes(config, dtype)


def kv_cache_bytes(config: ModelConfig, dtype: torch.dtype) -> int:
    """The KV cache of one stream, preallocated for the whole window: keys and values of every block."""
    g = config.generator
    return 2 * g.depth * (2 + g.window) * g.tokens_per_frame() * g.dim * dtype.itemsize


def memory_free(device: torch.device) -> int | None:
    """Bytes free for a new model on `device` (None where the system does not say)."""
    if device.type == "cuda":
        return torch.cuda.mem_get_info(device)[0]
    try:
        with open("/proc/meminfo") as f:
            return next(int(line.split()[1]) * 1024 for line in f if line.startswith("MemAvailable:"))
    except (OSError, StopIteration, ValueError):
        return None


def check_memory(config: ModelConfig, device: torch.device, dtype: torch.dtype, checkpoint=None,
                 caches: int = 1, source: str | None = None) -> None:
    """InputError, before anything is allocated, when a stream of `config` cannot fit in `device`'s free memory:
    a one-line answer instead of the kernel's OOM killer (a silent `Killed`) or a CUDA out-of-memory traceback.
    With a `checkpoint`, its weights are loaded already, and what is left to fit is the KV cache (its window is
    the one size in a config that no tensor in the file bounds). `caches`: the KV caches held at once (play keeps
    a copy with each state it can rewind to). `source`: where random weights' config was named ("command line:
    --random-weights"), for the message."""
    free = memory_free(device)
    if free is None:
        return
    cache = caches * kv_cache_bytes(config, dtype)
    if checkpoint is not None:  # no need to count the weights on the meta device: they are in memory
        if cache > free:
            held = f" ({caches} copies: one for each state kept to rewind to)" if caches > 1 else ""
            raise InputError(checkpoint, "config.generator.window", f"{config.generator.window} latent frames need "
                             f"a KV cache of {cache / GiB:.1f} GiB on {device.type}{held}, and {free / GiB:.1f} GiB "
                             "is free")
        return
    weights = memory_needed(config, dtype)[0]
    if weights + cache > free:
        raise InputError(source or f"model config {config.name!r}", None,
                         f"{f'model config {config.name!r} ' if source else ''}needs about {(weights + cache) / GiB:.1f} GiB on {device.type} (weights "
                         f"{weights / GiB:.1f} GiB, KV cache {cache / GiB:.1f} GiB) and {free / GiB:.1f} GiB is "
                         f"free{'; the paper-size configs are for a large GPU' if device.type == 'cpu' else ''}")


def step_noise(seed: int, step: int, shape, device, dtype) -> torch.Tensor:
    """The noise of latent step `step` of a stream with `seed`: a function of the two alone."""
    g = torch.Generator(device="cpu").manual_seed((seed * 1_000_003 + step) % 2**63)
    return torch.randn(shape, generator=g).to(device=device, dtype=dtype)


def load_start_image(path, size: tuple[int, int]) -> np.ndarray:
    """Any picture a user supplies -> (H, W, 3) uint8 at `size`: turned upright as its EXIF orientation says (a
    phone's portrait photo), centre-cropped to the aspect, Lanczos-resized."""
    from PIL import Image, ImageOps
    try:
        with Image.open(path) as opened:
            image = _as_rgb(ImageOps.exif_transpose(opened))
    except Exception as error:  # noqa: BLE001 - Pillow raises many types (OSError, DecompressionBombError, ...)
        raise InputError(path, None, f"cannot read the start image ({error})") from None
    w, h = image.size
    target = size[0] / size[1]
    if w / h > target:
        crop = round(h * target)
        image = image.crop(((w - crop) // 2, 0, (w - crop) // 2 + crop, h))
    else:
        crop = round(w / target)
        image = image.crop((0, (h - crop) // 2, w, (h - crop) // 2 + crop))
    return np.array(image.resize(size, Image.Resampling.LANCZOS), dtype=np.uint8)  # a writable copy


def _as_rgb(image):
    """A picture in 8-bit RGB. Pillow's own conversion clips grey of more than 8 bits at 255, which made any such
    picture white; it is scaled to 8 bits instead, from the range of its format: 16 bits for Pillow's I;16 modes
    (a 16-bit PNG); for mode I (a 16-bit PGM, a 32-bit TIFF: the file does not say) the smallest of 8, 16 and 32
    bits that holds its values; a float picture whose values lie in 0..1 is taken as such. Transparent parts are
    black."""
    from PIL import Image
    if image.mode.startswith("I") or image.mode == "F":
        grey = np.asarray(image, dtype=np.float64)
        top = float(grey.max(initial=0.0))
        if image.mode.startswith("I;16"):
            full = 65535.0
        elif image.mode == "I":
            full = 255.0 if top <= 255 else 65535.0 if top <= 65535 else 2.0**32 - 1
        else:  # F
            full = 1.0 if top <= 1.0 else 255.0
        scaled = np.clip(np.rint(grey * (255.0 / full)), 0, 255).astype(np.uint8)
        clear = image.info.get("transparency")  # a transparent grey value (PNG tRNS), kept as the alpha below
        image = Image.fromarray(scaled, "L") if not isinstance(clear, (int, float)) else \
            Image.fromarray(np.stack([scaled, np.where(grey == clear, 0, 255).astype(np.uint8)], axis=-1), "LA")
    if image.mode in ("RGBA", "LA", "PA", "La", "RGBa") or "transparency" in image.info:
        # over black: dropping the alpha showed whatever colour the file keeps under its transparent pixels
        rgba = image.convert("RGBA")
        image = Image.alpha_composite(Image.new("RGBA", rgba.size, (0, 0, 0, 255)), rgba)
    return image.convert("RGB")


@dataclass
class GeneratedState:
    """A snapshot of the stream (for rewind and branching): caches, the recycled latent, the step, the last pose."""
    cache: KVCache
    decoder: DecoderCache
    prev: torch.Tensor
    step: int
    pose: Pose
    seed: int
    frame: np.ndarray     # the last frame made (H, W, 3) uint8: what a camera at rest goes on seeing


class GeneratedWorld:
    def __init__(self, config: ModelConfig, vae: VAE, generator: Generator, camera_scaling: CameraScaling,
                 device="cpu", checkpoint: Path | None = None, stage: str = "random"):
        self.config, self.camera_scaling, self.stage = config, camera_scaling, stage
        self.device = torch.device(device)
        self.dtype = config.torch_dtype() if self.device.type == "cpu" else torch.bfloat16
        self.vae = vae.to(self.device, self.dtype).eval()
        self.generator = generator.to(self.device, self.dtype).eval()
        self.checkpoint = checkpoint
        self.size = (config.width, config.height)
        self.latent_size = config.latent_size()
        self._state: GeneratedState | None = None
        # on a GPU the steady-state step replays CUDA graphs (world/cuda_graphs.py); `graphs = None` runs it eagerly
        self.graphs = StreamGraphs(self.generator, self.vae) if self.device.type == "cuda" else None
        if self.device.type == "cuda":  # the decode's 3D convolutions have static shapes: let cuDNN time its choices
            torch.backends.cudnn.benchmark = True
        self.last_timing = {"generator_ms": 0.0, "decode_ms": 0.0}  # of the last step, for the HUD and the bench
        # A camera at rest keeps the last frame made: the model, run on with no motion, drifts (whitens, greys) within
        # seconds where the world it imitates stays still. The bench turns this off to time the model itself.
        self.hold_at_rest = True

    @classmethod
    def open(cls, checkpoint=None, device: str = "auto", random_config: str | None = None,
             caches: int = 1, random_source: str | None = None) -> "GeneratedWorld":
        """The model in `checkpoint` (default: the shipped one), or random weights of a named config. `caches`: the
        KV caches its user will hold at once (for the memory check)."""
        device = pick_device(device)
        if random_config is not None:
            return cls.random(get_config(random_config, source=random_source or "model config"), device, caches,
                              random_source)
        path = Path(checkpoint) if checkpoint is not None else default_checkpoint_path()
        if not path.exists():
            what = "the shipped checkpoint is missing" if checkpoint is None else "no such checkpoint"
            raise InputError(path, None, f"{what} (train one with `explorer train`, or use random weights)")
        loaded: LoadedCheckpoint = load_checkpoint(path, device=device)
        check_memory(loaded.config, device, loaded.config.torch_dtype() if device.type == "cpu" else torch.bfloat16,
                     checkpoint=path, caches=caches)
        scaling = CameraScaling.from_dict(loaded.camera_scaling, source=str(path))
        warn_if_untrained(path, loaded.stage)
        return cls(loaded.config, loaded.vae, loaded.generator, scaling, device, path, loaded.stage)

    @classmethod
    def random(cls, config: ModelConfig, device: torch.device, caches: int = 1,
               source: str | None = None) -> "GeneratedWorld":
        """Random weights (seed 0) of `config`: for tests and benchmarks, e.g. a config with another window."""
        torch.manual_seed(0)
        # Built straight on the device in the inference dtype: an 8B model never exists in fp32 on the host.
        dtype, default = (config.torch_dtype() if device.type == "cpu" else torch.bfloat16), torch.get_default_dtype()
        check_memory(config, device, dtype, caches=caches, source=source)
        torch.set_default_dtype(dtype)
        try:
            with device:
                vae, generator = VAE(config.vae), Generator(config.generator)
        finally:
            torch.set_default_dtype(default)
        return cls(config, vae, generator, CameraScaling(), device)

    @property
    def checkpoint_sha256(self) -> str | None:
        return checkpoint_sha256(self.checkpoint) if self.checkpoint else None

    def first_frame(self, level) -> np.ndarray:
        """The level's start picture at the native size: its image if it has one, else its scene rendered."""
        if level.image is not None:
            return load_start_image(level.image, self.size)
        from world.reference import ReferenceWorld
        reference = ReferenceWorld(size=self.size)
        try:
            return reference.reset(level, 0)
        finally:
            reference.close()

    def reset(self, level, seed: int) -> np.ndarray:
        return self.reset_from_frame(self.first_frame(level), level.start, seed)

    @torch.inference_mode()
    def reset_from_frame(self, frame: np.ndarray, start: Pose, seed: int) -> np.ndarray:
        """Start a stream from a picture (H, W, 3) uint8 at the native size, seen from `start`."""
        if frame.shape != (self.size[1], self.size[0], 3):
            raise ValueError(f"first frame {frame.shape} for a {self.size[0]}x{self.size[1]} world")
        image = from_uint8(frame[None])[None].to(self.device, self.dtype)       # (1, 3, 1, H, W)
        latent = self.vae.encode_first(image[:, :, 0])                          # (1, C, 1, h, w)
        decoder = self.vae.decoder_cache()
        self.vae.decode_step(latent, decoder)  # primes the decoder's temporal cache with the first frame
        cache = self.generator.new_cache(1, self.device, self.dtype)
        self._state = GeneratedState(cache, decoder, latent, 0, start, int(seed), frame.copy())
        return frame

    @torch.inference_mode()
    def step(self, poses: Sequence[Pose]) -> np.ndarray:
        if self._state is None:
            raise RuntimeError("GeneratedWorld.step before reset")
        if len(poses) != FRAMES_PER_STEP:
            raise ValueError(f"a step takes {FRAMES_PER_STEP} poses, got {len(poses)}")
        s = self._state
        # At rest where the last frame was made (not the last step: a slow creep adds up): that frame again, and
        # nothing of the stream changes, so the next step that moves goes on as if no time had passed.
        if self.hold_at_rest and at_rest(s.pose, poses):
            self.last_timing = {"generator_ms": 0.0, "decode_ms": 0.0}
            return np.stack([s.frame] * FRAMES_PER_STEP)
        w, h = self.latent_size
        cam = camera_embedding([s.pose, *poses], grid=(w, h), aspect=self.size[0] / self.size[1],
                               scaling=self.camera_scaling, flow=self.generator.config.warp)  # (1, 24 or 26, h, w)
        cam = torch.from_numpy(cam).to(self.device, self.dtype).transpose(0, 1)[None]  # (1, 24 or 26, 1, h, w)
        noise = step_noise(s.seed, s.step, s.prev.shape, self.device, self.dtype)
        t = torch.ones(1, device=self.device, dtype=self.dtype)
        start = self._clock()
        if self.graphs is not None and self.graphs.usable(s.cache, s.decoder):  # the same step, replayed
            latent, frames, middle = self.graphs.step(noise, s.prev, cam, t, s.cache, s.decoder, self._clock)
            latent = latent.clone()  # the graph's output buffer is overwritten by the next step
        else:
            latent = noise - self.generator.step(noise, s.prev, cam, t, s.cache)    # x_t = z_t - v at t = 1
            middle = self._clock()
            frames = self.vae.decode_step(latent, s.decoder)                         # (1, 3, 4, H, W)
        self.last_timing = {"generator_ms": (middle - start) * 1e3, "decode_ms": (self._clock() - middle) * 1e3}
        made = to_uint8(frames[0])
        self._state = replace(s, prev=latent, step=s.step + 1, pose=poses[-1], frame=made[-1].copy())
        return made

    def _clock(self) -> float:
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        return time.perf_counter()

    def state(self) -> GeneratedState:
        s = self._state
        return replace(s, cache=s.cache.clone(), decoder=s.decoder.clone(), prev=s.prev.clone())

    @torch.inference_mode()
    def restore(self, state: GeneratedState) -> None:
        """Copied into the live caches where they have the same shapes, so the CUDA graphs bound to them stay valid."""
        live = self._state
        if live is None or live.cache.k[0].shape != state.cache.k[0].shape:
            self._state = replace(state, cache=state.cache.clone(), decoder=state.decoder.clone(),
                                  prev=state.prev.clone())
            return
        live.cache.load_(state.cache)
        live.decoder.load_(state.decoder)
        self._state = replace(state, cache=live.cache, decoder=live.decoder, prev=state.prev.clone())

    def close(self) -> None:
        self._state = None
