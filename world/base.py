"""The World interface the client talks to (DESIGN section 2)."""
from __future__ import annotations

from typing import Protocol, Sequence, runtime_checkable

import numpy as np

from camera.pose import Pose

FRAMES_PER_STEP = 4  # one latent frame of the VAE = four video frames
FPS = 24


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
