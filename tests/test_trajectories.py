"""camera.trajectories: deterministic, varied, human-like motion; pure yaw and forward motions."""
import numpy as np
import pytest

from camera.controls import ControlSettings
from camera.pose import Pose
from camera.trajectories import forward_trajectory, random_inputs, random_trajectory, yaw_trajectory

START = Pose((0.0, 1.7, 0.0), yaw=10.0, fov=60.0)
FPS = 24


def arrays(poses):
    return np.array([p.to_array() for p in poses])


def test_deterministic_in_the_generator():
    a = arrays(random_trajectory(np.random.default_rng(5), 200, START))
    b = arrays(random_trajectory(np.random.default_rng(5), 200, START))
    c = arrays(random_trajectory(np.random.default_rng(6), 200, START))
    assert a.tobytes() == b.tobytes()
    assert np.abs(a - c).max() > 0.1
    assert len(random_inputs(np.random.default_rng(0), 37)) == 37


def test_inverted_mouse_gives_the_same_trajectory():
    plain = random_trajectory(np.random.default_rng(2), 300, START)
    inverted = random_trajectory(np.random.default_rng(2), 300, START, ControlSettings(invert_y=True))
    assert arrays(plain).tobytes() == arrays(inverted).tobytes()
    assert np.ptp(arrays(plain)[:, 4]) > 5.0


def test_long_trajectories_move_turn_look_run_and_stop():
    settings = ControlSettings()
    poses = random_trajectory(np.random.default_rng(11), 60 * FPS, START, settings)
    a = arrays(poses)
    assert len(poses) == 60 * FPS and poses[0] == START
    speed = np.linalg.norm(np.diff(a[:, :3], axis=0), axis=1) * FPS  # m/s
    turn = np.abs(np.diff(a[:, 3])) * FPS  # deg/s
    assert speed.sum() / FPS > 20.0, "walks"
    assert speed.max() > 1.2 * settings.walk_speed, "runs"
    assert np.abs(np.diff(a[:, 3])).sum() > 360.0 and turn.max() > 90.0, "turns, sometimes fast"
    assert np.ptp(a[:, 4]) > 15.0 and np.abs(a[:, 4]).max() < 50.0, "looks up and down, back towards the horizon"
    still = (speed < 0.02) & (turn < 1.0)
    runs = np.diff(np.flatnonzero(np.diff(np.concatenate([[0], still.astype(int), [0]]))))[::2]
    assert runs.max() >= 6, "comes to a stop for a quarter of a second or more"
    assert np.ptp(a[:, 1]) < 2.0 and a[:, 1].min() > START.position[1] - 1.0, "rises and sinks stay modest"


def test_ground_keeps_the_start_height_above_the_ground():
    ground = lambda x, z: 0.3 * np.sin(0.5 * x) + 0.2 * np.cos(0.3 * z)  # noqa: E731
    start = START.moved(position=(0.0, ground(0.0, 0.0) + 1.7, 0.0))
    poses = random_trajectory(np.random.default_rng(3), 20 * FPS, start, ground=ground)
    height = np.array([p.position[1] - ground(p.position[0], p.position[2]) for p in poses])
    assert height[:2] == pytest.approx([1.7, 1.7])
    assert height.min() >= ControlSettings().min_height - 1e-9
    assert np.ptp([p.position[1] for p in poses]) > 0.2  # it followed the terrain


def test_pure_motions():
    yaws = yaw_trajectory(START, 25, deg_per_s=48.0)
    a = arrays(yaws)
    np.testing.assert_allclose(np.diff(a[:, 3]), 2.0)
    assert np.ptp(a[:, [0, 1, 2, 4, 5, 6]], axis=0).max() == 0.0
    tilted = START.moved(pitch=20.0)
    ahead = arrays(forward_trajectory(tilted, 25, m_per_s=1.2))
    np.testing.assert_allclose(ahead[-1, :3] - ahead[0, :3], tilted.forward * 1.2, atol=1e-12)
    np.testing.assert_allclose(np.linalg.norm(np.diff(ahead[:, :3], axis=0), axis=1), 1.2 / FPS)
    assert np.ptp(ahead[:, 3:], axis=0).max() == 0.0
