"""The World interface the client talks to (DESIGN section 2)."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from camera.pose import Pose

FRAMES_PER_STEP = 4  # one latent frame of the VAE = four video frames
FPS = 24
MAX_SEED = 2**63 - 1  # a world's seed is from 0 to this (numpy's generators refuse negative ones)


@runtime_checkable
class World(Protocol):
    size: tuple[int, int]  # native (width, height) of the frames it returns

    def reset(self, level, seed: int) -> np.ndarray:
        """Start at the level's start pose; returns the first frame, (H, W, 3) uint8."""
        ...

    def step(self, poses: Sequence[Pose]) -> np.ndarray:
        """Advance by one step: four poses in, (4, H, W, 3) uint8 out, one frame per pose."""
        ...

    def state(self) -> object:
        """A snapshot for rewind and branching."""
        ...

    def restore(self, state) -> None:
        ...


def stream_poses(world: World, level, seed: int, poses: Sequence[Pose]):
    """Drive a world along a pose list: yields the first frame (1, H, W, 3), then one (<=4, H, W, 3) chunk per step.

    The world starts at poses[0] (`Level.at`: the level's start is replaced by it), every later pose gets exactly one
    frame, and a last step with fewer than four poses is padded by repeating its last pose, the padding frames dropped.
    """
    yield world.reset(level.at(poses[0]), seed)[None]
    rest = list(poses[1:])
    for i in range(0, len(rest), FRAMES_PER_STEP):
        chunk = rest[i:i + FRAMES_PER_STEP]
        padded = chunk + [chunk[-1]] * (FRAMES_PER_STEP - len(chunk))
        yield world.step(padded)[:len(chunk)]
