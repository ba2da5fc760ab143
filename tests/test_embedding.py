"""camera.embedding: layout, stillness, rigid invariance, and the meaning of the channels."""
import json

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from camera.embedding import CameraScaling, camera_embedding, measure_scaling, ray_grid
from camera.errors import InputError
from camera.pose import Pose
from camera.trajectories import random_trajectory

GRID, ASPECT = (16, 9), 16 / 9
START = Pose((1.0, 1.7, -2.0), yaw=20.0, pitch=-5.0, fov=60.0)


def trajectory(seed=0, n=17):
    return random_trajectory(np.random.default_rng(seed), n, START)


def test_ray_grid():
    rays = ray_grid(60.0, ASPECT, 5, 3)
    assert rays.shape == (3, 5, 3)
    np.testing.assert_allclose(np.linalg.norm(rays, axis=-1), 1.0)
    np.testing.assert_allclose(rays[1, 2], [0.0, 0.0, -1.0], atol=1e-12)  # the centre looks forward
    assert rays[0, 0, 0] < 0 < rays[0, 0, 1], "row 0 is the top, column 0 the left"
    top = rays[0, 2]  # the top row's centre sits 2/3 of the way from the middle to the top edge
    assert top[1] / -top[2] == pytest.approx((2 / 3) * np.tan(np.radians(30.0)))


def test_shape_and_dtype():
    e = camera_embedding(trajectory(n=1 + 4 * 3), GRID, ASPECT)
    assert e.shape == (3, 24, 9, 16) and e.dtype == np.float32
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        camera_embedding(trajectory(n=8), GRID, ASPECT)


def test_still_camera_is_zero():
    assert np.abs(camera_embedding([START] * 9, GRID, ASPECT)).max() < 1e-6


def test_invariant_to_a_global_rigid_transform():
    poses = trajectory(seed=4, n=33)
    g, shift = Rotation.random(random_state=7), np.array([3.0, -20.0, 41.0])
    moved = [Pose.from_rotation(g.apply(p.position) + shift, g * p.rotation(), p.fov) for p in poses]
    assert max(abs(p.pitch) for p in moved) < 89.0  # the pitch clamp would change the poses
    assert np.abs(moved[0].to_array() - poses[0].to_array()).max() > 1.0
    a, b = camera_embedding(poses, GRID, ASPECT), camera_embedding(moved, GRID, ASPECT)
    assert np.abs(a).max() > 0.5
    np.testing.assert_allclose(a, b, atol=1e-4)


def test_pure_yaw_turns_the_rays():
    deg_per_frame = 2.0
    poses = [START.moved(yaw=START.yaw + deg_per_frame * i) for i in range(5)]
    s = CameraScaling()
    e = camera_embedding(poses, GRID, ASPECT, s)[0].reshape(4, 6, 9, 16)
    assert np.abs(e[:, :3]).max() < 1e-5, "no translation"
    assert np.abs(e[:, 3:]).max() > 0.5
    # Turning left moves every ray towards -x of the previous camera, the central ones by the turn angle.
    assert np.all(e[:, 3] < 0)
    np.testing.assert_allclose(e[:, 3, 4, 7:9] * s.direction_std, -np.radians(deg_per_frame), rtol=0.01)


def test_forward_motion_is_the_origin_channels():
    step_m = 0.1
    poses = [START.moved(position=tuple(np.asarray(START.position) + START.forward * step_m * i)) for i in range(5)]
    s = CameraScaling()
    e = camera_embedding(poses, GRID, ASPECT, s)[0].reshape(4, 6, 9, 16)
    np.testing.assert_allclose(e[:, 2] * s.origin_std, -step_m, rtol=1e-5)  # -z = forward
    assert np.abs(e[:, [0, 1, 3, 4, 5]]).max() < 1e-5


def test_frame_major_channel_layout():
    moved = START.moved(position=(1.0, 1.7, -2.5))
    e = camera_embedding([START] * 4 + [moved], GRID, ASPECT)[0]
    assert np.abs(e[:18]).max() < 1e-6, "frames 0-2 of the step did not move"
    assert np.abs(e[18:21]).max() > 0.1 and np.abs(e[21:]).max() < 1e-6


def test_measured_scaling_gives_unit_std_and_matches_the_defaults():
    trajectories = [trajectory(seed, n=97) for seed in range(8)]
    measured = measure_scaling(trajectories, ASPECT, GRID)
    e = np.concatenate([camera_embedding(t, GRID, ASPECT, measured) for t in trajectories])  # (k, 24, h, w)
    groups = e.reshape(len(e), 4, 6, 9, 16)
    assert groups[:, :, :3].std() == pytest.approx(1.0, rel=1e-3)
    assert groups[:, :, 3:].std() == pytest.approx(1.0, rel=1e-3)
    default = CameraScaling()
    assert 0.5 < measured.origin_std / default.origin_std < 2.0
    assert 0.5 < measured.direction_std / default.direction_std < 2.0


def test_scaling_serialises_and_validates():
    s = CameraScaling(0.031, 0.027)
    assert CameraScaling.from_dict(json.loads(json.dumps(s.to_dict()))) == s
    with pytest.raises(InputError) as e:
        CameraScaling.from_dict({"origin_std": -1.0, "direction_std": 0.02}, source="mini.safetensors")
    assert str(e.value).startswith("mini.safetensors: camera_scaling.origin_std: must be a number from 1e-06 to 1000")
    # 1e308 passed: the features overflowed float32 to inf (numpy's warning on stderr) and the frames were made of them
    for name, value in (("direction_std", 1e308), ("origin_std", 1e-308)):
        with pytest.raises(InputError, match=f"camera_scaling.{name}: must be a number from"):
            CameraScaling.from_dict({"origin_std": 0.04, "direction_std": 0.024} | {name: value})
    with pytest.raises(InputError, match="camera_scaling: must have exactly"):
        CameraScaling.from_dict({"origin_std": 1.0})


def test_rotation_flow_is_zero_for_a_still_or_translating_camera():
    from camera.embedding import rotation_flow
    still = [START] * 9
    walk = [START.moved(position=(1.0 + 0.1 * i, 1.7, -2.0 - 0.05 * i)) for i in range(9)]
    for poses in (still, walk):
        np.testing.assert_allclose(rotation_flow(poses, GRID, ASPECT), 0.0, atol=1e-5)
    assert camera_embedding(walk, GRID, ASPECT, flow=True).shape == (2, 26, 9, 16)
    np.testing.assert_array_equal(camera_embedding(walk, GRID, ASPECT, flow=True)[:, :24],
                                  camera_embedding(walk, GRID, ASPECT))


def test_rotation_flow_of_a_yaw_is_the_pinhole_shift():
    from camera.embedding import rotation_flow
    w, h = GRID
    level = START.moved(pitch=0.0)  # turning about the camera's own vertical axis
    poses = [level.moved(yaw=level.yaw + 2.0 * i) for i in range(5)]  # 8 degrees to the left over the step
    flow = rotation_flow(poses, GRID, ASPECT)[0]
    focal = (h / 2) / np.tan(np.radians(30.0))  # latent pixels
    # turning left, the centre now shows what was left of the centre: f tan(8 deg) pixels back
    assert flow[0, h // 2, w // 2 - 1 : w // 2 + 1].mean() == pytest.approx(-focal * np.tan(np.radians(8.0)), rel=0.02)
    assert abs(flow[1, h // 2]).max() < 0.05  # the middle row stays level
    assert (flow[0] < 0).all()


def test_warping_a_rendered_frame_by_the_rotation_flow_gives_the_turned_view():
    """The generator's warp path (model.generator.warp_latent), at the frame's own resolution: frame 0 carried
    along by the flow of an 8 degree turn is close to frame 4 in the reference world, wherever frame 0 saw it."""
    import torch
    from camera.embedding import rotation_flow
    from model.generator import warp_latent
    from world.reference import ReferenceWorld
    size = (128, 72)
    world = ReferenceWorld(size)
    try:
        world.reset("meadow", seed=0)
        poses = [START.moved(position=(0.0, 1.7, 0.0), yaw=2.0 * i) for i in range(5)]
        frames = world.render(poses).astype(np.float32)  # (5, H, W, 3)
    finally:
        world.close()
    flow = torch.from_numpy(rotation_flow(poses, size, size[0] / size[1])).transpose(0, 1)[None]  # (1, 2, 1, H, W)
    first = torch.from_numpy(frames[0]).permute(2, 0, 1)[None, :, None]  # (1, 3, 1, H, W)
    warped = warp_latent(first, flow)[0, :, 0].permute(1, 2, 0).numpy()
    seen = (flow[0, 0, 0].numpy() + np.arange(size[0])[None, :]) > 1  # columns frame 0 saw (not the new edge)
    err_warped = np.abs(warped - frames[4])[seen].mean()
    err_still = np.abs(frames[0] - frames[4])[seen].mean()
    assert err_warped < 0.25 * err_still, (err_warped, err_still)
