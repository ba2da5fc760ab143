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

With `flow=True` two channels follow: the rotation flow of the step (rotation_flow), which a generator with
`warp` uses to carry the previous latent frame along with the turning camera.
"""
from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Sequence

import numpy as np

from camera.errors import InputError, is_number
from camera.pose import Pose

FRAMES_PER_STEP = 4  # equals world.base.FRAMES_PER_STEP; camera/ does not import world/
CHANNELS = 6 * FRAMES_PER_STEP


SCALING_RANGE = (1e-6, 1e3)  # a std per frame beyond these makes the features overflow float32 or vanish


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
        lo, hi = SCALING_RANGE
        for name, v in d.items():
            if not is_number(v) or not lo <= v <= hi:
                raise InputError(source, f"{field}.{name}", f"must be a number from {lo:g} to {hi:g} (a std per "
                                 f"frame, as measured on training data: about 0.04 and 0.024), got {v!r}")
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


def _check_steps(poses: Sequence[Pose]) -> None:
    """1 + 4k poses, k >= 1: the pose before the first step, then four per step."""
    if len(poses) < 1 + FRAMES_PER_STEP or (len(poses) - 1) % FRAMES_PER_STEP:
        raise ValueError(f"need 1 + {FRAMES_PER_STEP}k poses, got {len(poses)}")


def camera_embedding(poses: Sequence[Pose], grid: tuple[int, int], aspect: float,
                     scaling: CameraScaling = CameraScaling(), flow: bool = False) -> np.ndarray:
    """Embedding (k, 24, h, w) float32 of len(poses) = 1 + 4k poses: the pose before the first step
    (the first image's, or the last frame of the previous step when streaming), then 4 per step.
    flow=True appends each step's rotation_flow: (k, 26, h, w)."""
    _check_steps(poses)
    w, h = grid
    origins, directions = _relative_rays(poses, grid, aspect)
    k = len(origins) // FRAMES_PER_STEP
    features = np.concatenate([np.broadcast_to(origins[:, None, None, :] / scaling.origin_std, directions.shape),
                               directions / scaling.direction_std], axis=-1)  # (4k, h, w, 6)
    features = features.reshape(k, FRAMES_PER_STEP, h, w, 6).transpose(0, 1, 4, 2, 3)  # (k, 4, 6, h, w)
    features = features.reshape(k, CHANNELS, h, w)
    if flow:
        features = np.concatenate([features, rotation_flow(poses, grid, aspect)], axis=1)
    return np.ascontiguousarray(features, dtype=np.float32)


def rotation_flow(poses: Sequence[Pose], grid: tuple[int, int], aspect: float) -> np.ndarray:
    """(k, 2, h, w) float32 for 1 + 4k poses: for every latent pixel of step j, where the content it shows at the
    step's last frame (pose 4j) was at the previous step's last frame (pose 4j - 4), in latent pixels (x right,
    y down), relative to the pixel itself, counting the camera's rotation (and zoom) only.

    A rotation moves the picture independently of the scene's depth (the homography K R K^-1), so this is exact
    for turning and needs no depth; what translation adds is left to the network. A direction behind the previous
    camera gets a displacement far outside the picture. Zero for a still or purely translating camera."""
    _check_steps(poses)
    w, h = grid
    ends = list(poses[::FRAMES_PER_STEP])  # the pose before each step, then each step's last
    out = np.empty((len(ends) - 1, 2, h, w), dtype=np.float32)
    for j, (before, after) in enumerate(zip(ends[:-1], ends[1:])):
        rot_before = before.camera_to_world()[:3, :3]
        rot_after = after.camera_to_world()[:3, :3]
        rays = ray_grid(after.fov, aspect, w, h) @ (rot_before.T @ rot_after).T  # (h, w, 3) in the earlier camera
        tan_half = np.tan(np.radians(before.fov) / 2.0)
        depth = np.maximum(-rays[..., 2], 1e-6)
        x_ndc = rays[..., 0] / depth / (tan_half * aspect)  # -1 .. 1 across the earlier picture, left to right
        y_ndc = rays[..., 1] / depth / tan_half             # -1 .. 1, bottom to top
        source_x = (x_ndc + 1.0) / 2.0 * w - 0.5           # pixel coordinates, centre of pixel 0 = 0
        source_y = (1.0 - y_ndc) / 2.0 * h - 0.5
        behind = rays[..., 2] >= 0
        out[j, 0] = np.where(behind, 4.0 * w, source_x - np.arange(w)[None, :])
        out[j, 1] = np.where(behind, 4.0 * h, source_y - np.arange(h)[:, None])
    return out


def measure_scaling(trajectories: Sequence[Sequence[Pose]], aspect: float, grid: tuple[int, int]) -> CameraScaling:
    """The std of each group (all components and pixels pooled) over every consecutive frame pair
    of the trajectories (any lengths >= 2)."""
    origins, directions = zip(*(_relative_rays(t, grid, aspect) for t in trajectories))
    origin_std = float(np.concatenate(origins).std())
    direction_std = float(np.concatenate([d.reshape(-1) for d in directions]).std())
    if origin_std == 0 or direction_std == 0:
        raise ValueError("the trajectories never move or never turn: no scale can be measured")
    return CameraScaling(origin_std, direction_std)
