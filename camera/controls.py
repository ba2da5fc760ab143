"""Player input -> camera motion: a pure function with a fixed time step (DESIGN section 2).

Every video frame the client hands `step` the input held during that frame; `step` returns the new
motion state and the pose to render. Nothing here reads a clock or a global, so a recorded input
stream replays to the identical poses (`replay`), which is what session replay and `--check` rely on.

How it feels:
- Keys and the left stick set a *target* velocity; the velocity eases towards it with an exponential
  of time constant `ease_time`, so motion starts and stops smoothly instead of jumping.
- WASD move in the yaw plane: forward is the yaw direction on the ground, never the pitch, so looking
  down while walking does not sink the camera. Space / C move up / down.
- The mouse turns at once (a mouse is a position device: delay feels like lag); the right stick sets
  an angular velocity that eases like the walk (a stick is a rate device: easing hides its jitter).
- Q / E roll while held, up to `max_roll`, and roll springs back to level when released, because a
  tilted horizon left behind by accident is disorienting.
"""
from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass
from typing import Callable, Sequence

import numpy as np

from camera.errors import InputError, is_number
from camera.pose import ANGLE_LIMIT, Pose

# Yaw winds on past +-180 so that motion stays continuous, but a session may hold only ANGLE_LIMIT degrees of it:
# about 2800 turns one way (a stick held for two hours, or --mouse-sensitivity 10) wrote a session that its own
# replay refused. Past this, a step takes the yaw back by whole turns.
WIND_LIMIT = ANGLE_LIMIT / 10

ACTIONS = frozenset({"forward", "back", "left", "right", "up", "down", "fast", "roll_left", "roll_right"})

Ground = Callable[[float, float], float]  # ground(x, z) -> terrain height y at that point


@dataclass(frozen=True)
class InputState:
    """What the player holds during one video frame.

    actions: held actions from ACTIONS (the client maps its keys to them).
    mouse:   (dx, dy) pixels moved since the last frame; dx > 0 = right, dy > 0 = down.
    gamepad: (lx, ly, rx, ry) stick axes in [-1, 1] as SDL reports them (ly < 0 = pushed forward).
    """
    actions: frozenset[str] = frozenset()
    mouse: tuple[float, float] = (0.0, 0.0)
    gamepad: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)

    def __post_init__(self):
        object.__setattr__(self, "actions", frozenset(self.actions))
        object.__setattr__(self, "mouse", tuple(float(v) for v in self.mouse))
        object.__setattr__(self, "gamepad", tuple(float(v) for v in self.gamepad))
        unknown = self.actions - ACTIONS
        if unknown:
            raise ValueError(f"unknown actions {sorted(unknown)}; known: {sorted(ACTIONS)}")

    def to_dict(self) -> dict:
        """JSON-friendly; floats survive json.dumps/loads exactly, so replays stay bit-identical."""
        return {"actions": sorted(self.actions), "mouse": list(self.mouse), "gamepad": list(self.gamepad)}

    @staticmethod
    def from_dict(d, source="input", field: str = "input") -> "InputState":
        """Validates a logged input; errors name `source` (e.g. 'trajectory.jsonl:12') and the field."""
        if not isinstance(d, dict):
            raise InputError(source, field, f"must be a table, got {type(d).__name__}")
        extra = set(d) - {"actions", "mouse", "gamepad"}
        if extra:
            raise InputError(source, f"{field}.{sorted(extra)[0]}", "unknown field")
        actions = d.get("actions", [])
        if not isinstance(actions, list) or not all(isinstance(a, str) for a in actions):
            raise InputError(source, f"{field}.actions", "must be a list of action names")
        unknown = sorted(set(actions) - ACTIONS)
        if unknown:
            raise InputError(source, f"{field}.actions",
                             f"unknown action {unknown[0]!r}; known: {', '.join(sorted(ACTIONS))}")
        mouse = _numbers(d.get("mouse", [0.0, 0.0]), 2, source, f"{field}.mouse", limit=None)
        gamepad = _numbers(d.get("gamepad", [0.0] * 4), 4, source, f"{field}.gamepad", limit=1.0)
        return InputState(frozenset(actions), mouse, gamepad)


def _numbers(v, n: int, source, field: str, limit: float | None) -> tuple[float, ...]:
    ok = isinstance(v, list) and len(v) == n and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v)
    if not ok:
        raise InputError(source, field, f"must be a list of {n} numbers, got {v!r}")
    if not all(is_number(x) for x in v):
        raise InputError(source, field, f"must be finite, got {v!r}")
    if limit is not None and any(abs(x) > limit for x in v):
        raise InputError(source, field, f"must be within [-{limit}, {limit}], got {v!r}")
    return tuple(float(x) for x in v)


@dataclass
class ControlSettings:
    walk_speed: float = 2.0            # m/s
    fast_multiplier: float = 2.5       # Shift
    vertical_speed: float = 1.5        # m/s, Space / C
    ease_time: float = 0.15            # s, time constant of the velocity easing
    mouse_sensitivity: float = 0.12    # degrees per pixel
    gamepad_look_speed: float = 120.0  # deg/s at full right-stick deflection
    dead_zone: float = 0.15            # stick radius treated as rest
    roll_speed: float = 60.0           # deg/s while Q / E is held
    max_roll: float = 45.0             # degrees
    roll_return_time: float = 0.2      # s, time constant of the spring back to level
    invert_y: bool = False             # True: mouse / stick down looks up
    eye_height: float = 1.7            # m above the ground where a walk starts
    min_height: float = 0.3            # m, the lowest the camera goes above the ground

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @staticmethod
    def from_dict(d, source, field: str = "controls") -> "ControlSettings":
        """Settings as a session logs them; a setting left out keeps its default. Errors name `source` and the
        field."""
        if not isinstance(d, dict):
            raise InputError(source, field, f"must be a table, got {type(d).__name__}")
        defaults = ControlSettings()
        for name, value in d.items():
            if not hasattr(defaults, name):
                raise InputError(source, f"{field}.{name}", f"unknown setting; known: "
                                 f"{', '.join(f.name for f in dataclasses.fields(ControlSettings))}")
            if isinstance(getattr(defaults, name), bool):
                if not isinstance(value, bool):
                    raise InputError(source, f"{field}.{name}", f"must be true or false, got {value!r}")
                continue
            # a stick's dead zone is a fraction of its reach; time constants divide, so never 0
            low, high = {"dead_zone": (0.0, 0.99), "min_height": (0.0, 1e4)}.get(name, (1e-6, 1e4))
            if not (is_number(value) and low <= value <= high):
                raise InputError(source, f"{field}.{name}", f"must be a number from {low:g} to {high:g}, got {value!r}")
        return dataclasses.replace(defaults, **d)


@dataclass(frozen=True)
class MotionState:
    """Everything `step` carries from frame to frame.

    velocity: world-frame m/s; with a ground function its y is the rate of change of the altitude.
    look_velocity: (yaw, pitch) deg/s from the right stick.
    altitude: height above the ground when a ground function is used; None = start at eye height.
    """
    pose: Pose
    velocity: tuple[float, float, float] = (0.0, 0.0, 0.0)
    look_velocity: tuple[float, float] = (0.0, 0.0)
    altitude: float | None = None

    @staticmethod
    def at(pose: Pose, altitude: float | None = None) -> "MotionState":
        """At rest at `pose`."""
        return MotionState(pose, altitude=altitude)


def _dead_zone(x: float, y: float, radius: float) -> np.ndarray:
    """Radial dead zone, rescaled so output still reaches 1 at full deflection. (2,)"""
    v = np.array([x, y])
    m = float(np.hypot(x, y))
    if m <= radius:
        return np.zeros(2)
    return v / m * min(1.0, (m - radius) / (1.0 - radius))


def _ease(current: np.ndarray, target: np.ndarray, a: float) -> np.ndarray:
    """Exact solution of dv/dt = (target - v) / tau over one step, a = exp(-dt / tau)."""
    return target + (current - target) * a


def mouse_look(yaw: float, pitch: float, mouse: tuple[float, float],
               settings: ControlSettings = ControlSettings()) -> tuple[float, float]:
    """(yaw, pitch) turned by mouse motion (dx, dy) pixels, as `step` turns them (the client also uses it to show a
    turn before the world has drawn it); the pitch limit is the Pose's to apply."""
    y_sign = -1.0 if settings.invert_y else 1.0
    return yaw - mouse[0] * settings.mouse_sensitivity, pitch - y_sign * mouse[1] * settings.mouse_sensitivity


# An easing this close to rest has come to rest (m/s, degrees/s, degrees): it decayed for ever, and a released key
# left the camera creeping by micrometres and a roll of 1e-194 degrees in the logs, never quite still.
SETTLED = 1e-4


def _settled(velocity: np.ndarray, target: np.ndarray) -> np.ndarray:
    """`velocity` with each component easing to a target of 0 that is within SETTLED of it set to 0."""
    return np.where((target == 0) & (np.abs(velocity) < SETTLED), 0.0, velocity)


def step(state: MotionState, inp: InputState, settings: ControlSettings = ControlSettings(),
         dt: float = 1.0 / 24.0, ground: Ground | None = None) -> tuple[MotionState, Pose]:
    """Advance one video frame. With `ground`, y = ground(x, z) + altitude and up/down change the
    altitude (never below min_height); without it, y integrates freely."""
    s, pose = settings, state.pose
    held = inp.actions.__contains__
    lx, ly, rx, ry = inp.gamepad
    y_sign = -1.0 if s.invert_y else 1.0

    # Look: the mouse turns at once, the right stick through an eased angular velocity.
    stick = _dead_zone(rx, ry, s.dead_zone)
    look_target = -stick * s.gamepad_look_speed * np.array([1.0, y_sign])  # right = yaw down, down = pitch down
    a = math.exp(-dt / s.ease_time)
    look_vel = _settled(_ease(np.array(state.look_velocity), look_target, a), look_target)
    yaw, pitch = mouse_look(pose.yaw, pose.pitch, inp.mouse, s)
    yaw, pitch = yaw + look_vel[0] * dt, pitch + look_vel[1] * dt
    if abs(yaw) > WIND_LIMIT:  # wound this far round, it is taken back by whole turns: the same view
        yaw = math.remainder(yaw, 360.0)

    roll_input = held("roll_left") - held("roll_right")  # positive roll tilts the view left
    if roll_input:
        roll = float(np.clip(pose.roll + roll_input * s.roll_speed * dt, -s.max_roll, s.max_roll))
    else:
        roll = pose.roll * math.exp(-dt / s.roll_return_time)
        roll = 0.0 if abs(roll) < SETTLED else roll

    # Move: target velocity in the yaw plane of the new heading, eased, integrated exactly.
    move = np.array([held("right") - held("left"), held("forward") - held("back")], dtype=float)
    move += _dead_zone(lx, -ly, s.dead_zone)
    move /= max(1.0, float(np.linalg.norm(move)))  # diagonals are no faster than straight lines
    speed = s.fast_multiplier if held("fast") else 1.0
    c, sn = math.cos(math.radians(yaw)), math.sin(math.radians(yaw))
    forward, right = np.array([-sn, 0.0, -c]), np.array([c, 0.0, -sn])
    target = speed * (s.walk_speed * (move[0] * right + move[1] * forward)
                      + s.vertical_speed * (held("up") - held("down")) * np.array([0.0, 1.0, 0.0]))
    v0 = np.array(state.velocity)
    velocity = _settled(_ease(v0, target, a), target)
    # Displacement = integral of the eased velocity over dt (exact, so frame rate does not change paths).
    delta = target * dt + (v0 - target) * s.ease_time * (1.0 - a)

    position = np.array(pose.position) + delta
    altitude = state.altitude
    if ground is not None:
        altitude = (s.eye_height if altitude is None else altitude) + delta[1]
        if altitude <= s.min_height:
            altitude = s.min_height
            velocity[1] = max(velocity[1], 0.0)  # pressing down at the floor stores no downward speed
        position[1] = ground(position[0], position[2]) + altitude

    new_pose = Pose(tuple(position), yaw, pitch, roll, pose.fov)
    return MotionState(new_pose, tuple(velocity), tuple(look_vel), altitude), new_pose


def replay(start: Pose, inputs: Sequence[InputState], settings: ControlSettings = ControlSettings(),
           dt: float = 1.0 / 24.0, ground: Ground | None = None, altitude: float | None = None) -> list[Pose]:
    """The poses after each input (len(inputs) poses; `start` itself is not included)."""
    state, poses = MotionState.at(start, altitude), []
    for inp in inputs:
        state, pose = step(state, inp, settings, dt, ground)
        poses.append(pose)
    return poses
