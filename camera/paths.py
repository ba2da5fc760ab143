"""Scripted camera paths: keyframes in a TOML file -> one pose per video frame (DESIGN section 5).

    [path]
    fps = 24                      # default 24
    interpolation = "catmull-rom" # or "linear"; default "catmull-rom"
    relative = false              # true: keys are offsets from the start pose (see below)

    [[path.key]]                  # at least two; t in seconds, strictly increasing, first 0 or later
    t = 0.0
    position = [0.0, 1.7, 0.0]    # position, yaw, pitch, roll, fov are optional: each defaults to the
    yaw = 0.0                     # previous key's value, and on the first key to 0, 0, 0 and 60 (a
    pitch = 0.0                   # relative path's first position defaults to [0, 0, 0] and its first
    roll = 0.0                    # fov to the start pose's; an absolute path's first key needs a
    fov = 60.0                    # position)

Interpolation: positions, fov and the Euler angles (yaw, pitch, roll) by a Catmull-Rom spline in time
(tangents from the real key times, natural ends, zero at both keys of a hold: two keys alike, and limited so
that the curve never swings past a key: between two keys it stays between their values), the rotation at
each time being the angles' (a game camera's: yaw about the vertical, then pitch, then roll); or linearly,
the rotation by scipy's Slerp, one for each run of turning segments between holds. Slerp takes the shortest
way between neighbouring rotations, so its rotation keys are the keys plus sub-keys (every MAX_SEGMENT_TURN
degrees) from the linear curve over the Euler angles. Either way
keys yaw = 0, 90, ..., 360 pan all the way round, keys 0 -> 270 turn 270 degrees left rather than 90
right, and a pan that also pitches gains no visible roll. Sampled yaw and roll keep counting past
+-180 like the keys do.

Relative paths: key positions are offsets in the start pose's yaw frame (x right, y up, -z forward)
and yaw/pitch/roll are added to the start's, so one path works on every level.
"""
from __future__ import annotations

import math
import re
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Sequence

import numpy as np
from scipy.interpolate import CubicHermiteSpline
from scipy.spatial.transform import Rotation, Slerp

from camera.errors import InputError, describe_value, is_number, read_toml, write_replacing
from camera.pose import (FOV_RANGE, PITCH_LIMIT, POSITION_LIMIT, REST_DEGREES, REST_METRES, Pose, at_rest,
                         check_pose_limits)
from levels import PATHS_DIR

INTERPOLATIONS = ("catmull-rom", "linear")
DEFAULT_FOV = 60.0
MAX_SEGMENT_TURN = 30.0  # degrees of |d yaw| + |d pitch| + |d roll| between rotation keys (must be < 180)
FPS_RANGE = (1.0, 240.0)
MIN_KEY_GAP = 1e-3       # seconds between keys: far below a frame, far above what makes a spline's slopes overflow
MAX_FRAMES = 1_000_000   # frames a path may sample (11.5 hours at 24 fps): a bound on memory and time
_PATH_FIELDS = ("fps", "interpolation", "relative", "key")
_KEY_FIELDS = ("t", "position", "yaw", "pitch", "roll", "fov")


@dataclass(frozen=True)
class Keyframe:
    t: float                                 # seconds
    position: tuple[float, float, float]     # metres (offsets in the start's yaw frame if relative)
    yaw: float = 0.0                         # degrees; may wind past +-180
    pitch: float = 0.0
    roll: float = 0.0
    fov: float | None = None                 # None: the start pose's fov (relative) or DEFAULT_FOV

    def __post_init__(self):  # plain floats, so keys compare, print and save cleanly
        object.__setattr__(self, "t", float(self.t))
        object.__setattr__(self, "position", tuple(float(v) for v in self.position))
        for name in ("yaw", "pitch", "roll") + (("fov",) if self.fov is not None else ()):
            object.__setattr__(self, name, float(getattr(self, name)))


@dataclass
class CameraPath:
    fps: float
    interpolation: str       # one of INTERPOLATIONS
    relative: bool
    keys: list[Keyframe]

    @property
    def duration(self) -> float:
        """Seconds from t = 0 to the last key."""
        return self.keys[-1].t

    def resolved(self, start: Pose | None = None) -> "CameraPath":
        """The same path with absolute keys: relative keys placed at `start` (required for them)."""
        if not self.relative:
            return replace(self, keys=[replace(k, fov=DEFAULT_FOV if k.fov is None else k.fov) for k in self.keys])
        if start is None:
            raise ValueError("a relative camera path needs a start pose (poses(start=...) / pose_at(t, start=...))")
        heading = Rotation.from_euler("Y", start.yaw, degrees=True)
        keys = [Keyframe(k.t, tuple(np.asarray(start.position) + heading.apply(k.position)),
                         start.yaw + k.yaw,
                         float(np.clip(start.pitch + k.pitch, -PITCH_LIMIT, PITCH_LIMIT)),
                         start.roll + k.roll,
                         start.fov if k.fov is None else k.fov)
                for k in self.keys]
        return replace(self, relative=False, keys=keys)

    def poses(self, fps: float | None = None, start: Pose | None = None) -> list[Pose]:
        """Poses at t = i / fps for i = 0 .. round(duration * fps), both ends included."""
        fps = self.fps if fps is None else fps
        n = round(self.duration * fps)
        positions, _, fov, euler = _interpolate(self.resolved(start), np.arange(n + 1) / fps)
        return _to_poses(positions, fov, euler)

    def pose_at(self, t: float, start: Pose | None = None) -> Pose:
        """The pose at time t; before the first key and after the last, the path holds still."""
        positions, _, fov, euler = _interpolate(self.resolved(start), np.array([float(t)]))
        return _to_poses(positions, fov, euler)[0]


def placed_poses(path: CameraPath, start: Pose, source, fps: float | None = None) -> list[Pose]:
    """path.poses(fps, start), refused (naming the path file) where a relative path placed at `start` takes the
    camera past POSITION_LIMIT: its keys are checked from the start, so one within the limit of it could land
    twice as far from the origin, where the picture breaks up in float precision."""
    poses = path.poses(fps=fps, start=start)
    far = next((i for i, pose in enumerate(poses) if np.abs(pose.position).max() > POSITION_LIMIT), None)
    if far is not None:
        where = [[round(float(v), 1) for v in pose.position] for pose in (start, poses[far])]
        raise InputError(source, keys_field(source), f"placed at the level's start {where[0]}, the camera goes to "
                         f"{where[1]} at {far / (fps or path.fps):.2f} s, past {POSITION_LIMIT:g} m from the origin")
    return poses


def keys_field(source) -> str:
    """How messages name a path file's keys: path.key in TOML; a RealEstate10K file has no such field (its
    cameras are lines, their times its timestamps)."""
    return "timestamps" if Path(str(source)).suffix.lower() == ".txt" else "path.key"


# --- interpolation -----------------------------------------------------------------------------

def _catmull_rom_tangents(t: np.ndarray, y: np.ndarray) -> np.ndarray:
    """Tangents (n, d) for values y (n, d) at times t (n,): central differences over the real time gaps inside,
    'natural' ends (zero second derivative) at the first and last key, each limited as Fritsch and Carlson's
    monotone cubic does (zero at a key where the curve turns back, at most 3x the slope of either segment beside
    it), so that between two keys the curve stays between their values. Unlimited, keys close in time and far
    apart in value swung it far past them: a quick turn then a slow drift (yaw 0, 170 in 0.05 s, 175 at 5 s)
    went on to 204 degrees, and positions went back the way they came."""
    slopes = np.diff(y, axis=0) / np.diff(t)[:, None]  # (n-1, d)
    if len(t) == 2:
        return np.repeat(slopes, 2, axis=0)
    m = np.empty_like(y)
    m[1:-1] = (y[2:] - y[:-2]) / (t[2:] - t[:-2])[:, None]
    m[1:-1] = _limited(m[1:-1], slopes[:-1], slopes[1:])
    m[0] = _limited(1.5 * slopes[0] - 0.5 * m[1], slopes[0], slopes[0])
    m[-1] = _limited(1.5 * slopes[-1] - 0.5 * m[-2], slopes[-1], slopes[-1])
    return m


def _limited(m: np.ndarray, before: np.ndarray, after: np.ndarray) -> np.ndarray:
    """Tangents m at keys between segments of slopes `before` and `after`: zero where the two slopes (or m and
    them) differ in sign, else at most 3x the smaller slope (Fritsch-Carlson: each segment then stays monotone)."""
    same = (np.sign(m) == np.sign(before)) & (np.sign(m) == np.sign(after))
    bound = 3.0 * np.minimum(np.abs(before), np.abs(after))
    return np.where(same, np.sign(m) * np.minimum(np.abs(m), bound), 0.0)


GROUPS = (slice(0, 3), slice(3, 4), slice(4, 7))  # of a key's values: position, fov, angles (yaw, pitch, roll)


def _held(values: np.ndarray, group: slice) -> np.ndarray:
    """(n-1,) bool: the segments between keys whose values in `group` are the same (a hold)."""
    return np.all(values[1:, group] == values[:-1, group], axis=1)


def _curve(times: np.ndarray, values: np.ndarray, interpolation: str):
    """values (n, d) at key times (n,) -> a function of times (m,) -> (m, d). Catmull-Rom holds still between two
    keys of the same position (or fov, or angles): their tangents are zero there, so the camera eases into the
    hold and out of it instead of swinging back past the first key and on past the second."""
    if interpolation == "linear":
        return lambda ts: np.stack([np.interp(ts, times, values[:, c]) for c in range(values.shape[1])], axis=1)
    if interpolation == "catmull-rom":
        tangents = _catmull_rom_tangents(times, values)
        for group in GROUPS:
            held = np.flatnonzero(_held(values, group))
            tangents[held, group] = tangents[held + 1, group] = 0.0
        return CubicHermiteSpline(times, values, tangents, axis=0)
    raise ValueError(f"unknown interpolation {interpolation!r}; expected one of {INTERPOLATIONS}")


def _slerped_rotations(times: np.ndarray, values: np.ndarray, curve, ts: np.ndarray) -> Rotation:
    """A linear path's rotation at times ts (m,): constant over segments whose keys have the same angles, and over
    each run of turning segments a Slerp of its own. Its rotation keys are the keys plus sub-keys (every
    MAX_SEGMENT_TURN degrees) taken from the linear curve over the Euler angles, so that neighbouring rotations
    are close: the shortest way between them (all Slerp knows) is then the intended one, and the rotation adds no
    visible roll to a pan that also pitches."""
    held = _held(values, GROUPS[2])
    segment = np.clip(np.searchsorted(times, ts, side="right") - 1, 0, len(times) - 2)  # (m,)
    quats = np.empty((len(ts), 4))
    first = 0
    while first < len(held):
        last = first
        while last + 1 < len(held) and held[last + 1] == held[first]:
            last += 1
        here = (segment >= first) & (segment <= last)  # a run of segments first .. last, all held or all turning
        if held[first]:
            quats[here] = Rotation.from_euler("YXZ", values[first, 4:], degrees=True).as_quat()
        elif here.any():
            rot_times = [times[first:first + 1]]
            for j in range(first, last + 1):
                a, b = times[j], times[j + 1]
                turn = np.abs(values[j + 1, 4:] - values[j, 4:]).sum()  # degrees
                rot_times.append(np.linspace(a, b, math.ceil(turn / MAX_SEGMENT_TURN) + 1)[1:])
            rot_times = np.concatenate(rot_times)
            rotations = Rotation.from_euler("YXZ", curve(rot_times)[:, 4:], degrees=True)
            quats[here] = Slerp(rot_times, rotations)(ts[here]).as_quat()
        first = last + 1
    return Rotation.from_quat(quats)


def _interpolate(path: CameraPath, ts: np.ndarray):
    """Sample an absolute path at times ts (m,): positions (m, 3), rotations (m), fov (m,), and
    Euler angles (m, 3: yaw, pitch, roll) with yaw and roll wound like the keys."""
    keys = path.keys
    ts = np.clip(ts, keys[0].t, keys[-1].t)
    times = np.array([k.t for k in keys])
    values = np.array([[*k.position, k.fov, k.yaw, k.pitch, k.roll] for k in keys], dtype=float)  # (n, 7)
    spline = _curve(times, values, path.interpolation)

    def curve(at: np.ndarray) -> np.ndarray:  # (within the keys' values: the pitch within its limits, but for
        sampled = spline(at)                  # rounding)
        sampled[:, 5] = np.clip(sampled[:, 5], -PITCH_LIMIT, PITCH_LIMIT)
        return sampled

    sampled = curve(ts)  # (m, 7)
    if path.interpolation == "catmull-rom":
        # The rotation at each time is the curve's: a RotationSpline through the keys and sub-keys of the curve
        # kept a quick turn's speed into a slow segment after it (a turn of 170 degrees in 0.05 s went on 377
        # degrees past its key; a quick look up turned over to look at the ground for 2.7 s).
        return sampled[:, :3], Rotation.from_euler("YXZ", sampled[:, 4:], degrees=True), sampled[:, 3], sampled[:, 4:]
    rot = _slerped_rotations(times, values, curve, ts)
    euler = rot.as_euler("YXZ", degrees=True)  # yaw, roll in (-180, 180]
    # Near straight up or down, the rotation spline can still swing a little past the vertical: the camera turned
    # over, which reads as yaw and roll half a turn from the curve's. Such a frame is held at the pitch limit.
    over = np.abs((euler[:, 2] - sampled[:, 6] + 180.0) % 360.0 - 180.0) > 90.0
    if over.any():
        euler[over] = np.stack([euler[over, 0] + 180.0, np.sign(euler[over, 1]) * PITCH_LIMIT,
                                euler[over, 2] + 180.0], axis=1)
        quats = rot.as_quat()
        quats[over] = Rotation.from_euler("YXZ", euler[over], degrees=True).as_quat()
        rot = Rotation.from_quat(quats)
    for c in (0, 2):  # bring yaw and roll to the winding of the Euler curve
        reference = sampled[:, 4 + c]
        euler[:, c] += 360.0 * np.round((reference - euler[:, c]) / 360.0)
    return sampled[:, :3], rot, sampled[:, 3], euler


def _to_poses(positions, fov, euler) -> list[Pose]:
    return [Pose(tuple(p), e[0], e[1], e[2], f) for p, f, e in zip(positions, fov, euler)]


# --- from dense poses --------------------------------------------------------------------------

def keys_from_poses(times: Sequence[float], poses: Sequence[Pose]) -> list[Keyframe]:
    """One key per pose, yaw and roll unwrapped (a pose list that wraps 179 -> -179 keeps turning
    the short way instead of being read as a 358-degree turn)."""
    a = np.array([p.to_array() for p in poses])  # (n, 7): x, y, z, yaw, pitch, roll, fov
    a[:, 3] = np.unwrap(a[:, 3], period=360.0)
    a[:, 5] = np.unwrap(a[:, 5], period=360.0)
    return [Keyframe(float(t), tuple(r[:3]), r[3], r[4], r[5], r[6]) for t, r in zip(times, a)]


def relative_to_first(keys: Sequence[Keyframe]) -> list[Keyframe]:
    """Absolute keys as a relative path's, the first at the start: CameraPath.resolved(start) inverted, so that
    resolving them at the first key's pose gives the keys back."""
    first = keys[0]
    heading = Rotation.from_euler("Y", first.yaw, degrees=True)
    return [Keyframe(k.t, tuple(heading.inv().apply(np.subtract(k.position, first.position))), k.yaw - first.yaw,
                     k.pitch - first.pitch, k.roll - first.roll, k.fov) for k in keys]


def path_from_poses(poses: Sequence[Pose], fps: float = 24.0, tolerance_m: float = 0.05,
                    tolerance_deg: float = 0.5, interpolation: str | None = None) -> CameraPath:
    """Reduce a dense pose list (one per frame at `fps`) to keyframes.

    Guarantee: resampled at `fps`, the returned path is within `tolerance_m` metres of every input
    position and within `tolerance_deg` degrees of every input orientation (the angle of the
    relative rotation) and fov. Refinement from the two end poses: while some frame is out of
    tolerance, add the worst frame of every offending segment (Douglas-Peucker on time, but checked
    against the real spline, whose tangents reach across neighbouring keys).

    Where the camera stands still (frames within half the rest bounds of the one the standstill starts
    at, `at_rest`), the path follows it within a quarter of them, not the tolerance, and so stays at rest
    there: a camera at rest does not run the generated world, and a path that crept a centimetre over a
    standstill had the world make new frames where play had held its picture.

    interpolation None tries both and keeps the one with fewer keys (Catmull-Rom on a tie): played
    sessions turn with the mouse, whose kinks linear paths follow with one key each while Catmull-Rom
    rounds them off; smooth motion is the other way round."""
    if len(poses) < 2:
        raise ValueError("path_from_poses needs at least two poses")
    if interpolation is None:
        return min((path_from_poses(poses, fps, tolerance_m, tolerance_deg, i) for i in INTERPOLATIONS),
                   key=lambda p: len(p.keys))
    times = np.arange(len(poses)) / fps
    every = keys_from_poses(times, poses)
    true_pos = np.array([p.position for p in poses])
    true_rot = Rotation.concatenate([p.rotation() for p in poses])
    true_fov = np.array([p.fov for p in poses])
    still, start = np.zeros(len(poses), bool), 0
    for i in range(1, len(poses)):
        if at_rest(poses[start], [poses[i]], within=0.5):
            still[start] = still[i] = True
        else:
            start = i
    metres = np.where(still, REST_METRES / 4, tolerance_m)
    degrees = np.where(still, REST_DEGREES / 4, tolerance_deg)
    chosen = [0, len(poses) - 1]
    while True:
        path = CameraPath(fps, interpolation, False, [every[i] for i in chosen])
        pos, rot, fov, _ = _interpolate(path, times)
        error = np.maximum.reduce([
            np.linalg.norm(pos - true_pos, axis=1) / metres,
            np.degrees((rot.inv() * true_rot).magnitude()) / degrees,
            np.abs(fov - true_fov) / degrees])  # (n,) in units of the tolerance
        worst = [a + int(np.argmax(error[a:b + 1])) for a, b in zip(chosen[:-1], chosen[1:])]
        worst = [i for i in worst if error[i] > 1.0]
        if not worst:
            return path
        chosen = sorted(chosen + worst)


# --- files -------------------------------------------------------------------------------------

def load_path(file) -> CameraPath:
    """A camera path from a TOML file, or from a RealEstate10K camera file (.txt); a shipped path also goes by its
    name (`walk`: levels/paths/walk.toml), from any folder, as a shipped level does."""
    text = str(file)
    file = Path(text)
    if re.fullmatch(r"[A-Za-z0-9_-]{1,64}", text):  # a bare name, not a file: no suffix, no folder
        shipped = sorted(p.stem for p in PATHS_DIR.glob("*.toml"))
        if text not in shipped:
            raise InputError(text, None, f"no such camera path (shipped paths: {', '.join(shipped)}; or give a "
                             ".toml or RealEstate10K .txt file)")
        file = PATHS_DIR / f"{text}.toml"
    if file.suffix.lower() == ".txt":
        from camera.realestate import load_realestate  # realestate builds on this module
        return load_realestate(file)
    if file.suffix.lower() != ".toml":
        raise InputError(file, None, "unknown camera path type (expected .toml or a RealEstate10K .txt)")
    return parse_path(read_toml(file), file)


def parse_path(data: dict, source) -> CameraPath:
    """Validate a decoded TOML document; errors name `source` and the dotted field."""
    _known(data, ("path",), source, "")
    p = data.get("path")
    if not isinstance(p, dict):
        raise InputError(source, "path", "missing [path] table")
    _known(p, _PATH_FIELDS, source, "path.")
    fps = _number(p.get("fps", 24.0), source, "path.fps")
    interpolation = p.get("interpolation", "catmull-rom")
    if interpolation not in INTERPOLATIONS:
        raise InputError(source, "path.interpolation",
                         f"must be one of {', '.join(INTERPOLATIONS)}, got {interpolation!r}")
    relative = p.get("relative", False)
    if not isinstance(relative, bool):
        raise InputError(source, "path.relative", f"must be true or false, got {relative!r}")
    raw = p.get("key", [])
    if not isinstance(raw, list):
        raise InputError(source, "path.key", f"must be [[path.key]] tables, got {describe_value(raw)}")
    if len(raw) < 2:
        raise InputError(source, "path.key", "needs at least two [[path.key]] entries")
    keys: list[Keyframe] = []
    for i, k in enumerate(raw):
        keys.append(_parse_key(k, keys[-1] if keys else None, source, f"path.key[{i}]", relative))
    if not relative:  # a relative path's missing first fovs stay None: the start pose's fov
        keys = [replace(k, fov=DEFAULT_FOV if k.fov is None else k.fov) for k in keys]
    return check_path(CameraPath(fps, interpolation, relative, keys), source)


def check_path(path: CameraPath, source, keys_field: str = "path.key", fps_field: str = "path.fps",
               key_field=lambda i: f"path.key[{i}]", member: str = "{}.{}") -> CameraPath:
    """The limits on every kind of path file: fps, fov, and those that keep sampling a path finite in
    time and memory: the number of frames, positions, and how far yaw and roll wind (each
    MAX_SEGMENT_TURN degrees of turn is a rotation key). key_field(i) names key i in messages, `member` a value
    of it (check_pose_limits)."""
    lo, hi = FPS_RANGE
    if not lo <= path.fps <= hi:
        raise InputError(source, fps_field, f"must be between {lo:g} and {hi:g} frames per second, got {path.fps:g}")
    frames = round(path.duration * path.fps) + 1  # as many as poses() samples: both ends
    if frames == 1:  # its last key would never be shown
        raise InputError(source, keys_field, f"the path lasts {path.duration:g} s, less than half a frame at "
                         f"{path.fps:g} fps: at least {0.5 / path.fps:g} s are needed to show more than its start")
    if frames > MAX_FRAMES:
        raise InputError(source, keys_field, f"the path lasts {path.duration:g} s, {frames:,.0f} frames at "
                         f"{path.fps:g} fps; at most {MAX_FRAMES:,} are allowed")
    for i, k in enumerate(path.keys):
        check_pose_limits(source, key_field(i), k.position, k.yaw, k.roll, k.fov, member)
    turn = sum(abs(b.yaw - a.yaw) + abs(b.pitch - a.pitch) + abs(b.roll - a.roll)
               for a, b in zip(path.keys[:-1], path.keys[1:]))
    if turn / MAX_SEGMENT_TURN > MAX_FRAMES:
        raise InputError(source, keys_field, f"the keys turn {turn:.3g} degrees in all; at most "
                         f"{MAX_FRAMES * MAX_SEGMENT_TURN:g} are allowed")
    return path


def _parse_key(k, prev: Keyframe | None, source, field: str, relative: bool) -> Keyframe:
    if not isinstance(k, dict):
        raise InputError(source, field, "must be a table")
    _known(k, _KEY_FIELDS, source, field + ".")
    if "t" not in k:
        raise InputError(source, f"{field}.t", "missing")
    t = _number(k["t"], source, f"{field}.t")
    if t < 0:
        raise InputError(source, f"{field}.t", f"must be 0 or later, got {t}")
    if prev is not None and t <= prev.t:
        raise InputError(source, f"{field}.t", f"times must increase ({t} after {prev.t})")
    if prev is not None and t - prev.t < MIN_KEY_GAP:  # closer keys make the spline's slopes overflow
        raise InputError(source, f"{field}.t", f"keys must be at least {MIN_KEY_GAP * 1000:g} ms apart "
                         f"({t} after {prev.t})")
    if "position" not in k and prev is None and not relative:
        raise InputError(source, f"{field}.position", "missing: an absolute path's first key needs a position "
                         "(a relative path's first key defaults to [0, 0, 0], the start itself)")
    position = k.get("position", list(prev.position) if prev else [0.0, 0.0, 0.0])  # like the angles: stays put
    if not (isinstance(position, list) and len(position) == 3):
        raise InputError(source, f"{field}.position", f"must be a list [x, y, z], got {position!r}")
    position = tuple(_number(v, source, f"{field}.position[{j}]") for j, v in enumerate(position))

    def angle(name: str) -> float:  # defaults to the previous key's value, or 0 on the first key
        return _number(k.get(name, getattr(prev, name) if prev else 0.0), source, f"{field}.{name}")

    pitch = angle("pitch")
    if abs(pitch) > PITCH_LIMIT:
        raise InputError(source, f"{field}.pitch", f"must be within [-{PITCH_LIMIT:g}, {PITCH_LIMIT:g}], got {pitch}")
    fov = k.get("fov", prev.fov if prev else None)
    if fov is not None:
        fov = _number(fov, source, f"{field}.fov")  # its range: check_path
    return Keyframe(t, position, angle("yaw"), pitch, angle("roll"), fov)


def _known(table: dict, allowed: Sequence[str], source, prefix: str) -> None:
    for name in table:
        if name not in allowed:
            raise InputError(source, prefix + name, f"unknown field (known: {', '.join(allowed)})")


def _number(v, source, field: str) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float)):
        raise InputError(source, field, f"must be a number, got {describe_value(v)}")
    if not is_number(v):
        raise InputError(source, field, f"must be a finite number, got {v!r}")
    return float(v)


def save_path(path: CameraPath, file, field: str = "--out") -> None:
    """Write a readable TOML file that load_path reads back to the same path (floats by repr). A write that fails
    (a full disk) is an InputError naming `file` and `field`, the option that named it."""
    lines = ["# camera path for explorer render --path (the format: the README, \"Camera paths\")", "[path]",
             f"fps = {float(path.fps)!r}", f'interpolation = "{path.interpolation}"',
             f"relative = {'true' if path.relative else 'false'}"]
    for k in path.keys:
        lines += ["", "[[path.key]]", f"t = {float(k.t)!r}",
                  f"position = [{', '.join(repr(float(v)) for v in k.position)}]",
                  f"yaw = {float(k.yaw)!r}", f"pitch = {float(k.pitch)!r}", f"roll = {float(k.roll)!r}"]
        if k.fov is not None:
            lines.append(f"fov = {float(k.fov)!r}")
    # Written whole, then renamed, by the one helper that also cleans up: on a full disk the older file stays and
    # no partial file is left behind (one was, empty, with a traceback).
    text = "\n".join(lines) + "\n"
    write_replacing(file, lambda partial: partial.write_text(text), field)
