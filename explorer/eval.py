"""`explorer eval`: the generated world against the reference world from the same first frame (DESIGN section 8).

Streams. Held-out scenes (world.dataset.HELD_OUT_SEEDS, never trained on), each walked by a person-like random
trajectory of --seconds at 24 fps (started mid-motion, as the training clips are), plus every --levels level along
every --paths path (or a random walk from the level's start). A stream starts from one picture, the reference
world's render of its first pose at the model's native size; every world under test is reset to that picture and then
follows the same poses, and each of its frames is scored against the reference world's frame for the same pose.

Worlds under test, all in the same run on the same streams:
- generated: the checkpoint's one-step generator, exactly as the game runs it (GeneratedWorld);
- diffusion: the baseline, the generator sampled autoregressively in --baseline-steps Euler steps (MultiStepWorld);
- hold: the first frame repeated for ever (a model must beat it clearly at 1 s).

Scores:
- fidelity: PSNR and SSIM at 1, 5, 10 and 60 s, each over the frames within 0.25 s of the mark in all streams
  (PSNR of their mean squared error, so a frame that happens to be identical cannot make it infinite);
- camera adherence: separate 1 s streams of pure yaw and pure forward motion from the held-out scenes' starts. Yaw:
  the picture's shift between frame 0 and the last frame of each step, measured by normalised cross-correlation
  (explorer.metrics.estimate_shift), against the f tan(yaw change) the camera implies. Forward: the picture's
  expansion about the centre (explorer.metrics.estimate_zoom) against the reference world's own frames for the same
  poses. A scene where the estimator cannot follow the reference world's own yaw (too dark or bare to measure) is
  left out of both, and the reference's own yaw error is reported as the estimator's floor;
- sharpness: the generated frames' mean Laplacian variance over the reference frames' (a blurry average scores well
  on PSNR; this keeps it honest);
- long horizon: per 5 s window, the Fréchet distance between features of generated and reference frames (the
  checkpoint's VAE encoder's pooled latents plus simple image statistics, standardised by the reference frames'
  spread over the run) and a sharpness ratio; drift is the last window's distance over the first's.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from camera.embedding import camera_embedding
from camera.errors import InputError
from camera.paths import load_path
from camera.pose import Pose
from camera.trajectories import forward_trajectory, random_trajectory, yaw_trajectory
from explorer import metrics
from model.vae import VAE, from_uint8, to_uint8
from world.base import FPS, FRAMES_PER_STEP
from world.dataset import EYE_HEIGHT, HELD_OUT_SEEDS
from world.generated import GeneratedWorld, step_noise
from world.level import load_level
from world.scene import SceneParams, height_at

MARKS = (1, 5, 10, 60)            # seconds at which fidelity is reported
MARK_HALF_WIDTH = 0.25            # s: a mark averages the frames within this of it
WINDOW_SECONDS = 5                # long-horizon windows
FEATURE_STRIDE = FRAMES_PER_STEP  # one feature sample per latent step: its last frame
FEATURE_STD_FLOOR = 0.01          # features are standardised by the reference's std, floored (constant features)
CAMERA_SECONDS = 1
YAW_DEG_PER_S = 24.0              # 1 s moves the picture's centre by f tan(24°): 55 px at 256x144, past 40 px
FORWARD_M_PER_S = 2.0             # the game's walking speed
MEASURABLE_PCT = 25.0             # a scene's reference yaw error above this: the scene cannot be measured
PLAYERS = ("generated", "diffusion", "hold")


class Player(Protocol):
    """What eval drives: a world that starts from a given picture (GeneratedWorld, MultiStepWorld, HoldWorld)."""

    def reset_from_frame(self, frame: np.ndarray, start: Pose, seed: int) -> np.ndarray: ...

    def step(self, poses: Sequence[Pose]) -> np.ndarray: ...


class HoldWorld:
    """The baseline that shows the first frame for ever."""

    def reset_from_frame(self, frame: np.ndarray, start: Pose, seed: int) -> np.ndarray:
        self.frame = frame
        return frame

    def step(self, poses: Sequence[Pose]) -> np.ndarray:
        return np.repeat(self.frame[None], len(poses), axis=0)


class MultiStepWorld:
    """The generator sampled autoregressively in `steps` Euler steps from t = 1 to t = 0 (diffusion forcing).

    The diffusion stage trains with one t for the whole clip (DESIGN section 4), so at sampling time t_i the frame
    must see the earlier frames as they were at t_i: there is one KV cache per sampling time, and sub-step i commits
    the frame's noisy iterate to cache i. The clean latent is recycled into the next step and decoded, as in
    GeneratedWorld, and the noise of each step is the same as the generated world's (world.generated.step_noise).
    """

    def __init__(self, world: GeneratedWorld, steps: int):
        self.world, self.times = world, np.linspace(1.0, 0.0, steps + 1)

    @torch.inference_mode()
    def reset_from_frame(self, frame: np.ndarray, start: Pose, seed: int) -> np.ndarray:
        w = self.world
        image = from_uint8(frame[None]).transpose(0, 1).to(w.device, w.dtype)  # (1, 3, H, W)
        self.prev = w.vae.encode_first(image)                                  # (1, C, 1, h, w)
        self.decoder = w.vae.decoder_cache()
        w.vae.decode_step(self.prev, self.decoder)
        self.caches = [w.generator.new_cache(1, w.device, w.dtype) for _ in self.times[:-1]]
        self.pose, self.seed, self.index = start, int(seed), 0
        return frame

    @torch.inference_mode()
    def step(self, poses: Sequence[Pose]) -> np.ndarray:
        w = self.world
        cam = camera_embedding([self.pose, *poses], grid=w.latent_size, aspect=w.size[0] / w.size[1],
                               scaling=w.camera_scaling)                       # (1, 24, h, w)
        cam = torch.from_numpy(cam).to(w.device, w.dtype).transpose(0, 1)[None]  # (1, 24, 1, h, w)
        x = step_noise(self.seed, self.index, self.prev.shape, w.device, w.dtype)
        for cache, t0, t1 in zip(self.caches, self.times[:-1], self.times[1:]):
            t = torch.full((1,), float(t0), device=w.device, dtype=w.dtype)
            x = x + float(t1 - t0) * w.generator.step(x, self.prev, cam, t, cache, commit=True)
        frames = w.vae.decode_step(x, self.decoder)                            # (1, 3, 4, H, W)
        self.prev, self.pose, self.index = x, poses[-1], self.index + 1
        return to_uint8(frames[0])


# --- streams -----------------------------------------------------------------------------------

@dataclass
class Stream:
    name: str
    scene: SceneParams
    poses: list[Pose]


def ground_of(scene: SceneParams):
    return lambda x, z: float(height_at(scene, x, z))


def held_out_start(seed: int) -> tuple[SceneParams, Pose]:
    """Held-out scene `seed` and a start at eye height near its origin, looking level in a random direction."""
    scene = metrics_scene(seed)
    rng = np.random.default_rng([seed, 1])
    x, z = rng.uniform(-1.0, 1.0, 2)
    return scene, Pose((x, float(height_at(scene, x, z)) + EYE_HEIGHT, z), yaw=float(rng.uniform(-180.0, 180.0)))


def metrics_scene(seed: int) -> SceneParams:
    from world.scene import random_scene
    return random_scene(np.random.default_rng(seed))


def held_out_streams(scenes: int, frames: int) -> list[Stream]:
    streams = []
    for seed in HELD_OUT_SEEDS[:scenes]:
        scene, start = held_out_start(seed)
        rng = np.random.default_rng([seed, 2])
        warmup = int(rng.integers(0, 2 * FPS))  # start mid-motion, as the training clips do
        poses = random_trajectory(rng, warmup + frames, start, ground=ground_of(scene))[warmup:]
        streams.append(Stream(f"held-out scene {seed}", scene, poses))
    return streams


def level_streams(levels: Sequence[str], paths: Sequence[str], frames: int) -> list[Stream]:
    """Each level along each path (truncated to `frames`), or along a random walk from its start without paths."""
    if paths and not levels:
        raise InputError("command line", "--paths", "needs --levels: a path is walked from each level's start")
    camera_paths = [(str(p), load_path(p)) for p in paths]
    streams = []
    for name in levels:
        level = load_level(name)
        if level.scene is None:
            raise InputError(level.source, "scene", "eval needs a [scene] to render the reference world; this level "
                             "has only a start image")
        for source, path in camera_paths:
            poses = path.poses(fps=FPS, start=level.start)[:frames]
            if len(poses) < 2:
                raise InputError(source, "path.key", "the path lasts less than one frame")
            streams.append(Stream(f"{level.name} along {Path(source).name}", level.scene, poses))
        if not camera_paths:
            rng = np.random.default_rng(abs(hash(level.name)) % 2**32 if False else [len(streams), 3])
            poses = random_trajectory(rng, frames, level.start, ground=ground_of(level.scene))
            streams.append(Stream(f"{level.name} random walk", level.scene, poses))
    return streams


def steps(poses: Sequence[Pose]) -> Iterator[tuple[list[Pose], list[Pose]]]:
    """The poses after the first in steps of four: (the step's poses, the same padded to four with its last)."""
    rest = list(poses[1:])
    for i in range(0, len(rest), FRAMES_PER_STEP):
        chunk = rest[i:i + FRAMES_PER_STEP]
        yield chunk, chunk + [chunk[-1]] * (FRAMES_PER_STEP - len(chunk))
