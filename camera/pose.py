"""Camera pose and its conventions (DESIGN section 2).

Right-handed world, +Y up, metres and degrees. At yaw = pitch = roll = 0 the camera looks along -Z.
Positive yaw turns left (counter-clockwise seen from above, i.e. about +Y), positive pitch looks up
(about the camera's +X), roll turns about the viewing axis. Pitch is clamped to [-89, 89].
The camera frame is OpenGL's: +X right, +Y up, -Z forward. All rotation maths goes through scipy.
"""
from __future__ import annotations

import math
from dataclasses import dataclass, field, replace

import numpy as np
from scipy.spatial.transform import Rotation

PITCH_LIMIT = 89.0
# Bounds on what a file may say (levels, paths, sessions): far beyond any walk, and they keep the work finite.
POSITION_LIMIT = 1e5  # metres from the origin
ANGLE_LIMIT = 1e6     # degrees of yaw or roll, which wind past +-180
FOV_RANGE = (1.0, 179.0)  # degrees of vertical field of view


def check_pose_limits(source, field: str, position, yaw: float, roll: float, fov: float | None,
                      member: str = "{}.{}") -> None:
    """The bounds above, for a pose in a path key or a session line (numbers already): an InputError naming
    `field`.position / .yaw / .roll / .fov otherwise (`member` joins the two: "{} ({})" gives "line 3 (fov)").
    (Pitch has its own clamp, checked where it is read.)"""
    from camera.errors import InputError
    if max(abs(v) for v in position) > POSITION_LIMIT:
        raise InputError(source, member.format(field, "position"), f"must be within {POSITION_LIMIT:g} m of the "
                         f"origin, got {list(position)}")
    for name, value in (("yaw", yaw), ("roll", roll)):
        if abs(value) > ANGLE_LIMIT:
            raise InputError(source, member.format(field, name), f"must be within {ANGLE_LIMIT:g} degrees, got "
                             f"{value:g}")
    if fov is not None and not FOV_RANGE[0] <= fov <= FOV_RANGE[1]:
        raise InputError(source, member.format(field, "fov"), f"must be between {FOV_RANGE[0]:g} and "
                         f"{FOV_RANGE[1]:g} degrees, got {fov:g}")


def heading(angle: float) -> float:
    """A wound angle (yaw keeps counting past +-180 so that motion stays continuous) as a compass reading in
    (-180, 180], for people: the HUD."""
    wrapped = math.fmod(angle, 360.0)
    if wrapped > 180.0:
        wrapped -= 360.0
    elif wrapped <= -180.0:
        wrapped += 360.0
    return wrapped


REST_METRES, REST_DEGREES = 1e-3, 0.02  # a camera that stays this close to a pose is at rest there


def at_rest(there: Pose, poses, within: float = 1.0) -> bool:
    """Whether every pose in `poses` is where `there` is, within REST_METRES and REST_DEGREES (position, yaw, pitch,
    roll, fov), or that fraction `within` of them: the worlds are static, so a camera at rest sees the same picture."""
    def angle(a: float, b: float) -> float:
        return abs((a - b + 180.0) % 360.0 - 180.0)
    metres, degrees = REST_METRES * within, REST_DEGREES * within
    return all(np.abs(np.subtract(p.position, there.position)).max() < metres
               and max(angle(p.yaw, there.yaw), angle(p.pitch, there.pitch), angle(p.roll, there.roll),
                       abs(p.fov - there.fov)) < degrees for p in poses)


@dataclass(frozen=True)
class Pose:
    position: tuple[float, float, float] = (0.0, 0.0, 0.0)
    yaw: float = 0.0
    pitch: float = 0.0
    roll: float = 0.0
    fov: float = 60.0  # vertical field of view, degrees

    def __post_init__(self):
        object.__setattr__(self, "position", tuple(float(v) for v in self.position))
        object.__setattr__(self, "pitch", float(np.clip(self.pitch, -PITCH_LIMIT, PITCH_LIMIT)))
        object.__setattr__(self, "yaw", float(self.yaw))
        object.__setattr__(self, "roll", float(self.roll))
        object.__setattr__(self, "fov", float(self.fov))

    # --- orientation -------------------------------------------------------------------------
    def rotation(self) -> Rotation:
        """Camera-to-world rotation: intrinsic yaw about Y, then pitch about X, then roll about Z."""
        return Rotation.from_euler("YXZ", [self.yaw, self.pitch, self.roll], degrees=True)

    @staticmethod
    def from_rotation(position, rotation: Rotation, fov: float = 60.0) -> "Pose":
        yaw, pitch, roll = rotation.as_euler("YXZ", degrees=True)
        return Pose(tuple(position), yaw, pitch, roll, fov)

    @property
    def forward(self) -> np.ndarray:
        return self.rotation().apply([0.0, 0.0, -1.0])

    @property
    def right(self) -> np.ndarray:
        return self.rotation().apply([1.0, 0.0, 0.0])

    @property
    def up(self) -> np.ndarray:
        return self.rotation().apply([0.0, 1.0, 0.0])

    # --- matrices ----------------------------------------------------------------------------
    def camera_to_world(self) -> np.ndarray:
        """4x4 float64 matrix taking camera-frame points (OpenGL convention) to world points."""
        m = np.eye(4)
        m[:3, :3] = self.rotation().as_matrix()
        m[:3, 3] = self.position
        return m

    def world_to_camera(self) -> np.ndarray:
        """4x4 view matrix (the inverse of camera_to_world)."""
        r = self.rotation().as_matrix()
        m = np.eye(4)
        m[:3, :3] = r.T
        m[:3, 3] = -r.T @ np.asarray(self.position)
        return m

    def projection(self, aspect: float, near: float = 0.05, far: float = 500.0) -> np.ndarray:
        """4x4 OpenGL perspective matrix for this pose's vertical fov."""
        f = 1.0 / np.tan(np.radians(self.fov) / 2.0)
        p = np.zeros((4, 4))
        p[0, 0] = f / aspect
        p[1, 1] = f
        p[2, 2] = (far + near) / (near - far)
        p[2, 3] = 2.0 * far * near / (near - far)
        p[3, 2] = -1.0
        return p

    def intrinsics(self, width: int, height: int) -> np.ndarray:
        """3x3 pinhole intrinsics in pixels (fx, fy, cx, cy), square pixels, principal point at the centre."""
        fy = 0.5 * height / np.tan(np.radians(self.fov) / 2.0)
        return np.array([[fy, 0.0, width / 2.0], [0.0, fy, height / 2.0], [0.0, 0.0, 1.0]])

    # --- serialisation -----------------------------------------------------------------------
    def to_dict(self) -> dict:
        return {"position": list(self.position), "yaw": self.yaw, "pitch": self.pitch,
                "roll": self.roll, "fov": self.fov}

    @staticmethod
    def from_dict(d: dict) -> "Pose":
        return Pose(tuple(d["position"]), d.get("yaw", 0.0), d.get("pitch", 0.0), d.get("roll", 0.0),
                    d.get("fov", 60.0))

    def to_array(self) -> np.ndarray:
        """(7,) float64: x, y, z, yaw, pitch, roll, fov."""
        return np.array([*self.position, self.yaw, self.pitch, self.roll, self.fov], dtype=np.float64)

    @staticmethod
    def from_array(a) -> "Pose":
        a = [float(v) for v in a]
        return Pose((a[0], a[1], a[2]), a[3], a[4], a[5], a[6])

    def moved(self, **changes) -> "Pose":
        return replace(self, **changes)
