"""Training data: clips of a dataset (world/dataset.py) as batches of frames, latents and camera embeddings.

Everything random about a step is a function of (seed, step, position in the global batch): which clips, which
noise, which t. So a resumed run draws exactly what an uninterrupted one would, and a batch split over several
processes is the same batch as on one (each process draws its own positions).

The split: the clips of the last scenes (those of the last `val_clips` clips) are held out for validation, and no
clip of those scenes is trained on.

Latents for the generator stages are encoded once per (dataset, VAE) and cached in the run folder, one .npy of
posterior means per dataset shard, written atomically so an interrupted encode resumes: the mini encoder costs about
a second per 33-frame clip on two cores, far too slow to repeat every epoch.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from camera.embedding import CameraScaling, camera_embedding, measure_scaling
from camera.errors import InputError
from camera.pose import Pose
from model.config import ModelConfig
from model.vae import VAE, from_uint8
from world.base import FRAMES_PER_STEP
from world.dataset import open_dataset

SCALING_CLIPS = 256  # trajectories measure_scaling sees (evenly spaced over the dataset)


def _seed(*parts: int) -> int:
    return int(np.random.SeedSequence([int(p) % 2**63 for p in parts]).generate_state(1, np.uint64)[0])


class SampleRNG:
    """One torch.Generator per clip of the batch, seeded by (seed, step, the clip's position in the global batch).

    Draws come out stacked on a leading batch dim; a process holding positions 2..3 of a batch of 4 gets exactly
    rows 2..3 of what a single process gets.
    """

    def __init__(self, seed: int, step: int, positions):
        self.generators = [torch.Generator().manual_seed(_seed(seed, step, p, 17)) for p in positions]

    def randn(self, *shape: int) -> torch.Tensor:
        return torch.stack([torch.randn(shape, generator=g) for g in self.generators])

    def rand(self) -> torch.Tensor:
        """(B,) uniform in [0, 1)."""
        return torch.cat([torch.rand(1, generator=g) for g in self.generators])

    def integers(self, high: int) -> torch.Tensor:
        """(B,) uniform in 0 .. high - 1."""
        return torch.cat([torch.randint(high, (1,), generator=g) for g in self.generators])


def locate(shards: list[np.ndarray], index: int) -> tuple[int, int]:
    """A global clip index -> (shard, row) in per-shard arrays."""
    offsets = np.cumsum([len(s) for s in shards])
    shard = int(np.searchsorted(offsets, index, side="right"))
    return shard, int(index) - (int(offsets[shard - 1]) if shard else 0)


@dataclass
class Clips:
    """The clips of a dataset, checked against the model config, split into train and validation by scene."""
    folder: Path
    manifest: dict
    frames: list[np.ndarray]   # per shard (n, F, H, W, 3) uint8, memory-mapped
    poses: np.ndarray          # (N, F, 7) every clip's poses
    train: np.ndarray          # clip indices
    val: np.ndarray

    @staticmethod
    def open(folder, config: ModelConfig, val_clips: int) -> "Clips":
        manifest, shards = open_dataset(folder)
        source = Path(folder) / "manifest.json"
        size = tuple(manifest["spec"]["size"])
        if size != (config.width, config.height):
            raise InputError(source, "spec.size", f"the data is {size[0]}x{size[1]}; the {config.name!r} config needs "
                             f"{config.width}x{config.height} (make data with --size {config.width}x{config.height})")
        if not shards:
            raise InputError(source, "shards", "the dataset has no finished shard yet")
        frames = shards[0]["frames"].shape[1]
        if frames < 1 + FRAMES_PER_STEP:  # a 1-frame clip left NaN camera scaling in run.json, and the run unusable
            raise InputError(source, "spec.frames", f"clips of {frames} frame{'s' * (frames != 1)}; training needs "
                             f"at least {1 + FRAMES_PER_STEP} (a first frame and one latent step: make data with "
                             "--frames 9 or more)")
        seeds = np.concatenate([s["scene_seeds"] for s in shards])
        held = set(seeds[-val_clips:].tolist())
        is_val = np.isin(seeds, list(held))
        if is_val.all():
            raise InputError(source, "clips", f"{len(seeds)} clips from {len(held)} scenes leave nothing to train on "
                             f"after holding out the scenes of the last {val_clips} clips for validation (make more clips, or "
                             f"hold out fewer with --val-clips)")
        return Clips(Path(folder), manifest, [s["frames"] for s in shards],
                     np.concatenate([s["poses"] for s in shards]), np.flatnonzero(~is_val), np.flatnonzero(is_val))

    @property
    def clip_frames(self) -> int:
        return self.frames[0].shape[1]

    @property
    def latent_steps(self) -> int:
        """k: generator steps of a whole clip of 1 + 4k frames."""
        return (self.clip_frames - 1) // FRAMES_PER_STEP

    def video(self, index: int, start: int = 0, length: int | None = None) -> np.ndarray:
        """Frames start .. start + length of a clip, (T, H, W, 3) uint8."""
        shard, row = locate(self.frames, index)
        stop = self.clip_frames if length is None else start + length
        return np.asarray(self.frames[shard][row, start:stop])

    def batch_indices(self, seed: int, step: int, batch: int) -> np.ndarray:
        """The training clips of global batch `step`: epoch after epoch, each a fresh permutation of the train set."""
        n = len(self.train)
        positions = step * batch + np.arange(batch)
        out = np.empty(batch, dtype=np.int64)
        for epoch in np.unique(positions // n):
            permutation = np.random.default_rng(_seed(seed, epoch, 5)).permutation(n)
            mine = positions // n == epoch
            out[mine] = self.train[permutation[positions[mine] % n]]
        return out

    def identity(self) -> str:
        """A digest of what the clips are: the dataset's spec and its shards."""
        what = {"spec": self.manifest["spec"], "shards": self.manifest["shards"]}
        return hashlib.sha256(json.dumps(what, sort_keys=True).encode()).hexdigest()


def clip_camera(poses: np.ndarray, config: ModelConfig, scaling: CameraScaling) -> torch.Tensor:
    """A clip's poses (1 + 4k, 7) -> its camera embedding (24 or 26, k, h, w), step j from video frames 4j .. 4j + 4."""
    cam = camera_embedding([Pose.from_array(p) for p in poses], grid=config.latent_size(),
                           aspect=config.width / config.height, scaling=scaling,
                           flow=config.generator.warp)  # (k, 24 or 26, h, w)
    return torch.from_numpy(cam).transpose(0, 1)


def batch_camera(clips: Clips, indices, config: ModelConfig, scaling: CameraScaling) -> torch.Tensor:
    """(B, 24 or 26, k, h, w) for whole clips."""
    return torch.stack([clip_camera(clips.poses[i], config, scaling) for i in indices])


def measure_camera_scaling(clips: Clips, config: ModelConfig) -> CameraScaling:
    """measure_scaling over up to SCALING_CLIPS training trajectories, on the model's latent ray grid."""
    chosen = clips.train[np.linspace(0, len(clips.train) - 1, min(SCALING_CLIPS, len(clips.train))).astype(int)]
    trajectories = [[Pose.from_array(p) for p in clips.poses[i]] for i in chosen]
    try:
        return measure_scaling(trajectories, config.width / config.height, config.latent_size())
    except ValueError as e:  # cameras that never move or never turn
        raise InputError(clips.folder / "manifest.json", "poses", str(e)) from None


def vae_digest(vae: VAE) -> str:
    h = hashlib.sha256()
    for name, t in sorted(vae.state_dict().items()):
        h.update(name.encode())
        h.update(t.detach().float().contiguous().numpy().tobytes())
    return h.hexdigest()


def latent_folder(root: Path, clips: Clips, vae: VAE) -> Path:
    """The cache of (this dataset, these VAE weights): named by digests of both, so a retrained VAE or new data gets
    a fresh cache."""
    return root / hashlib.sha256((clips.identity() + vae_digest(vae)).encode()).hexdigest()[:16]


def encode_latents(folder: Path, clips: Clips, vae: VAE, device: torch.device, autocast: bool, rank: int = 0,
                   world: int = 1, batch: int = 4) -> None:
    """Encodes the shards not cached yet; process `rank` of `world` takes every world-th shard (the caller waits
    for all of them before reading)."""
    folder.mkdir(parents=True, exist_ok=True)
    todo = [s for s in range(len(clips.frames)) if s % world == rank and not (folder / f"{s:05d}.npy").exists()]
    total = sum(len(clips.frames[s]) for s in todo)
    with tqdm(total=total, unit="clip", desc="encoding latents", disable=rank != 0 or not total) as bar:
        for shard in todo:
            frames, means = clips.frames[shard], []
            for first in range(0, len(frames), batch):
                video = from_uint8(np.array(frames[first:first + batch])).to(device)  # (b, 3, F, H, W)
                with torch.no_grad(), torch.autocast(device.type, torch.bfloat16, enabled=autocast):
                    means.append(vae.encode(video)[0].float().cpu())
                bar.update(len(video))
            tmp = folder / f".{shard:05d}.tmp.npy"
            np.save(tmp, torch.cat(means).numpy())
            os.replace(tmp, folder / f"{shard:05d}.npy")


class LatentCache:
    """Posterior means of every clip, (N, C, 1 + k, h, w) float32, one memory-mapped .npy per dataset shard."""

    def __init__(self, folder: Path, shard_count: int):
        self.shards = [np.load(folder / f"{s:05d}.npy", mmap_mode="r") for s in range(shard_count)]

    def get(self, indices) -> torch.Tensor:
        """(B, C, 1 + k, h, w) float32 for global clip indices."""
        return torch.stack([torch.from_numpy(np.array(self.shards[s][row]))
                            for s, row in (locate(self.shards, i) for i in indices)])
