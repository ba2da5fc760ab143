"""RealEstate10K camera files <-> camera paths.

The format: the first line is the video's URL (read as a camera line if it is one: a file cut from a longer
one may lack it); then one line per frame with 19 numbers:
    timestamp_us  fx fy cx cy  0 0  r00 r01 r02 t0  r10 r11 r12 t1  r20 r21 r22 t2
intrinsics normalised by the image width (fx, cx) and height (fy, cy), then the 3x4 world-to-camera
matrix, row-major, for an OpenCV camera (+x right, +y down, +z forward).

Our camera is OpenGL's (+y up, -z forward). The flip F = diag(1, -1, -1) turns one into the other,
and we apply it to the world too (RealEstate10K worlds come from SLAM in the same OpenCV axes, y
down), so C2W_ours = F @ C2W_cv @ F: a camera with the identity matrix is our rest pose at the
origin, looking along -Z with +Y up. Translations keep the file's (arbitrary, per-video) scale.

The origin is as arbitrary as the scale, so the path is relative: its first camera is the level's start pose,
and the others are placed from there as a relative TOML path's keys are (offsets in the first camera's yaw frame,
angle differences). Read absolute, a file would start wherever its SLAM origin falls: in a level, in the ground.
"""
from __future__ import annotations

import math
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.spatial.transform import Rotation

from camera.errors import InputError, read_text
from camera.paths import CameraPath, check_path, keys_from_poses, relative_to_first
from camera.pose import PITCH_LIMIT, Pose

_FLIP = np.diag([1.0, -1.0, -1.0, 1.0])  # OpenCV <-> OpenGL axes, for cameras and for the world
_ORTHONORMAL_TOLERANCE = 1e-2  # the files print matrices with about six digits
PITCH_SLACK = 1e-3  # degrees past the pitch limit that six printed digits can put a camera at the limit


def load_realestate(file, aspect: float = 16 / 9) -> CameraPath:
    """A linear camera path with one key per line, fps from the median timestamp step.

    aspect: the source video's width / height. The vertical focal length is the mean of fy and
    fx * aspect (equal for square pixels; the mean halves the rounding noise of either), and the
    vertical fov follows from it."""
    file = Path(file)
    lines = read_text(file).splitlines()
    # A file cut from a longer one may lack the URL line: a first line that starts with a number is a camera's
    # (and a damaged one is said, not skipped as if it were the URL).
    first = 0 if lines and _starts_with_number(lines[0]) else 1
    rows = [(n, line) for n, line in enumerate(lines[first:], start=first + 1) if line.strip()]
    if len(rows) < 2:
        raise InputError(file, None, "needs a URL line and at least two camera lines")
    timestamps, poses = [], []
    for n, line in rows:
        v = _parse_line(line, file, n)
        if timestamps and v[0] <= timestamps[-1]:
            raise InputError(file, f"line {n}", f"timestamps must increase ({v[0]:.0f} after {timestamps[-1]:.0f})")
        timestamps.append(v[0])
        poses.append(_pose(v, aspect, file, n))
    timestamps = np.array(timestamps)
    fps = 1e6 / float(np.median(np.diff(timestamps)))
    keys = relative_to_first(keys_from_poses((timestamps - timestamps[0]) / 1e6, poses))
    return check_path(CameraPath(fps, "linear", True, keys), file, keys_field="timestamps", fps_field="timestamps",
                      key_field=lambda i: f"line {rows[i][0]}", member="{} ({})")  # "line 3 (fov)", as columns are


COLUMNS = ("timestamp", "fx", "fy", "cx", "cy", "column 6", "column 7",
           *(f"r{i}{j}" if j < 3 else f"t{i}" for i in range(3) for j in range(4)))  # the 3x4 matrix, row-major


def _starts_with_number(line: str) -> bool:
    parts = line.split()
    try:
        float(parts[0])
        return True
    except (IndexError, ValueError):
        return False


def _parse_line(line: str, file, n: int) -> np.ndarray:
    parts = line.split()
    if len(parts) != 19:
        raise InputError(file, f"line {n}",
                         f"expected 19 numbers (timestamp, fx fy cx cy, 0 0, 3x4 matrix), got {len(parts)}")
    values = []
    for column, part in zip(COLUMNS, parts):
        try:
            value = float(part)
        except ValueError:
            value = None
        if value is None or not math.isfinite(value):
            raise InputError(file, f"line {n} ({column})", f"must be a finite number, got {part[:40]!r}")
        values.append(value)
    return np.array(values)


def _pose(v: np.ndarray, aspect: float, file, n: int) -> Pose:
    fx, fy = v[1], v[2]
    if fx <= 0 or fy <= 0:
        raise InputError(file, f"line {n}", f"focal lengths must be positive, got fx={fx}, fy={fy}")
    w2c = np.eye(4)
    w2c[:3] = v[7:19].reshape(3, 4)
    r = w2c[:3, :3]
    if np.abs(r @ r.T - np.eye(3)).max() > _ORTHONORMAL_TOLERANCE or np.linalg.det(r) < 0:
        raise InputError(file, f"line {n}", "the 3x3 part of the matrix is not a rotation")
    c2w = _FLIP @ np.linalg.inv(w2c) @ _FLIP
    focal = 0.5 * (fy + fx * aspect)  # vertical focal length / image height
    fov = math.degrees(2.0 * math.atan(0.5 / focal))
    rotation = Rotation.from_matrix(c2w[:3, :3])
    # The pitch is the forward axis's (-Z's) height, read before the Euler angles: looking straight up or down, yaw
    # and roll are one (scipy warns of a gimbal lock), and a TOML path's pitch is refused there too.
    pitch = math.degrees(math.asin(float(np.clip(-rotation.as_matrix()[1, 2], -1.0, 1.0))))
    if abs(pitch) > PITCH_LIMIT + PITCH_SLACK:
        raise InputError(file, f"line {n} (pitch)", f"the camera's pitch must be within [-{PITCH_LIMIT:g}, "
                         f"{PITCH_LIMIT:g}] degrees, got {pitch:.6g}")
    return Pose.from_rotation(c2w[:3, 3], rotation, fov)


def save_realestate(poses: Sequence[Pose], timestamps_us: Sequence[int], file, aspect: float = 16 / 9,
                    url: str = "") -> None:
    """Write poses as a RealEstate10K camera file (principal point at the centre, square pixels)."""
    if len(poses) != len(timestamps_us):
        raise ValueError(f"{len(poses)} poses but {len(timestamps_us)} timestamps")
    lines = [url]
    for pose, ts in zip(poses, timestamps_us):
        fy = 0.5 / math.tan(math.radians(pose.fov) / 2.0)
        w2c = np.linalg.inv(_FLIP @ pose.camera_to_world() @ _FLIP)
        numbers = [fy / aspect, fy, 0.5, 0.5, 0.0, 0.0, *w2c[:3].ravel()]
        lines.append(" ".join([str(int(ts))] + [repr(float(x)) for x in numbers]))
    Path(file).write_text("\n".join(lines) + "\n")
