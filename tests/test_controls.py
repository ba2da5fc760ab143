"""Pose conventions and camera.controls: easing, turning, replay determinism, ground following."""
import json

import numpy as np
import pytest

from camera.controls import ControlSettings, InputState, MotionState, replay, step
from camera.errors import InputError
from camera.pose import Pose

START = Pose((0.0, 1.7, 0.0))


def hold(actions=(), mouse=(0.0, 0.0), gamepad=(0.0, 0.0, 0.0, 0.0), n=1):
    return [InputState(frozenset(actions), mouse, gamepad)] * n


def speeds(poses, start=START, dt=1 / 24):
    p = np.array([start.position] + [q.position for q in poses])
    return np.linalg.norm(np.diff(p, axis=0), axis=1) / dt


# --- pose conventions ----------------------------------------------------------------------------

def test_yaw_plus_90_looks_along_minus_x():
    np.testing.assert_allclose(Pose(yaw=90.0).forward, [-1.0, 0.0, 0.0], atol=1e-12)


def test_pitch_plus_30_looks_up():
    f = Pose(pitch=30.0).forward
    assert f[1] == pytest.approx(0.5)
    np.testing.assert_allclose(f, [0.0, 0.5, -np.sqrt(3) / 2], atol=1e-12)


# --- motion --------------------------------------------------------------------------------------

def test_forward_eases_in_to_walk_speed_and_out():
    s = ControlSettings()
    poses = replay(START, hold({"forward"}, n=48) + hold(n=48), s)
    v = speeds(poses)
    rising = v[:10]
    assert np.all(np.diff(rising) > 0), "speed rises frame by frame"
    assert rising[0] < 0.5 * s.walk_speed, "no jump to full speed"
    assert v[47] == pytest.approx(s.walk_speed, rel=1e-3)
    falling = v[48:58]
    assert np.all(np.diff(falling) < 0) and falling[0] > 0.5 * s.walk_speed, "eases out, no sudden stop"
    assert v[-1] < 1e-3
    assert poses[47].position[2] < -1.5  # walked along -Z (yaw 0)


def test_fast_walks_faster():
    s = ControlSettings()
    v = speeds(replay(START, hold({"forward", "fast"}, n=72), s))
    assert v[-1] == pytest.approx(s.walk_speed * s.fast_multiplier, rel=1e-3)


def test_diagonal_is_not_faster():
    s = ControlSettings()
    v = speeds(replay(START, hold({"forward", "left"}, n=72), s))
    assert v[-1] == pytest.approx(s.walk_speed, rel=1e-3)


def test_mouse_right_turns_right_and_down_looks_down():
    s = ControlSettings()
    _, pose = step(MotionState.at(START), InputState(mouse=(10.0, 5.0)), s)
    assert pose.yaw == pytest.approx(-10.0 * s.mouse_sensitivity)  # yaw decreases = turn right
    assert pose.forward[0] > 0  # now looking a little towards +X, i.e. right of -Z
    assert pose.pitch == pytest.approx(-5.0 * s.mouse_sensitivity)
    _, inverted = step(MotionState.at(START), InputState(mouse=(0.0, 5.0)), ControlSettings(invert_y=True))
    assert inverted.pitch > 0


def test_forward_never_moves_vertically_under_pitch():
    for pitch in (-60.0, 45.0, 89.0):
        poses = replay(START.moved(pitch=pitch, yaw=30.0), hold({"forward"}, n=30))
        assert all(p.position[1] == START.position[1] for p in poses)
        assert np.linalg.norm(np.subtract(poses[-1].position, START.position)) > 1.0


def test_pitch_is_clamped():
    poses = replay(START, hold(mouse=(0.0, -500.0), n=10))
    assert poses[-1].pitch == 89.0


def test_yaw_wound_past_what_a_session_may_hold_is_taken_back_by_whole_turns():
    """At --mouse-sensitivity 10, seven 20000-pixel flicks wound the yaw to 1.4 million degrees: play wrote a
    session that its own replay, path from-session and summary refused (yaw within 1e6 degrees)."""
    from camera.controls import WIND_LIMIT
    from camera.pose import ANGLE_LIMIT, check_pose_limits
    settings = ControlSettings(mouse_sensitivity=10.0)
    state = MotionState.at(Pose((0.0, 1.7, 0.0), yaw=WIND_LIMIT - 50.0))
    turned, _ = step(state, InputState(mouse=(-20.0, 0.0)), settings)  # 200 degrees left: past the limit
    assert abs(turned.pose.yaw) <= 180.0
    assert np.allclose(turned.pose.rotation().as_matrix(),
                       Pose((0.0, 1.7, 0.0), yaw=WIND_LIMIT + 150.0).rotation().as_matrix(), atol=1e-9)
    state = MotionState.at(Pose((0.0, 1.7, 0.0)))
    for _ in range(8):  # as QA turned it
        state, _ = step(state, InputState(mouse=(-20000.0, 0.0)), settings)
        check_pose_limits("session", "pose", state.pose.position, state.pose.yaw, state.pose.roll, state.pose.fov)
    assert abs(state.pose.yaw) < ANGLE_LIMIT
    near, _ = step(MotionState.at(Pose((0.0, 1.7, 0.0), yaw=720.0)), InputState(mouse=(-1.0, 0.0)), settings)
    assert near.pose.yaw == 730.0  # below the limit it winds on as before (continuous for paths and plots)


def test_gamepad_moves_and_looks_with_dead_zone():
    still = replay(START, hold(gamepad=(0.1, -0.1, 0.1, 0.0), n=24))
    assert still[-1] == START  # inside the dead zone
    poses = replay(START, hold(gamepad=(0.0, -1.0, 1.0, 0.0), n=48))
    assert np.linalg.norm(np.subtract(poses[-1].position, START.position)) > 1.0  # left stick forward walks
    yaw_rate = np.diff([p.yaw for p in poses]) * 24
    assert np.all(yaw_rate < 0), "right stick right turns right"
    assert abs(yaw_rate[0]) < abs(yaw_rate[-1]), "stick look eases in"
    assert yaw_rate[-1] == pytest.approx(-ControlSettings().gamepad_look_speed, rel=1e-2)


def test_roll_springs_back():
    poses = replay(START, hold({"roll_left"}, n=12) + hold(n=48))
    assert poses[11].roll > 5.0
    assert abs(poses[-1].roll) < 0.1 * poses[11].roll


def test_the_easings_come_to_rest():
    # They decayed for ever: a roll of 1e-194 degrees in a session's log, a camera never quite still after a walk.
    poses = replay(START, hold({"forward", "roll_left"}, n=24) + hold(n=120)
                   + [InputState(gamepad=(0.0, 0.0, 1.0, 0.0))] * 12 + hold(n=120))
    assert poses[143].roll == 0.0 and poses[143] == poses[142]  # 5 s after the release: exactly still
    assert poses[-1] == poses[-2] and poses[-1].yaw != poses[143].yaw  # and after a turn of the right stick


def test_up_and_down_without_ground():
    poses = replay(START, hold({"up"}, n=24))
    assert poses[-1].position[1] > START.position[1] + 0.5


def test_ground_following_and_minimum_height():
    s = ControlSettings()
    ground = lambda x, z: 0.1 * x + 0.05 * z * z  # noqa: E731
    poses = replay(START.moved(yaw=-90.0), hold({"forward"}, n=48), s, ground=ground)  # walk towards +X
    for p in poses:
        assert p.position[1] == pytest.approx(ground(p.position[0], p.position[2]) + s.eye_height)
    low = replay(START, hold({"down"}, n=96), s, ground=ground)
    assert low[-1].position[1] == pytest.approx(ground(0.0, 0.0) + s.min_height)
    # Down held at the floor stores no downward speed: pressing up rises at once.
    state = MotionState.at(START)
    for inp in hold({"down"}, n=96):
        state, _ = step(state, inp, s, ground=ground)
    state, pose = step(state, InputState(frozenset({"up"})), s, ground=ground)
    assert pose.position[1] > low[-1].position[1]


# --- replay --------------------------------------------------------------------------------------

def recorded_inputs(n=120, seed=3):
    rng = np.random.default_rng(seed)
    names = ["forward", "back", "left", "right", "up", "down", "fast", "roll_left", "roll_right"]
    return [InputState(frozenset(a for a in names if rng.random() < 0.25),
                       tuple(rng.normal(0.0, 8.0, 2)), tuple(rng.uniform(-1.0, 1.0, 4)))
            for _ in range(n)]


def test_replay_from_json_is_identical():
    inputs = recorded_inputs()
    poses = replay(START, inputs)
    logged = json.loads(json.dumps([i.to_dict() for i in inputs]))
    again = replay(START, [InputState.from_dict(d) for d in logged])
    assert [p.to_array().tobytes() for p in poses] == [p.to_array().tobytes() for p in again]
    assert len({p.position for p in poses}) == len(poses)  # it really moved


@pytest.mark.parametrize("d, field", [
    ({"actions": ["jump"]}, "input.actions"),
    ({"actions": "forward"}, "input.actions"),
    ({"mouse": [1.0]}, "input.mouse"),
    ({"mouse": [1.0, float("nan")]}, "input.mouse"),
    ({"gamepad": [0.0, 2.0, 0.0, 0.0]}, "input.gamepad"),
    ({"keys": []}, "input.keys"),
])
def test_input_validation(d, field):
    with pytest.raises(InputError) as e:
        InputState.from_dict(d, source="trajectory.jsonl:7")
    assert str(e.value).startswith(f"trajectory.jsonl:7: {field}: ")
