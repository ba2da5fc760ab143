"""Training data: clips rendered by the reference world from random procedural scenes (DESIGN section 4, stage 0).

A dataset is a folder:
    manifest.json            format, the spec it was made with, and the finished shards
    shard_00000/frames.npy   (n, F, H, W, 3) uint8
                poses.npy    (n, F, 7) float64   x, y, z, yaw, pitch, roll, fov per frame (camera.pose.Pose.to_array)
                intrinsics.npy (n, F, 4) float32 fx, fy, cx, cy in pixels
                scene_seeds.npy (n,) int64
Every clip is a pure function of (spec, clip index), and shards are written to a temporary folder and renamed, so an
interrupted run resumes where it stopped and produces exactly the data an uninterrupted run would have.

Scene seeds below HELD_OUT_SEEDS.stop are held out: `--split train` never draws them, `--split heldout` draws only them
(evaluation uses them as unseen scenes).
"""
from __future__ import annotations

import json
import re
import os
import shutil
import sys
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
from tqdm import tqdm

from camera.errors import InputError, parse_json, read_text, write_replacing
from camera.pose import Pose
from camera.trajectories import random_trajectory
from world.scene import height_at, random_scene

FORMAT = "explorer-data/1"
HELD_OUT_SEEDS = range(0, 10_000)
TRAIN_SEEDS = range(10_000, 2**31 - 1)
EYE_HEIGHT = 1.7
MAX_SHARD_BYTES = 4 * 2**30


@dataclass(frozen=True)
class DataSpec:
    clips: int
    size: tuple[int, int] = (128, 72)
    frames: int = 33
    seed: int = 0
    split: str = "train"
    clips_per_scene: int = 8
    clips_per_shard: int = 64
    fov: float = 60.0

    def __post_init__(self):
        if (self.frames - 1) % 4 or self.frames < 5:  # a lone first frame has no step to learn from
            raise InputError("command line", "--frames", f"must be 1 + 4k with k at least 1 (the first frame and "
                             f"whole latent steps: 5, 9, 13, ...), got {self.frames}")
        if self.split not in ("train", "heldout"):
            raise InputError("command line", "--split", f"must be train or heldout, got {self.split!r}")
        if self.shard_bytes > MAX_SHARD_BYTES:  # a shard's frames are held in memory before it is written
            raise InputError("command line", "--frames", f"a shard of {_clips(min(self.clips, self.clips_per_shard))} "
                             f"of {self.frames} frames at {self.size[0]}x{self.size[1]} is {_size(self.shard_bytes)}; "
                             f"at most {_size(MAX_SHARD_BYTES)} (fewer --frames or --clips-per-shard, or a smaller "
                             "--size)")

    @property
    def shard_bytes(self) -> int:
        return min(self.clips, self.clips_per_shard) * self.frames * self.size[0] * self.size[1] * 3

    @property
    def total_bytes(self) -> int:
        return self.clips * self.frames * self.size[0] * self.size[1] * 3

    def identity(self) -> dict:
        """What must agree for a folder to be resumed (the clip count may grow)."""
        d = asdict(self)
        d.pop("clips")
        d["size"] = list(self.size)
        return d


def scene_seed(spec: DataSpec, scene_index: int) -> int:
    seeds = HELD_OUT_SEEDS if spec.split == "heldout" else TRAIN_SEEDS
    rng = np.random.default_rng([spec.seed, scene_index, 7])
    return int(seeds.start + rng.integers(0, len(seeds)))


def render_clip(world, scene, spec: DataSpec, clip_index: int) -> tuple[np.ndarray, np.ndarray]:
    """(frames (F, H, W, 3) uint8, poses (F, 7) float64) for one clip; `world` already shows `scene`."""
    rng = np.random.default_rng([spec.seed, clip_index, 11])
    ground = lambda x, z: float(height_at(scene, x, z))  # noqa: E731
    yaw = float(rng.uniform(-180.0, 180.0))
    start = Pose((float(rng.uniform(-1, 1)), ground(0.0, 0.0) + EYE_HEIGHT, float(rng.uniform(-1, 1))), yaw=yaw,
                 fov=spec.fov)
    # Start mid-motion, as a clip cut from someone's play would: simulate a little before the first kept frame.
    warmup = int(rng.integers(0, 48))
    poses = random_trajectory(rng, warmup + spec.frames, start, ground=ground)[warmup:]
    return world.render(poses), np.stack([p.to_array() for p in poses])


def _check_space(out: Path, spec: DataSpec) -> None:
    """Refuses, before any clip is rendered, a dataset that cannot fit on its disk (what is there already counts)."""
    free = shutil.disk_usage(next(p for p in (out, *out.parents) if p.exists())).free
    have = sum(f.stat().st_size for f in out.glob("shard_*/frames.npy"))
    if spec.total_bytes - have > free:
        raise InputError(out, "--clips", f"{_clips(spec.clips)} of {spec.frames} frames at {spec.size[0]}x{spec.size[1]} "
                         f"need {_size(spec.total_bytes - have)} more; {_size(free)} are free there")


def _clips(n: int) -> str:
    return f"{n} clip" if n == 1 else f"{n} clips"


def _size(n: int) -> str:
    return f"{n / 2**30:,.1f} GiB" if n >= 2**30 else f"{n / 2**20:,.1f} MiB"


def _write_json(path: Path, obj) -> None:
    write_replacing(path, lambda tmp: tmp.write_text(json.dumps(obj, indent=1)), field=None)


def _read_manifest(path: Path) -> dict:
    manifest = parse_json(read_text(path), path, None)
    if not isinstance(manifest, dict):
        raise InputError(path, None, "must be a JSON object")
    if manifest.get("format") != FORMAT:
        raise InputError(path, "format", f"expected {FORMAT!r}, found {manifest.get('format')!r}")
    if not isinstance(manifest.get("spec"), dict):
        raise InputError(path, "spec", "must be an object")
    shards = manifest.get("shards")
    if not (isinstance(shards, list) and all(isinstance(s, dict) and isinstance(s.get("name"), str)
                                             and re.fullmatch(r"shard_\d{5}", s["name"]) and _is_count(s.get("clips"))
                                             and _is_count(s.get("first_clip"), 0) for s in shards)):
        raise InputError(path, "shards", 'must be a list of {"name": "shard_NNNNN", "clips": N, "first_clip": N}')
    return manifest


def _is_count(v, least: int = 1) -> bool:
    return isinstance(v, int) and not isinstance(v, bool) and v >= least


def _open_manifest(out: Path, spec: DataSpec) -> dict:
    """The manifest to continue: a new one, or the folder's own if it was made with the same spec."""
    path = out / "manifest.json"
    if not path.exists():
        return {"format": FORMAT, "spec": spec.identity(), "held_out_scene_seeds": [HELD_OUT_SEEDS.start,
                HELD_OUT_SEEDS.stop], "shards": []}
    manifest = _read_manifest(path)
    for key, want in spec.identity().items():
        have = manifest.get("spec", {}).get(key)
        if have != want:
            raise InputError(path, f"spec.{key}", f"this folder holds data made with {have!r}; the command asks for "
                             f"{want!r} (use another --out, or the same options to resume)")
    return manifest


def write_dataset(out, spec: DataSpec) -> Path:
    from world.reference import ReferenceWorld

    out = Path(out)
    manifest = _open_manifest(out, spec)
    _check_space(out, spec)
    out.mkdir(parents=True, exist_ok=True)
    done = {s["name"] for s in manifest["shards"] if (out / s["name"]).is_dir()}
    manifest["shards"] = [s for s in manifest["shards"] if s["name"] in done]
    held = max((s["first_clip"] + s["clips"] for s in manifest["shards"]), default=0)
    if spec.clips < held:  # it rewrote the shard it cut into and kept those after it: a hole in the clips
        raise InputError(out / "manifest.json", "clips", f"this folder holds {held} clips; --clips {spec.clips} would "
                         f"drop some (give --clips {held} or more to resume or add to it, or another --out)")
    n_shards = -(-spec.clips // spec.clips_per_shard)
    world = ReferenceWorld(size=spec.size)
    current_seed, scene = None, None
    bar = tqdm(total=spec.clips, unit="clip", desc=f"data {out.name}")
    for shard in range(n_shards):
        name = f"shard_{shard:05d}"
        first, last = shard * spec.clips_per_shard, min((shard + 1) * spec.clips_per_shard, spec.clips)
        if name in done:
            existing = next(s for s in manifest["shards"] if s["name"] == name)
            if existing["clips"] == last - first and _opens(out / name, last - first, manifest["spec"]):
                bar.update(last - first)
                continue
            shutil.rmtree(out / name)  # a damaged shard, or a short last one from a smaller --clips: render it again
            manifest["shards"] = [s for s in manifest["shards"] if s["name"] != name]
        frames, poses, seeds = [], [], []
        for clip in range(first, last):
            seed = scene_seed(spec, clip // spec.clips_per_scene)
            if seed != current_seed:
                scene = random_scene(np.random.default_rng(seed))
                world.set_scene(scene)
                current_seed = seed
            f, p = render_clip(world, scene, spec, clip)
            frames.append(f), poses.append(p), seeds.append(seed)
            bar.update(1)
        poses = np.stack(poses)
        intrinsics = np.stack([[Pose.from_array(p).intrinsics(*spec.size)[[0, 1, 0, 1], [0, 1, 2, 2]] for p in clip]
                               for clip in poses]).astype(np.float32)
        tmp = out / f".{name}.tmp"
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir()
        try:
            np.save(tmp / "frames.npy", np.stack(frames))
            np.save(tmp / "poses.npy", poses)
            np.save(tmp / "intrinsics.npy", intrinsics)
            np.save(tmp / "scene_seeds.npy", np.array(seeds, dtype=np.int64))
        except OSError as e:  # a full disk: numpy's error names no file
            shutil.rmtree(tmp, ignore_errors=True)
            raise OSError(e.errno, e.strerror or str(e), str(out / name)) from None
        # a folder the manifest does not list is from a run killed between this rename and the manifest's: redone
        shutil.rmtree(out / name, ignore_errors=True)
        os.replace(tmp, out / name)
        manifest["shards"].append({"name": name, "clips": last - first, "first_clip": first})
        manifest["shards"].sort(key=lambda s: s["name"])  # a shard rendered again keeps its place
        manifest["clips"] = sum(s["clips"] for s in manifest["shards"])
        _write_json(out / "manifest.json", manifest)
    bar.close()
    world.close()
    return out


def open_dataset(folder) -> tuple[dict, list[dict[str, np.ndarray]]]:
    """The manifest and, per shard, its arrays (frames memory-mapped, so a large dataset costs no RAM to open)."""
    folder = Path(folder)
    path = folder / "manifest.json"
    if folder.is_file():
        raise InputError(folder, None, "is a file; give the dataset's folder (the one `explorer data --out` made)")
    if not path.exists():
        raise InputError(folder, None, "not a dataset: no manifest.json (make one with `explorer data`)")
    manifest = _read_manifest(path)
    spec = manifest["spec"]
    if not (_is_count(spec.get("frames")) and isinstance(spec.get("size"), list) and len(spec["size"]) == 2
            and all(_is_count(v) for v in spec["size"])):
        raise InputError(path, "spec", "must say the clips' frames and size [width, height]")
    shards = [_open_shard(folder / s["name"], s["clips"], spec) for s in manifest["shards"]]
    return manifest, shards


def _open_shard(d: Path, n: int, spec: dict) -> dict[str, np.ndarray]:
    """One shard's arrays, checked against the manifest's clip count and spec (frames memory-mapped)."""
    (w, h), f = spec["size"], spec["frames"]
    shard = {name: _load_array(d / f"{name}.npy", mmap=name == "frames")
             for name in ("frames", "poses", "intrinsics", "scene_seeds")}
    if len(shard["frames"]) != n:
        raise InputError(d, None, f"holds {len(shard['frames'])} clips, the manifest says {n} "
                         f"(delete the folder and run `explorer data` again to render it)")
    for name, shape, kind in (("frames", (n, f, h, w, 3), "u"), ("poses", (n, f, 7), "f"),
                              ("intrinsics", (n, f, 4), "f"), ("scene_seeds", (n,), "i")):
        a = shard[name]
        if a.shape != shape or a.dtype.kind != kind or (name == "frames" and a.dtype != np.uint8):
            raise InputError(d / f"{name}.npy", None, f"is {a.dtype} {a.shape}; the manifest's spec says "
                             f"{'uint8' if kind == 'u' else {'f': 'float', 'i': 'int'}[kind]} {shape}")
        if kind == "f" and not np.isfinite(a).all():
            raise InputError(d / f"{name}.npy", None, "holds NaN or infinite values")
    return shard


def _opens(d: Path, n: int, spec: dict) -> bool:
    """Whether a finished shard opens whole; one that does not (a file cut or deleted) is said and redone."""
    try:
        _open_shard(d, n, spec)
    except InputError as e:
        tqdm.write(f"{e.source}: damaged; rendering {d.name} again", file=sys.stderr)
        return False
    return True


def _load_array(path: Path, mmap: bool) -> np.ndarray:
    """One shard array; a missing, cut or foreign file names itself (it can be rendered again)."""
    try:
        return np.load(path, mmap_mode="r" if mmap else None, allow_pickle=False)
    except FileNotFoundError:
        raise InputError(path, None, "missing (run the same `explorer data` again: it renders damaged shards "
                         "again)") from None
    except (OSError, ValueError, EOFError) as e:
        why = str(e).splitlines()[0] if str(e) else type(e).__name__
        raise InputError(path, None, f"not a readable array ({why}); run the same `explorer data` again: it renders "
                         "damaged shards again") from None
