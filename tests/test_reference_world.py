"""ReferenceWorld: the World protocol, determinism, and camera/pose.py's conventions checked in pixels."""
import math

import numpy as np
import pytest

from camera.pose import Pose
from world.base import FRAMES_PER_STEP, World
from world.level import load_level
from world.reference import ReferenceWorld
from world.scene import (Fog, Ground, Lighting, Objects, Placements, SceneParams, Sky, Terrain, direction, height_at,
                         objects_in_cell)

SIZE = (128, 72)
W, H = SIZE
EYE = (0.0, 1.7, 0.0)


@pytest.fixture(scope="module")
def world():
    w = ReferenceWorld(SIZE)
    yield w
    w.close()


def walk(start: Pose, n: int) -> list[Pose]:
    """n poses walking 0.1 m per frame along the start's view, turning 2 degrees per frame."""
    x, y, z = start.position
    return [start.moved(position=(x - 0.1 * i * math.sin(math.radians(start.yaw)), y,
                                  z - 0.1 * i * math.cos(math.radians(start.yaw))), yaw=start.yaw + 2 * i)
            for i in range(n)]


def project(pose: Pose, direction_world) -> tuple[float, float]:
    """Pixel (x, y), y down, where a direction (a point at infinity) lands, by the pinhole model of pose.py."""
    d = pose.world_to_camera()[:3, :3] @ np.asarray(direction_world)
    k = pose.intrinsics(W, H)
    return k[0, 2] + k[0, 0] * d[0] / -d[2], k[1, 2] - k[1, 1] * d[1] / -d[2]


def test_world_protocol(world):
    level = load_level("meadow")
    first = world.reset(level, seed=0)
    assert isinstance(world, World) and world.size == SIZE
    assert first.shape == (H, W, 3) and first.dtype == np.uint8
    poses = walk(level.start, FRAMES_PER_STEP)
    frames = world.step(poses)
    assert frames.shape == (FRAMES_PER_STEP, H, W, 3) and frames.dtype == np.uint8
    assert world.state() == poses[-1]
    world.restore(level.start)
    assert world.state() == level.start
    with pytest.raises(ValueError):
        world.step(poses[:3])
    assert np.array_equal(world.reset(level, seed=123), first)  # a static scene: the seed changes nothing


@pytest.mark.parametrize("name", ["village", "nightwalk"])  # houses, crates; lamps that light the ground
def test_frames_are_deterministic(world, name):
    level = load_level(name)
    far = level.start.moved(position=(150.0, float(height_at(level.scene, 150.0, -90.0)) + 1.7, -90.0))
    poses = walk(level.start, 10) + [far]  # the far pose needs other terrain and other object cells
    world.reset(level)
    a = world.render(poses)
    b = world.render(poses)
    c = world.render(poses[::-1])[::-1]  # what was drawn before does not matter
    other = ReferenceWorld(SIZE)
    try:
        other.reset(level)
        d = other.render(poses)
    finally:
        other.close()
    assert np.array_equal(a, b) and np.array_equal(a, c) and np.array_equal(a, d)
    assert len({f.tobytes() for f in a}) == len(poses)  # and the frames do change as the camera moves


def clear_sky(**lighting) -> SceneParams:
    """Flat dark rock under a white cloudless sky, no objects, fog fading to black: a crisp horizon."""
    return SceneParams(sky=Sky("noon", zenith=(1, 1, 1), horizon=(1, 1, 1), clouds=0.0),
                       ground=Ground("rock", tint=(0.5, 0.5, 0.5)), terrain=Terrain("flat"),
                       objects=Objects(density=0.0), fog=Fog(0.0, color=(0, 0, 0)), lighting=Lighting(**lighting))


def test_positive_pitch_moves_the_horizon_down(world):
    world.set_scene(clear_sky(sun_elevation=-60))
    level, up = world.render([Pose(EYE, 0, 0), Pose(EYE, 0, 15)])

    def horizon_row(frame):  # the first row from the top that is mostly ground
        return int(np.argmax(frame.mean(axis=(1, 2)) < 128))

    f = (H / 2) / math.tan(math.radians(30))
    assert abs(horizon_row(level) - H / 2) <= 1
    assert abs(horizon_row(up) - (H / 2 + f * math.tan(math.radians(15)))) <= 1.5


def test_yaw_90_looks_along_minus_x(world):
    """The sun at azimuth 90 lies along -X (DESIGN: positive yaw turns left, counter-clockwise from above);
    a camera at yaw 90 sees it at the image centre, at yaw 60 where the pinhole model puts it, at -90 not at all."""
    assert np.allclose(direction(90, 0), [-1, 0, 0])
    sun = direction(90, 20)
    world.set_scene(SceneParams(sky=Sky("noon", clouds=0.0), lighting=Lighting(sun_elevation=20, sun_azimuth=90),
                                objects=Objects(density=0.0)))
    poses = [Pose(EYE, 90, 20), Pose(EYE, 60, 15), Pose(EYE, -90, 20)]
    for pose, frame in zip(poses, world.render(poses)):
        disc = np.argwhere(frame.min(axis=2) >= 250)  # only the sun disc is white in all three channels
        if pose.yaw == -90:
            assert len(disc) == 0
            continue
        assert 0 < len(disc) < 60
        y, x = disc.mean(axis=0) + 0.5  # pixel centres
        px, py = project(pose, sun)
        assert abs(x - px) < 1.5 and abs(y - py) < 1.5, (pose, (x, y), (px, py))
    px, py = project(poses[1], sun)
    assert px < W / 2 - 20  # yaw 60: the sun (at 90) is further left


def test_objects_below_a_high_camera_are_drawn(world):
    """Objects were culled by a plane FADE[1] (80 m) ahead of the camera, while the shader fades them by their
    distance across the ground: looking down from 100 m, the houses right below were gone."""
    houses = SceneParams(seed=5, terrain=Terrain("flat"), objects=Objects(density=0.5, kinds={"house": 1.0}),
                         fog=Fog(0.0))
    bare = SceneParams(seed=5, terrain=Terrain("flat"), objects=Objects(density=0.0), fog=Fog(0.0))
    for height in (50.0, 100.0, 150.0):
        pose = Pose((0.0, height, 0.0), 0.0, -89.0)
        world.set_scene(houses)
        with_houses = world.render([pose])[0].astype(int)
        world.set_scene(bare)
        changed = np.abs(with_houses - world.render([pose])[0].astype(int)).max(axis=2) > 20
        assert changed.mean() > 0.01, height


def test_objects_stand_where_the_camera_looks(world):
    houses = SceneParams(seed=4, terrain=Terrain("flat"), objects=Objects(density=0.5, kinds={"house": 1.0}),
                         fog=Fog(0.0))
    cells = Placements.concat([objects_in_cell(houses, i, j) for i in (-1, 0) for j in (-1, 0)])
    nearest = cells.position[np.argmin(np.hypot(cells.position[:, 0], cells.position[:, 2]))]
    x, _, z = nearest
    yaw = math.degrees(math.atan2(-x, -z))  # the DESIGN's yaw: 0 looks along -Z, 90 along -X
    pitch = math.degrees(math.atan2(2.0 - EYE[1], math.hypot(x, z)))  # at a point 2 m up the wall
    pose = Pose(EYE, yaw, pitch)
    world.set_scene(houses)
    with_house = world.render([pose])[0].astype(int)
    world.set_scene(SceneParams(seed=4, terrain=Terrain("flat"), objects=Objects(density=0.0), fog=Fog(0.0)))
    without = world.render([pose])[0].astype(int)
    changed = np.abs(with_house - without).max(axis=2) > 20
    assert changed[H // 2 - 1:H // 2 + 1, W // 2 - 1:W // 2 + 1].all()
    assert 0.01 < changed.mean() < 0.9


def test_a_stop_signal_while_drawing_acts_once_the_gl_calls_are_done():
    # render's SIGTERM and SIGHUP raise SystemExit in their handler; raised inside moderngl's building of a program
    # (it calls back into Python there), the process crashed with SIGSEGV, one closed terminal in four.
    import os
    import signal

    world = ReferenceWorld((32, 16))
    try:
        level = load_level("meadow")
        world.reset(level)
        drawn, draw = [], world._renderer.draw

        def draw_after_a_signal(pose, size):
            os.kill(os.getpid(), signal.SIGTERM)
            draw(pose, size)  # GL calls after the signal came
            drawn.append(pose)

        def stop(signum, frame):
            raise SystemExit(128 + signum)

        world._renderer.draw = draw_after_a_signal
        previous = signal.signal(signal.SIGTERM, stop)
        try:
            with pytest.raises(SystemExit):
                world.render([level.start] * 3)
        finally:
            signal.signal(signal.SIGTERM, previous)
        assert len(drawn) == 3  # the signal waited for the frames, then acted
    finally:
        world.close()
