"""camera.paths (keyframes -> poses, files, reduction) and camera.realestate (RealEstate10K files)."""
import errno
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from scipy.spatial.transform import Rotation

from camera.controls import InputState, replay
from camera.errors import InputError
from camera.paths import CameraPath, Keyframe, load_path, path_from_poses, save_path
from camera.pose import Pose
from camera.realestate import load_realestate, save_realestate
from levels import PATHS_DIR

KEYS = [Keyframe(0.0, (0.0, 1.7, 0.0), 0.0, 0.0, 0.0, 60.0),
        Keyframe(1.0, (1.0, 1.8, -2.0), 40.0, 10.0, 0.0, 60.0),
        Keyframe(2.5, (1.5, 1.6, -5.0), -30.0, -5.0, 8.0, 70.0),
        Keyframe(3.0, (3.0, 1.7, -5.5), 10.0, 0.0, 0.0, 65.0)]


def path(interpolation="catmull-rom", keys=KEYS, relative=False):
    return CameraPath(24.0, interpolation, relative, list(keys))


def arrays(poses):
    return np.array([p.to_array() for p in poses])


def rotations(poses):
    return Rotation.concatenate([p.rotation() for p in poses])


# --- sampling ------------------------------------------------------------------------------------

@pytest.mark.parametrize("interpolation", ["catmull-rom", "linear"])
def test_passes_through_keys(interpolation):
    p = path(interpolation)
    for k in KEYS:
        got = p.pose_at(k.t).to_array()
        np.testing.assert_allclose(got, [*k.position, k.yaw, k.pitch, k.roll, k.fov], atol=1e-6)
    poses = p.poses()
    assert len(poses) == round(3.0 * 24) + 1
    np.testing.assert_allclose(poses[-1].to_array(), p.pose_at(3.0).to_array(), atol=1e-12)


def test_catmull_rom_is_smooth_and_differs_from_linear():
    dt = 1 / 240
    smooth, linear = path().poses(fps=240), path("linear").poses(fps=240)
    pos = arrays(smooth)[:, :3]
    step = np.linalg.norm(np.diff(pos, axis=0), axis=1)
    assert step.max() < 6.0 * dt, "no jumps: at most 6 m/s between frames"
    accel = np.linalg.norm(np.diff(pos, 2, axis=0), axis=1) / dt**2
    assert accel.max() < 30.0, "bounded second differences (m/s^2)"
    turn = np.degrees((rotations(smooth)[:-1].inv() * rotations(smooth)[1:]).magnitude())  # deg per frame
    assert turn.max() < 200.0 * dt, "no jumps: at most 200 deg/s"
    assert np.abs(np.diff(turn)).max() < 0.05, "angular speed changes gradually"
    # Linear paths turn corners: their speed jumps at the keys; catmull-rom differs between keys.
    lin_speed = np.linalg.norm(np.diff(arrays(linear)[:, :3], axis=0), axis=1) / dt
    assert np.abs(np.diff(lin_speed)).max() > 0.5
    assert np.abs(np.diff(step / dt)).max() < 0.2
    assert np.abs(pos - arrays(linear)[:, :3]).max() > 0.05


def test_before_first_key_and_after_last_hold_still():
    keys = [Keyframe(0.5, (0.0, 0.0, 0.0), 10.0, fov=60.0), Keyframe(1.0, (1.0, 0.0, 0.0), 20.0, fov=60.0)]
    p = path(keys=keys)
    assert p.pose_at(0.0) == p.pose_at(0.5)
    assert p.pose_at(7.0) == p.pose_at(1.0)


def test_yaw_winds_past_180():
    keys = [Keyframe(0.0, (0, 0, 0), 0.0, fov=60.0), Keyframe(1.0, (0, 0, 0), 270.0, fov=60.0)]
    for interpolation in ("linear", "catmull-rom"):
        yaws = arrays(path(interpolation, keys).poses())[:, 3]
        assert np.all(np.diff(yaws) > 0), "turns 270 left, not 90 right"
        assert yaws[-1] == pytest.approx(270.0)


def test_panorama_turns_all_the_way_round():
    p = load_path(PATHS_DIR / "panorama.toml")
    start = Pose((2.0, 1.7, -1.0), yaw=-40.0, fov=70.0)
    poses = p.poses(start=start)
    assert 10.0 <= p.duration <= 14.0
    yaws = arrays(poses)[:, 3]
    assert np.all(np.diff(yaws) > 0)
    assert yaws[-1] - yaws[0] == pytest.approx(360.0, abs=1e-6)
    assert np.ptp(arrays(poses)[:, :3], axis=0).max() < 1e-9  # stands still
    forwards = np.array([q.forward for q in poses])
    half = forwards[len(poses) // 2]
    np.testing.assert_allclose(half[[0, 2]], -start.forward[[0, 2]], atol=0.02)  # faces back at half time
    assert np.abs(arrays(poses)[:, 4]).max() > 2.0 and np.abs(arrays(poses)[:, 5]).max() < 0.5  # pitch swing, level


def test_relative_paths_follow_the_start():
    p = load_path(PATHS_DIR / "walk.toml")
    assert p.relative and p.interpolation == "catmull-rom" and 7.0 <= p.duration <= 9.0
    a = Pose((0.0, 1.7, 0.0), yaw=0.0, fov=60.0)
    b = Pose((5.0, 2.5, -3.0), yaw=130.0, fov=75.0)
    pa, pb = p.poses(start=a), p.poses(start=b)
    np.testing.assert_allclose(pb[0].to_array(), b.to_array(), atol=1e-9)
    assert all(q.fov == 75.0 for q in pb)
    walked = np.subtract(pa[-1].position, pa[0].position)
    assert 9.0 < -walked[2] < 11.0, "about 10 m forward (-Z at yaw 0)"
    # The walk from b is the walk from a, turned by b's yaw and moved to b.
    turn = Rotation.from_euler("Y", 130.0, degrees=True)
    np.testing.assert_allclose(arrays(pb)[:, :3], turn.apply(arrays(pa)[:, :3] - a.position) + b.position, atol=1e-9)
    np.testing.assert_allclose(arrays(pb)[:, 3], arrays(pa)[:, 3] + 130.0, atol=1e-6)
    # Pitch and roll add to the start's too (at the keys; in between the rotation spline decides).
    looking_up = Pose((0.0, 1.7, 0.0), pitch=10.0, roll=2.0)
    for k in p.keys:
        at = p.pose_at(k.t, start=looking_up)
        assert (at.pitch, at.roll) == pytest.approx((10.0 + k.pitch, 2.0 + k.roll))
    with pytest.raises(ValueError, match="start pose"):
        p.poses()


# --- files ---------------------------------------------------------------------------------------

HEADER = '[path]\nfps = 24\ninterpolation = "catmull-rom"\n'


def key(t, extra=""):
    return f"\n[[path.key]]\nt = {t}\nposition = [0.0, 1.7, 0.0]\n{extra}"


@pytest.mark.parametrize("text, message", [
    (HEADER + key(0.0) + key(2.0) + key(1.5), "walk.toml: path.key[2].t: times must increase (1.5 after 2.0)"),
    (HEADER + key(0.0), "walk.toml: path.key: needs at least two [[path.key]] entries"),
    (HEADER + key(0.0, "speed = 3\n") + key(1.0), "walk.toml: path.key[0].speed: unknown field"),
    (HEADER + "colour = 1\n" + key(0.0) + key(1.0), "walk.toml: path.colour: unknown field"),
    (HEADER + key(0.0) + key(1.0, 'yaw = "left"\n'), "walk.toml: path.key[1].yaw: must be a number"),
    (HEADER + key(0.0) + key(1.0, "pitch = nan\n"), "walk.toml: path.key[1].pitch: must be a finite number"),
    (HEADER + key(0.0) + key(1.0, "pitch = 95\n"), "walk.toml: path.key[1].pitch: must be within"),
    (HEADER + key(0.0) + key(1.0, "fov = 0\n"), "walk.toml: path.key[1].fov: must be between 1 and 179"),
    (HEADER + key(-1.0) + key(1.0), "walk.toml: path.key[0].t: must be 0 or later"),
    (HEADER + key(0.0) + "\n[[path.key]]\nt = 1.0\nposition = [1, 2]\n",
     "walk.toml: path.key[1].position: must be a list"),
    (HEADER + key(0.0) + "\n[[path.key]]\nposition = [1, 2, 3]\n", "walk.toml: path.key[1].t: missing"),
    ('[path]\ninterpolation = "cubic"\n' + key(0.0) + key(1.0), "walk.toml: path.interpolation: must be one of"),
    ("[path]\nfps = -5\n" + key(0.0) + key(1.0), "walk.toml: path.fps: must be between 1 and 240"),
    ("[path]\nfps = 1e-9\n" + key(0.0) + key(1.0), "walk.toml: path.fps: must be between 1 and 240"),
    ("[path]\nfps = 1e9\n" + key(0.0) + key(1.0), "walk.toml: path.fps: must be between 1 and 240"),
    # Limits that keep sampling finite: each of these once took minutes or hundreds of GiB.
    (HEADER + key(0.0) + key(1e9), "walk.toml: path.key: the path lasts 1e+09 s"),
    (HEADER + key(0.0) + key(41667.0), "walk.toml: path.key: the path lasts 41667 s, 1,000,009 frames at 24 fps; at "
     "most 1,000,000 are allowed"),  # was "1e+06 frames ...; at most 1000000", which reads as no excess
    ("[path]\nfps = 100\n" + key(0.0) + key(10000.0), "walk.toml: path.key: the path lasts 10000 s, 1,000,001 frames"),
    (HEADER + key(0.0) + key(1.0, "yaw = 1e12\n"), "walk.toml: path.key[1].yaw: must be within 1e+06 degrees"),
    (HEADER + key(0.0) + key(1.0, "fov = 1e-10\n"), "walk.toml: path.key[1].fov: must be between 1 and 179"),
    (HEADER + key(0.0) + "\n[[path.key]]\nt = 1.0\nposition = [1e300, 0, 0]\n",
     "walk.toml: path.key[1].position: must be within 100000 m"),
    (HEADER + "".join(key(float(i), f"yaw = {(-1) ** i * 900000}\n") for i in range(40)),
     "walk.toml: path.key: the keys turn"),
    ("[path]\nrelative = 1\n" + key(0.0) + key(1.0), "walk.toml: path.relative: must be true or false"),
    (HEADER + "\n[[path.key]]\nt = 0.0\n" + key(1.0), "walk.toml: path.key[0].position: missing: an absolute"),
    ("[camera]\n", "walk.toml: camera: unknown field"),
    ("[path\n", "walk.toml: not valid TOML"),
    # Numbers past a float's range, or of more digits than Python converts, are bad input, not a traceback.
    pytest.param(HEADER + key(0.0) + key("1" + "0" * 400), "walk.toml: path.key[1].t: must be a finite number, "
                 "got 1000", id="t-past-a-float"),
    pytest.param(HEADER + key(0.0) + key("1" + "0" * 5000), "walk.toml: not valid TOML for us: it holds an integer "
                 "of over 4300 digits", id="t-of-5001-digits"),
    # Keys a hair apart make the spline's slopes overflow (a scipy traceback before).
    (HEADER + key(0.0) + key(1e-310), "walk.toml: path.key[1].t: keys must be at least 1 ms apart"),
])
def test_validation_messages(tmp_path, monkeypatch, text, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "walk.toml").write_text(text)
    with pytest.raises(InputError) as e:
        load_path("walk.toml")
    assert str(e.value).startswith(message)
    assert "\n" not in str(e.value)


@pytest.mark.parametrize("interpolation", ["catmull-rom", "linear"])
def test_two_keys_alike_hold_the_camera_still_between_them(tmp_path, interpolation):
    """Catmull-Rom swung the camera 1.3 m back and 16 degrees round between two keys at the same place and
    heading, and on past the last key of a hold at the end."""
    (tmp_path / "hold.toml").write_text(
        f'[path]\nfps = 8\nrelative = true\ninterpolation = "{interpolation}"\n'
        "[[path.key]]\nt = 0\n[[path.key]]\nt = 2\n"                          # still for 2 s
        "[[path.key]]\nt = 3\nposition = [0, 0, -10]\nyaw = 90\n[[path.key]]\nt = 5\n"  # walk and turn, still
        "[[path.key]]\nt = 6\nposition = [0, 0, -14]\n[[path.key]]\nt = 7\nposition = [0, 0, -20]\n")  # no turn
    poses = load_path(tmp_path / "hold.toml").poses(start=Pose((0.0, 1.7, 0.0)))
    a = np.array([p.to_array() for p in poses])  # (57, 7): x, y, z, yaw, pitch, roll, fov at 8 fps
    assert np.abs(a[:17] - a[0]).max() < 1e-9                              # 0 .. 2 s
    assert np.abs(a[24:41] - a[24]).max() < 1e-9 and a[24, 2] == -10.0 and abs(a[24, 3] - 90) < 1e-9  # 3 .. 5 s
    assert np.abs(a[40:, 3:] - a[40, 3:]).max() < 1e-9                      # 5 .. 7 s: walks on, turns no more
    assert np.all(np.diff(a[16:25, 2]) <= 0) and np.all(np.diff(a[16:25, 3]) >= 0)  # 2 .. 3 s: on, never back
    if interpolation == "catmull-rom":  # out of the hold and into the next one gently, the turn as the walk
        (tmp_path / "hold24.toml").write_text((tmp_path / "hold.toml").read_text().replace("fps = 8", "fps = 24"))
        poses = load_path(tmp_path / "hold24.toml").poses(start=Pose((0.0, 1.7, 0.0)))[48:73]  # 2 .. 3 s
        rotations = Rotation.concatenate([p.rotation() for p in poses])
        turn = np.degrees((rotations[:-1].inv() * rotations[1:]).magnitude())  # (24,) degrees per frame
        walk = np.abs(np.diff([p.position[2] for p in poses]))                 # (24,) metres per frame
        assert np.abs(turn / turn.max() - walk / walk.max()).max() < 0.02, (turn / turn.max(), walk / walk.max())


@pytest.mark.parametrize("interpolation", ["catmull-rom", "linear"])
def test_a_path_between_keys_at_the_pitch_limit_never_turns_the_camera_over(interpolation):
    """Keys looking straight up, turning, then straight down: the Catmull-Rom pitch overshot 89 degrees, past the
    vertical, and the camera turned over (up vector pointing down, the picture upside down)."""
    keys = [Keyframe(0.0, (0.0, 1.7, 0.0), 0.0, 89.0, 0.0, None), Keyframe(1.0, (0.0, 1.7, 0.0), 90.0, 89.0, 0.0, None),
            Keyframe(2.0, (0.0, 1.7, 0.0), 180.0, -89.0, 0.0, None)]
    poses = CameraPath(24, interpolation, False, keys).poses()
    rotations = Rotation.concatenate([p.rotation() for p in poses])
    assert rotations.apply([0.0, 1.0, 0.0])[:, 1].min() >= 0.0  # the camera's up never points down
    assert max(abs(p.pitch) for p in poses) <= 89.0 + 1e-9
    assert np.degrees((rotations[:-1].inv() * rotations[1:]).magnitude()).max() < 15.0  # no snap in between


@pytest.mark.parametrize("field, values, times", [
    ("yaw", (0.0, 170.0, 175.0), (0.0, 0.05, 5.0)),     # a quick turn, then a slow drift: on 377 degrees past 175
    ("yaw", (0.0, 90.0, 95.0), (0.0, 0.25, 5.0)),       # peaked at 172
    ("pitch", (0.0, 80.0, 85.0), (0.0, 0.1, 5.0)),      # turned over: looked straight down at the ground for 2.7 s
    ("pitch", (-60.0, 89.0, 85.0), (0.0, 0.05, 5.0)),
    ("z", (0.0, -100.0, -101.0), (0.0, 0.05, 5.0)),     # walked on to -119.5, then back the way it came
    ("fov", (1.0, 2.0, 179.0, 178.0), (0.0, 1.0, 1.01, 2.0)),  # a fov from -33 to 213 (refused before, as such)
])
def test_a_catmull_rom_path_never_swings_past_its_keys(field, values, times):
    """Keys close in time and far apart in value: the curve, and the rotation spline through it, kept the speed
    of the quick segment far into the slow one. Between two keys the camera now stays between their values."""
    def pose(t, v):
        position = (0.0, 1.7, v) if field == "z" else (0.0, 1.7, 0.0)
        angles = {name: v for name in ("yaw", "pitch") if name == field}
        return Keyframe(t, position, fov=v if field == "fov" else None, **angles)
    keys = [pose(t, v) for t, v in zip(times, values)]
    poses = CameraPath(24, "catmull-rom", False, keys).poses()
    got = np.array([p.position[2] if field == "z" else getattr(p, field) for p in poses])
    at = np.array([i / 24 for i in range(len(poses))])
    for k in range(len(keys) - 1):
        between = (at >= times[k]) & (at <= times[k + 1])
        low, high = sorted(values[k:k + 2])
        assert low - 1e-6 <= got[between].min() and got[between].max() <= high + 1e-6, (k, got[between])
    if field == "pitch":  # and it never turns over: the camera's up stays up
        rotations = Rotation.concatenate([p.rotation() for p in poses])
        assert rotations.apply([0.0, 1.0, 0.0])[:, 1].min() >= 0.0


def test_a_key_without_a_position_stays_where_the_last_one_was(tmp_path):
    (tmp_path / "pan.toml").write_text('[path]\nrelative = true\n\n[[path.key]]\nt = 0.0\n\n[[path.key]]\nt = 1.0\n'
                                       'yaw = 90.0\n\n[[path.key]]\nt = 2.0\nposition = [1.0, 0.0, -2.0]\n'
                                       '\n[[path.key]]\nt = 3.0\npitch = 10.0\n')
    keys = load_path(tmp_path / "pan.toml").keys
    assert [k.position for k in keys] == [(0.0, 0.0, 0.0)] * 2 + [(1.0, 0.0, -2.0)] * 2  # a pan in place, then a walk
    assert [k.yaw for k in keys] == [0.0, 90.0, 90.0, 90.0]


def test_a_shipped_path_goes_by_its_name_from_any_folder(tmp_path, monkeypatch):
    # README's `--path levels/paths/walk.toml` worked only from the repository's folder.
    monkeypatch.chdir(tmp_path)
    assert load_path("walk") == load_path(PATHS_DIR / "walk.toml")
    assert load_path("panorama") == load_path(PATHS_DIR / "panorama.toml")
    with pytest.raises(InputError, match="^nope: no such camera path \\(shipped paths: panorama, walk; or give"):
        load_path("nope")
    with pytest.raises(InputError, match="unknown camera path type"):
        load_path("x" * 65)  # no name a shipped path has: a file without a known suffix, as before

def test_missing_and_unknown_files(tmp_path):
    with pytest.raises(InputError, match="no such file"):
        load_path(tmp_path / "nope.toml")
    (tmp_path / "folder.toml").mkdir()
    with pytest.raises(InputError, match="folder.toml: is a folder"):
        load_path(tmp_path / "folder.toml")
    (tmp_path / "latin1.toml").write_bytes("# caf\xe9\n".encode("latin-1"))
    with pytest.raises(InputError, match="latin1.toml: not UTF-8 text"):
        load_path(tmp_path / "latin1.toml")
    os.mkfifo(tmp_path / "fifo.toml")  # reading it would wait forever
    with pytest.raises(InputError, match="fifo.toml: is not a regular file"):
        load_path(tmp_path / "fifo.toml")
    (tmp_path / "zero.toml").symlink_to("/dev/zero")  # reading it would never end
    with pytest.raises(InputError, match="zero.toml: is not a regular file"):
        load_path(tmp_path / "zero.toml")
    (tmp_path / "cams.txt").write_bytes(b"\xff\xfe")
    with pytest.raises(InputError, match="cams.txt: not UTF-8 text"):
        load_path(tmp_path / "cams.txt")
    with pytest.raises(InputError, match="unknown camera path type"):
        load_path(tmp_path / "path.json")


def test_defaults_come_from_the_previous_key(tmp_path):
    f = tmp_path / "p.toml"
    f.write_text("\ufeff" + HEADER + key(0.0) + key(1.0, "yaw = 30\nfov = 50\n") + key(2.0))  # a BOM is allowed
    keys = load_path(f).keys
    assert (keys[0].yaw, keys[0].fov) == (0.0, 60.0)
    assert (keys[2].yaw, keys[2].fov) == (30.0, 50.0)


def test_save_load_round_trip(tmp_path):
    relative = CameraPath(30.0, "linear", True, [Keyframe(0.0, (0.0, 0.0, 0.0)),
                                                 Keyframe(1.0 / 3.0, (0.1, 0.0, -1.0), 12.5, -3.0, 1e-5, 55.0)])
    for original in (path(), relative, load_path(PATHS_DIR / "walk.toml")):
        save_path(original, tmp_path / "p.toml")
        assert load_path(tmp_path / "p.toml") == original


# --- reduction -----------------------------------------------------------------------------------

def test_path_from_poses_within_tolerance_with_fewer_keys():
    rng = np.random.default_rng(1)
    inputs = []
    script = [({"forward"}, 0.0, 30), ({"forward"}, 20.0, 40), (set(), -60.0, 20), ({"left", "fast"}, 5.0, 30)]
    for actions, dx, n in script:
        inputs += [InputState(frozenset(actions), (dx + rng.normal(0, 1), rng.normal(0, 1))) for _ in range(n)]
    dense = replay(Pose((0.0, 1.7, 0.0), yaw=170.0), inputs)
    # Poses rebuilt from rotations wrap yaw at +-180, as imported files do; the reduction must unwrap.
    dense = [Pose.from_rotation(p.position, p.rotation(), p.fov) for p in dense]
    reduced = path_from_poses(dense, fps=24.0, tolerance_m=0.05, tolerance_deg=0.5)
    assert 2 < len(reduced.keys) < len(dense) / 5
    again = reduced.poses()
    assert len(again) == len(dense)
    assert np.linalg.norm(arrays(again)[:, :3] - arrays(dense)[:, :3], axis=1).max() <= 0.05
    assert np.degrees((rotations(again).inv() * rotations(dense)).magnitude()).max() <= 0.5
    tight = path_from_poses(dense, fps=24.0, tolerance_m=0.005, tolerance_deg=0.05)
    assert len(tight.keys) > len(reduced.keys)
    smooth = path_from_poses(dense, fps=24.0, interpolation="catmull-rom")
    assert smooth.interpolation == "catmull-rom" and len(smooth.keys) >= len(reduced.keys)



def test_path_from_poses_holds_a_standstill_still():
    """A session that stands still for 5 s gave a path that crept a centimetre over it (within the 5 cm
    tolerance): rendered, the generated world made new frames there where play had held its picture."""
    from camera.pose import at_rest
    rng = np.random.default_rng(3)
    inputs = [InputState(frozenset({"forward"}), (rng.normal(0, 3), 0.0)) for _ in range(30)]
    inputs += [InputState()] * 120 + [InputState(frozenset({"left"}), (4.0, 1.0))] * 30 + [InputState()] * 60
    dense = replay(Pose((0.0, 1.7, 0.0), yaw=30.0), inputs)
    standstills, start = [], 0  # (first, last) frames within half the rest bounds of the first
    for i in range(1, len(dense) + 1):
        if i == len(dense) or not at_rest(dense[start], [dense[i]], within=0.5):
            if i - start > 24:
                standstills.append((start, i - 1))
            start = i
    assert len(standstills) == 2 and standstills[-1][1] == len(dense) - 1, standstills  # after each glide
    for interpolation in ("linear", "catmull-rom", None):
        again = path_from_poses(dense, fps=24.0, interpolation=interpolation).poses()
        for first, last in standstills:
            assert at_rest(again[first], again[first:last + 1]), (interpolation, first, last)

# --- RealEstate10K -------------------------------------------------------------------------------

def test_realestate_round_trip(tmp_path):
    rng = np.random.default_rng(2)
    poses = [Pose(tuple(rng.normal(0, 3, 3)), rng.uniform(-180, 180), rng.uniform(-60, 60), rng.uniform(-20, 20),
                  rng.uniform(40, 90)) for _ in range(20)]
    timestamps = 1_000_000 + np.arange(20) * 33_367
    save_realestate(poses, timestamps, tmp_path / "cams.txt", aspect=16 / 9, url="https://example.com/v")
    p = load_path(tmp_path / "cams.txt")
    assert p.interpolation == "linear" and p.fps == pytest.approx(1e6 / 33_367) and p.relative
    np.testing.assert_allclose([k.t for k in p.keys], (timestamps - timestamps[0]) / 1e6)
    loaded = [Pose(k.position, k.yaw, k.pitch, k.roll, k.fov) for k in p.resolved(poses[0]).keys]  # at its origin
    np.testing.assert_allclose(arrays(loaded)[:, :3], arrays(poses)[:, :3], atol=1e-6)
    np.testing.assert_allclose(arrays(loaded)[:, 4:], arrays(poses)[:, 4:], atol=1e-6)
    assert np.degrees((rotations(loaded).inv() * rotations(poses)).magnitude()).max() < 1e-6


def test_realestate_hand_made_file(tmp_path):
    fy = 0.5 / np.tan(np.radians(30.0))  # vertical fov 60
    fx = fy * 9 / 16
    # Line 2: identity -> our rest pose at the origin. Line 3: an OpenCV camera at (1, -2, -3) in the
    # OpenCV world (y down), looking along +x, upright: in our world it stands at (1, 2, 3), looks
    # along +X (yaw -90) and is level. Its world-to-camera rows are right = (0, 0, -1),
    # down = (0, 1, 0), forward = (1, 0, 0), t = -R C = (-3, 2, -1).
    text = (f"https://www.youtube.com/watch?v=xyz\n"
            f"0 {fx} {fy} 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n"
            f"41708 {fx} {fy} 0.5 0.5 0 0 0 0 -1 -3 0 1 0 2 1 0 0 -1\n")
    (tmp_path / "c.txt").write_text(text)
    p = load_realestate(tmp_path / "c.txt")
    a, b = p.keys
    np.testing.assert_allclose([*a.position, a.yaw, a.pitch, a.roll, a.fov], [0, 0, 0, 0, 0, 0, 60], atol=1e-9)
    np.testing.assert_allclose([*b.position, b.yaw % 360, b.pitch, b.roll, b.fov], [1, 2, 3, 270, 0, 0, 60], atol=1e-9)
    assert b.t == pytest.approx(0.041708)


def test_a_realestate_path_starts_at_the_start_pose_wherever_its_origin_is(tmp_path):
    """Its SLAM origin is arbitrary: read absolute, a camera at (0, 0, 0) stood in meadow's ground."""
    start = Pose((3.0, 1.7, -2.0), yaw=40.0, pitch=-3.0)
    s, c = np.sin(np.radians(10.0)), np.cos(np.radians(10.0))
    poses = [Pose((50.0 - i * s, -7.0, 20.0 - i * c), yaw=10.0, pitch=-20.0) for i in range(3)]  # 1 m a step ahead
    save_realestate(poses, 1_000_000 + np.arange(3) * 41_708, tmp_path / "c.txt")
    walked = load_path(tmp_path / "c.txt").poses(start=start)
    np.testing.assert_allclose(walked[0].position, start.position, atol=1e-9)
    assert walked[0].yaw == pytest.approx(start.yaw) and walked[0].pitch == pytest.approx(start.pitch)
    step = np.subtract(walked[-1].position, walked[0].position)  # 2 m forward of the start's heading
    np.testing.assert_allclose(step, 2.0 * np.array([-np.sin(np.radians(40.0)), 0.0, -np.cos(np.radians(40.0))]),
                               atol=1e-6)


def test_a_realestate_file_without_its_url_line_keeps_its_first_camera(tmp_path):
    rows = [f"{41708 * i} 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 {-i}" for i in range(3)]
    (tmp_path / "with.txt").write_text("https://example.com/v\n" + "\n".join(rows) + "\n")
    (tmp_path / "without.txt").write_text("\n".join(rows) + "\n")
    with_url, without = load_realestate(tmp_path / "with.txt"), load_realestate(tmp_path / "without.txt")
    assert len(without.keys) == 3 and without.keys == with_url.keys  # it used to drop the first camera unsaid


def test_a_damaged_first_camera_line_is_said_not_taken_for_the_url(tmp_path):
    # A first line of 18 numbers (one lost) was skipped as if it were the URL line, and the render went on.
    rows = [f"{41708 * i} 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 {-i}" for i in range(3)]
    (tmp_path / "cut.txt").write_text(rows[0].rsplit(" ", 1)[0] + "\n" + "\n".join(rows[1:]) + "\n")
    with pytest.raises(InputError, match="cut.txt: line 1: expected 19 numbers"):
        load_realestate(tmp_path / "cut.txt")


@pytest.mark.parametrize("line, message", [
    ("5 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1", "cams.txt: line 3: expected 19 numbers"),
    ("5 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 x", "cams.txt: line 3 (t2): must be a finite number, got 'x'"),
    ("5 nan 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0", "cams.txt: line 3 (fx): must be a finite number, got 'nan'"),
    ("0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0", "cams.txt: line 3: timestamps must increase"),
    ("5 0.5 0.9 0.5 0.5 0 0 2 0 0 0 0 1 0 0 0 0 1 0", "cams.txt: line 3: the 3x3 part of the matrix is not a rotation"),
    ("5 0.5 0 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0", "cams.txt: line 3: focal lengths must be positive"),
    ("5 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 inf", "cams.txt: line 3 (t2): must be a finite number"),
    ("5 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0", "cams.txt: timestamps: must be between 1 and 240"),
    ("41708 1e300 1e300 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0", "cams.txt: line 3 (fov): must be between 1 and 179"),
    ("9999999999999 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0", "cams.txt: timestamps: must be between 1 and 240"),
])
def test_realestate_validation(tmp_path, monkeypatch, line, message):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "cams.txt").write_text("url\n0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n" + line + "\n")
    with pytest.raises(InputError) as e:
        load_path("cams.txt")
    assert str(e.value).startswith(message)


def test_deeply_nested_toml_is_one_line_not_a_recursion_error(tmp_path):
    from camera.errors import TOO_DEEP
    (tmp_path / "walk.toml").write_text("[path]\nfps = " + "[" * 1000 + "]" * 1000 + "\n")
    with pytest.raises(InputError) as e:  # a RecursionError traceback before
        load_path(tmp_path / "walk.toml")
    assert str(e.value) == f"{tmp_path / 'walk.toml'}: not valid TOML for us: {TOO_DEEP}"


@pytest.mark.parametrize("rows, pitch", [("1 0 0 0 0 0 -1 0 0 1 0 0", "-90"), ("1 0 0 0 0 0 1 0 0 -1 0 0", "90")])
def test_a_realestate_camera_looking_straight_down_or_up_is_refused_as_a_toml_key_is(tmp_path, rows, pitch):
    # At pitch 90 yaw and roll are one: scipy's "Gimbal lock detected" warning leaked and the file was accepted,
    # where a TOML key's pitch must be within 89 degrees.
    (tmp_path / "cams.txt").write_text("url\n0 0.5 0.9 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 0\n"
                                       f"41708 0.5 0.9 0.5 0.5 0 0 {rows}\n")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # no warning leaks
        with pytest.raises(InputError) as e:
            load_path(tmp_path / "cams.txt")
    assert str(e.value) == (f"{tmp_path / 'cams.txt'}: line 3 (pitch): the camera's pitch must be within [-89, 89] "
                            f"degrees, got {pitch}")
    save_realestate([Pose((0.0, 0.0, 0.0)), Pose((0.0, 0.0, 0.0), pitch=-88.5)], [0, 41708], tmp_path / "c.txt")
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert load_path(tmp_path / "c.txt").keys[1].pitch == pytest.approx(-88.5)  # within the limit: as it was
    save_realestate([Pose((0.0, 0.0, 0.0)), Pose((0.0, 0.0, 0.0), pitch=89.0)], [0, 41708], tmp_path / "c.txt")
    assert load_path(tmp_path / "c.txt").keys[1].pitch == pytest.approx(89.0)  # at the limit, six digits or not


def test_save_path_on_a_full_disk_keeps_the_older_file_and_leaves_no_partial(tmp_path, monkeypatch):
    # It wrote p.toml.partial in place: a traceback, and an empty partial file left beside the older one.
    out = tmp_path / "p.toml"
    out.write_text("older\n")
    write_text = Path.write_text

    def full_disk(self, data, *args, **kwargs):  # the disk fills part-way through the file
        write_text(self, data[:10], *args, **kwargs)
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(self))

    monkeypatch.setattr(Path, "write_text", full_disk)
    with pytest.raises(InputError) as e:
        save_path(path(), out)
    monkeypatch.undo()
    assert str(e.value) == f"{out}: --out: cannot write it: No space left on device"
    assert out.read_text() == "older\n" and list(tmp_path.iterdir()) == [out]
    save_path(path(), out)  # with room, it is replaced
    assert load_path(out) == path() and list(tmp_path.iterdir()) == [out]


@pytest.mark.parametrize("text, message", [
    # one frame: its last key was dropped without a word (0.4 s at 1 fps rendered 1 frame, the start)
    ("[path]\nfps = 1\nrelative = true\n[[path.key]]\nt = 0\n[[path.key]]\nt = 0.4\nyaw = 30\n",
     "p.toml: path.key: the path lasts 0.4 s, less than half a frame at 1 fps: at least 0.5 s are needed"),
    # TOML's dates read datetime.date(1979, 5, 27); a key that is not a table array read "needs at least two"
    ("[path]\n[[path.key]]\nt = 1979-05-27\n[[path.key]]\nt = 1\n",
     "p.toml: path.key[0].t: must be a number, got a date or time (1979-05-27)"),
    ("[path]\nkey = 3\n", "p.toml: path.key: must be [[path.key]] tables, got an integer (3)"),
])
def test_what_a_path_file_cannot_be_is_said_plainly(tmp_path, text, message):
    (tmp_path / "p.toml").write_text(text)
    with pytest.raises(InputError) as e:
        load_path(tmp_path / "p.toml")
    assert str(e.value).endswith(message) or message in str(e.value), str(e.value)


def test_a_camera_path_given_as_a_level_is_said_to_be_one():
    from world.level import load_level
    with pytest.raises(InputError, match=r"walk.toml: path: unknown table \(allowed: level, scene, start\) \(this is "
                       r"a camera path: give it as --path\)"):
        load_level(PATHS_DIR / "walk.toml")
