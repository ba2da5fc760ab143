"""Camera motion like a person playing, for training data and evaluation.

`random_inputs` writes a script of segments, each 0.3-3 s of one behaviour (walk, strafe, stop, turn
with the mouse at varied speeds, look up or down, run, turn around, back up, drift with the
gamepad, rise or sink, and combinations such as walking while turning); `random_trajectory`
replays it through camera.controls, so training clips move exactly as the game moves: the same
easing, the same mouse response, the same limits. Mouse moves follow a bell-shaped speed profile
with a little hand tremor, as a hand does. The script keeps track of the pitch and height it has
asked for, so looks head back towards the horizon and rises and sinks stay within about a metre.

`yaw_trajectory` and `forward_trajectory` are pure motions for measuring camera adherence.
Everything is deterministic in the numpy Generator it is given.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from camera.controls import ControlSettings, Ground, InputState, replay
from camera.pose import Pose

# behaviour -> relative frequency
BEHAVIOURS = {"walk": 3.0, "walk_turn": 3.0, "stop": 2.0, "turn": 2.0, "look": 1.5, "strafe": 1.5,
              "strafe_turn": 1.0, "run": 1.0, "turn_around": 0.7, "back": 0.5, "gamepad": 1.0, "vertical": 0.4}
TREMOR_PX = 0.4        # std of hand tremor on the mouse, pixels per frame
PITCH_RANGE = 40.0     # looks aim at pitches within +-this many degrees
HEIGHT_RANGE = (-0.6, 1.2)  # metres of rise and sink the script allows relative to the start
VERTICAL_STEP = 0.6    # metres one rise or sink segment moves


@dataclass(frozen=True)
class _Segment:
    frames: int
    actions: frozenset[str] = frozenset()
    turn: float = 0.0    # degrees of yaw over the segment, positive = left
    tilt: float = 0.0    # degrees of pitch over the segment, positive = up
    gamepad: tuple[float, float, float, float] = (0.0, 0.0, 0.0, 0.0)
    tremor: bool = True  # False: hands off, the camera comes fully to rest


def _segment(kind: str, rng: np.random.Generator, fps: float, pitch: float, height: float,
             settings: ControlSettings) -> _Segment:
    frames = max(1, round(rng.uniform(0.3, 3.0) * fps))
    left_or_right = float(rng.choice([-1.0, 1.0]))
    if kind == "walk":
        return _Segment(frames, frozenset({"forward"}), turn=rng.normal(0.0, 8.0))
    if kind == "walk_turn":
        return _Segment(frames, frozenset({"forward"}), turn=left_or_right * rng.uniform(20.0, 120.0))
    if kind == "stop":
        return _Segment(frames, tremor=bool(rng.random() < 0.5))
    if kind == "turn":  # the same angle over a random duration: slow pans and quick glances
        return _Segment(frames, turn=left_or_right * rng.uniform(15.0, 180.0))
    if kind == "look":
        return _Segment(frames, tilt=rng.uniform(-PITCH_RANGE, PITCH_RANGE) - pitch, turn=rng.normal(0.0, 15.0))
    if kind == "strafe":
        return _Segment(frames, frozenset({"left" if left_or_right > 0 else "right"}))
    if kind == "strafe_turn":  # circling something: strafe one way, turn the other
        return _Segment(frames, frozenset({"right" if left_or_right > 0 else "left"}),
                        turn=left_or_right * rng.uniform(20.0, 90.0))
    if kind == "run":
        return _Segment(frames, frozenset({"forward", "fast"}), turn=rng.normal(0.0, 20.0))
    if kind == "turn_around":
        return _Segment(round(rng.uniform(0.5, 1.0) * fps), turn=left_or_right * 180.0)
    if kind == "back":
        return _Segment(min(frames, round(1.5 * fps)), frozenset({"back"}))
    if kind == "gamepad":  # the left stick walks, not quite straight; the right stick turns
        return _Segment(frames, gamepad=(rng.uniform(-0.3, 0.3), -rng.uniform(0.3, 1.0), rng.uniform(-0.6, 0.6), 0.0))
    if kind == "vertical":
        can_rise, can_sink = height + VERTICAL_STEP <= HEIGHT_RANGE[1], height - VERTICAL_STEP >= HEIGHT_RANGE[0]
        up = can_rise and (not can_sink or rng.random() < 0.5)
        return _Segment(round(VERTICAL_STEP / settings.vertical_speed * fps), frozenset({"up" if up else "down"}))
    raise ValueError(f"unknown behaviour {kind!r}")


def random_inputs(rng: np.random.Generator, n_frames: int, settings: ControlSettings | None = None,
                  fps: float = 24.0) -> list[InputState]:
    """n_frames inputs of a random play script. `settings` turns degrees into mouse pixels (its
    sensitivity and invert_y) and sets the vertical speed; the defaults are the game's."""
    settings = settings or ControlSettings()
    y_sign = -1.0 if settings.invert_y else 1.0
    kinds, weights = list(BEHAVIOURS), np.array(list(BEHAVIOURS.values()))
    inputs: list[InputState] = []
    pitch = height = 0.0  # what the script has asked for so far, relative to the start
    while len(inputs) < n_frames:
        seg = _segment(str(rng.choice(kinds, p=weights / weights.sum())), rng, fps, pitch, height, settings)
        n = seg.frames
        profile = np.sin(np.pi * (np.arange(n) + 0.5) / n) ** 2
        profile /= profile.sum()  # (n,) bell-shaped, sums to 1
        noise = rng.normal(0.0, TREMOR_PX, (2, n)) if seg.tremor else np.zeros((2, n))
        dx = -seg.turn / settings.mouse_sensitivity * profile + noise[0]  # mouse right turns right
        dy = y_sign * (-seg.tilt / settings.mouse_sensitivity * profile + noise[1])  # the same looks if inverted
        inputs += [InputState(seg.actions, (dx[i], dy[i]), seg.gamepad) for i in range(n)]
        pitch += seg.tilt
        height += settings.vertical_speed * n / fps * (("up" in seg.actions) - ("down" in seg.actions))
    return inputs[:n_frames]


def random_trajectory(rng: np.random.Generator, n_frames: int, start: Pose, settings: ControlSettings | None = None,
                      ground: Ground | None = None, fps: float = 24.0) -> list[Pose]:
    """n_frames poses, the first being `start`, the rest the replay of random_inputs. With `ground`,
    the camera keeps the start's height above the ground (up/down change it)."""
    settings = settings or ControlSettings()
    altitude = None if ground is None else start.position[1] - ground(start.position[0], start.position[2])
    inputs = random_inputs(rng, n_frames - 1, settings, fps)
    return [start] + replay(start, inputs, settings, 1.0 / fps, ground, altitude)


def yaw_trajectory(start: Pose, n_frames: int, deg_per_s: float, fps: float = 24.0) -> list[Pose]:
    """Turning on the spot at a constant rate (positive = left), starting at `start`."""
    return [start.moved(yaw=start.yaw + deg_per_s * i / fps) for i in range(n_frames)]


def forward_trajectory(start: Pose, n_frames: int, m_per_s: float, fps: float = 24.0) -> list[Pose]:
    """Moving along the view direction (pitch included: a pure dolly) at a constant speed."""
    forward = start.forward
    return [start.moved(position=tuple(np.asarray(start.position) + forward * m_per_s * i / fps))
            for i in range(n_frames)]
