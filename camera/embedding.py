"""Camera poses -> the per-ray camera embedding the generator consumes (DESIGN section 3).

For every video frame i of a step we take its camera relative to the previous video frame,
T = inv(C_{i-1}) @ C_i (camera-to-world matrices), and for every latent pixel a ray through the
pixel's centre:
    origin    (3): the relative camera centre, T[:3, 3], the same for every pixel;
    direction (3): the pixel's ray of frame i turned into the previous camera's frame, minus the same
                   pixel's ray in the previous frame, R @ ray_i - ray_{i-1}: zero for a still camera,
                   the pixel's image motion under rotation (and zoom) otherwise.
This is APT2's change to CameraCtrl II's Pluecker rays: relative to the previous frame, so values
stay bounded however far the player walks, and invariant to moving or rotating the whole trajectory
(inv(G C_{i-1}) G C_i = T for any rigid G). Subtracting the rest direction removes the constant
ray fan that carries no motion, so what is left is small and centred, and dividing by the stds of
CameraScaling brings both groups to about unit std.

Layout: one step = four video frames, frame-major channels
    [f0 ox oy oz dx dy dz, f1 ox ... , f3 ... dz]  -> (24, h, w) per step.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from camera.errors import InputError
from camera.pose import Pose

FRAMES_PER_STEP = 4  # equals world.base.FRAMES_PER_STEP; camera/ does not import world/
CHANNELS = 6 * FRAMES_PER_STEP


@dataclass
class CameraScaling:
    """Stds of the two groups, measured on training trajectories (measure_scaling) and stored in the
    checkpoint. The defaults are measure_scaling of 100 random_trajectory clips of 136 frames
    (default ControlSettings, 24 fps, fov 60, 16:9, a 16x9 grid): 0.0399 and 0.0244."""
    origin_std: float = 0.04      # metres per frame
    direction_std: float = 0.024  # unit-ray difference per frame (about radians of turn)

    def to_dict(self) -> dict:
        return asdict(self)

    @staticmethod
    def from_dict(d, source="checkpoint", field: str = "camera_scaling") -> "CameraScaling":
        if not isinstance(d, dict) or set(d) != {"origin_std", "direction_std"}:
            raise InputError(source, field, f"must have exactly origin_std and direction_std, got {d!r}")
        for name, v in d.items():
            if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v <= 0:
                raise InputError(source, f"{field}.{name}", f"must be a positive number, got {v!r}")
        return CameraScaling(float(d["origin_std"]), float(d["direction_std"]))


def ray_grid(fov: float, aspect: float, grid_w: int, grid_h: int) -> np.ndarray:
    """Unit ray directions (grid_h, grid_w, 3) in the camera frame (x right, y up, -z forward)
    through the centres of a grid over the image; row 0 is the top. fov: vertical, degrees."""
    tan_half = np.tan(np.radians(fov) / 2.0)
    x = ((np.arange(grid_w) + 0.5) / grid_w * 2.0 - 1.0) * tan_half * aspect  # (w,)
    y = (1.0 - (np.arange(grid_h) + 0.5) / grid_h * 2.0) * tan_half           # (h,)
    rays = np.stack(np.broadcast_arrays(x[None, :], y[:, None], -1.0), axis=-1)  # (h, w, 3)
    return rays / np.linalg.norm(rays, axis=-1, keepdims=True)


def _relative_rays(poses: Sequence[Pose], grid: tuple[int, int], aspect: float) -> tuple[np.ndarray, np.ndarray]:
    """Unscaled features of every frame after the first: origins (n-1, 3), directions (n-1, h, w, 3)."""
    w, h = grid
    c2w = np.stack([p.camera_to_world() for p in poses])  # (n, 4, 4)
    rot, pos = c2w[:, :3, :3], c2w[:, :3, 3]
    prev_t = rot[:-1].transpose(0, 2, 1)  # (n-1, 3, 3): world -> previous camera
    origins = np.einsum("nij,nj->ni", prev_t, pos[1:] - pos[:-1])
    relative = prev_t @ rot[1:]  # (n-1, 3, 3): R of T = inv(C_{i-1}) @ C_i
    rays = np.stack([ray_grid(p.fov, aspect, w, h) for p in poses])  # (n, h, w, 3)
    directions = np.einsum("nij,nhwj->nhwi", relative, rays[1:]) - rays[:-1]
    return origins, directions


def camera_embedding(poses: Sequence[Pose], grid: tuple[int, int], aspect: float,
                     scaling: CameraScaling = CameraScaling()) -> np.ndarray:
    """Embedding (k, 24, h, w) float32 of len(poses) = 1 + 4k poses: the pose before the first step
    (the first image's, or the last frame of the previous step when streaming), then 4 per step."""
    if len(poses) < 1 + FRAMES_PER_STEP or (len(poses) - 1) % FRAMES_PER_STEP:
        raise ValueError(f"need 1 + {FRAMES_PER_STEP}k poses, got {len(poses)}")
    w, h = grid
    origins, directions = _relative_rays(poses, grid, aspect)
    k = len(origins) // FRAMES_PER_STEP
    features = np.concatenate([np.broadcast_to(origins[:, None, None, :] / scaling.origin_std, directions.shape),
                               directions / scaling.direction_std], axis=-1)  # (4k, h, w, 6)
    features = features.reshape(k, FRAMES_PER_STEP, h, w, 6).transpose(0, 1, 4, 2, 3)  # (k, 4, 6, h, w)
    return np.ascontiguousarray(features.reshape(k, CHANNELS, h, w), dtype=np.float32)


def measure_scaling(trajectories: Sequence[Sequence[Pose]], aspect: float, grid: tuple[int, int]) -> CameraScaling:
    """The std of each group (all components and pixels pooled) over every consecutive frame pair
    of the trajectories (any lengths >= 2)."""
    origins, directions = zip(*(_relative_rays(t, grid, aspect) for t in trajectories))
    origin_std = float(np.concatenate(origins).std())
    direction_std = float(np.concatenate([d.reshape(-1) for d in directions]).std())
    if origin_std == 0 or direction_std == 0:
        raise ValueError("the trajectories never move or never turn: no scale can be measured")
    return CameraScaling(origin_std, direction_std)
