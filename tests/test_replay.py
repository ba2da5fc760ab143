"""`explorer replay` and `explorer path from-session` on sessions written without a window: replay reproduces
every frame (through rewinds), names the first frame that differs, films the replay, and refuses bad sessions
in one line."""
import hashlib
import json

import numpy as np
import pytest

import explorer.replay
from camera.controls import InputState, replay as replay_controls
from camera.paths import load_path
from explorer.cli import main
from explorer.replay import replay
from explorer.session import SessionWriter, frame_sha1, read_session
from explorer.video import read_video
from world.level import load_level
from world.reference import ReferenceWorld

STEP_INPUTS = [InputState({"forward"}, (3.0, -1.0))] * 24 + [InputState({"left"}, (-6.0, 0.5))] * 24


class HistoryWorld:
    """A stand-in for the generated world: each frame depends on its pose and on every step before it, so a
    replay that skipped a rewind's restore (or took a step's poses apart) would come out different."""
    size = (16, 8)

    def reset(self, level, seed):
        self.history = float(seed)
        return self._frame(level.start)

    def step(self, poses):
        assert len(poses) == 4
        self.history = self.history * 0.9 + sum(p.yaw + p.position[2] for p in poses)
        return np.stack([self._frame(p) for p in poses])

    def state(self):
        return self.history

    def restore(self, state):
        self.history = state

    def _frame(self, pose):
        key = hashlib.sha1(np.float64(self.history).tobytes() + pose.to_array().tobytes()).digest()
        rng = np.random.default_rng(int.from_bytes(key[:8], "little"))
        return rng.integers(0, 256, (8, 16, 3), dtype=np.uint8)


def play_session(root, world, world_kind: str, steps: int, rewind_after: int | None = None, cut: int = 0,
                 level: str = "meadow"):
    """What the game writes, without a window: frame 0, whole steps of poses from the controls, optionally a
    rewind (to step 1) and a last step cut short by `cut` frames. Returns the session folder."""
    level = load_level(level)
    writer = SessionWriter(root, level, world_kind, seed=3, fps=24, size=world.size, device="test",
                           random_config="tiny" if world_kind == "generated" else None)
    poses = replay_controls(level.start, STEP_INPUTS * 2)
    frame0 = world.reset(level, 3)
    writer.frame(0.0, 0, level.start, InputState(), 1.0, 0.0, frame_sha1(frame0))
    snapshot = None
    for step in range(1, steps + 1):
        chunk = poses[4 * (step - 1):4 * step]
        images = world.step(chunk)
        if step == 1:
            snapshot = world.state()
        shown = 4 - cut if step == steps else 4
        for pose, image in list(zip(chunk, images))[:shown]:
            writer.frame(writer.frames / 24, step, pose, STEP_INPUTS[0], 2.0, 150.0, frame_sha1(image))
        if step == rewind_after:
            writer.rewind(to_frame=4, to_step=1)
            world.restore(snapshot)
    if not cut:
        writer.close()
    return writer.path


@pytest.fixture
def history_world(monkeypatch):
    monkeypatch.setattr(explorer.replay, "make_world", lambda *a, **k: HistoryWorld())
    return HistoryWorld()


def edit_yaw(session, frame: int, delta: float) -> None:
    path = session / "trajectory.jsonl"
    lines = path.read_text().splitlines()
    records = [json.loads(line) for line in lines]
    i = next(i for i, r in enumerate(records) if r.get("frame") == frame and "event" not in r)
    records[i]["pose"]["yaw"] += delta
    lines[i] = json.dumps(records[i])
    path.write_text("\n".join(lines) + "\n")


def test_check_passes_through_rewinds_and_names_the_first_changed_frame(tmp_path, history_world, capsys):
    session = play_session(tmp_path, history_world, "generated", steps=8, rewind_after=5)
    result = replay(read_session(session), check=True)
    assert result.mismatch is None and result.frames == result.total == 1 + 8 * 4

    assert main(["replay", str(session), "--check"]) == 0
    assert "33 of 33 frames match" in capsys.readouterr().out

    edit_yaw(session, 26, 0.5)  # after the rewind
    # every frame of its step depends on it (as in the generated world): the first of them is 25
    assert replay(read_session(session), check=True).mismatch == 25
    assert main(["replay", str(session), "--check"]) == 1
    err = capsys.readouterr().err
    assert "frame 25 " in err and len(err.strip().splitlines()) == 1
    assert err.startswith(f"explorer: replay: {session / 'trajectory.jsonl'}:27: "), err  # was "image/trajectory…"


def test_a_frame_that_differs_after_its_level_file_changed_says_so(tmp_path, history_world, capsys):
    # A level edited after play changes the frames; the message blamed nothing but the device it was recorded on.
    from world.level import LEVELS_DIR
    level_file = tmp_path / "mine.toml"
    level_file.write_text((LEVELS_DIR / "meadow.toml").read_text().replace('name = "meadow"', 'name = "mine"'))
    session = play_session(tmp_path / "s", history_world, "generated", steps=2, level=str(level_file))
    edit_yaw(session, 5, 0.5)
    assert main(["replay", str(session), "--check"]) == 1
    assert "has changed" not in capsys.readouterr().err
    level_file.write_text(level_file.read_text() + "\n# edited\n")
    assert main(["replay", str(session), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"(recorded on test; its level file {level_file} has changed since)" in err, err
    from PIL import Image  # and its start picture: the frames differed with no reason given
    Image.fromarray(np.full((72, 128, 3), 90, np.uint8)).save(tmp_path / "start.png")
    level_file.write_text(level_file.read_text().replace('name = "mine"', 'name = "mine"\nimage = "start.png"'))
    pictured = play_session(tmp_path / "p", history_world, "generated", steps=2, level=str(level_file))
    edit_yaw(pictured, 5, 0.5)
    Image.fromarray(np.full((72, 128, 3), 91, np.uint8)).save(tmp_path / "start.png")
    assert main(["replay", str(pictured), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"(recorded on test; its start image {tmp_path / 'start.png'} has changed since)" in err, err
    video = tmp_path / "r.mp4"  # the video written up to the difference replaced the one there, unsaid
    assert main(["replay", str(session), "--check", "--out", str(video)]) == 1
    assert capsys.readouterr().err.strip().endswith(f"; wrote {video} up to it") and video.is_file()
    whole = tmp_path / "whole.mp4"  # a video there before stays: it was replaced by one cut short at the difference
    whole.write_bytes(b"an earlier, whole video")
    assert main(["replay", str(session), "--check", "--out", str(whole)]) == 1
    assert capsys.readouterr().err.strip().endswith(f"; kept the {whole} there before (not replaced by a video cut "
                                                    "short)")
    assert whole.read_bytes() == b"an earlier, whole video" and not list(tmp_path.glob("*partial*"))



def test_a_check_that_fails_at_frame_0_keeps_the_video_there(tmp_path, capsys):
    # With no frame to write, the video there before was replaced by a file of no stream, and imageio said so.
    session = play_reference_session(tmp_path / "s", steps=2)
    path = session / "trajectory.jsonl"
    records = [json.loads(line) for line in path.read_text().splitlines()]
    records[0]["frame_sha1"] = "0" * 40
    path.write_text("".join(json.dumps(r) + "\n" for r in records))
    video = tmp_path / "keep.mp4"
    video.write_bytes(b"precious")
    assert main(["replay", str(session), "--check", "--out", str(video)]) == 1
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and err.strip().endswith(
        f"; no frame came before it, so {video} was not written"), err
    assert video.read_bytes() == b"precious" and sorted(tmp_path.iterdir()) == [video, tmp_path / "s"]

def test_a_replay_that_ignored_the_rewind_would_differ(tmp_path, history_world, monkeypatch):
    session = play_session(tmp_path, history_world, "generated", steps=8, rewind_after=5)
    monkeypatch.setattr(HistoryWorld, "restore", lambda self, state: None)
    assert replay(read_session(session), check=True).mismatch == 21  # the first frame after the rewind


def test_a_step_cut_short_is_left_out_and_said(tmp_path, history_world, capsys):
    session = play_session(tmp_path, history_world, "generated", steps=6, cut=2)
    with open(session / "trajectory.jsonl", "a") as f:
        f.write('{"frame": 23, "t": 0.9')  # and a torn line
    assert main(["replay", str(session), "--check"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("21 of 23 frames match") and "frames 21-22 not replayed" in out
    assert "the session has no end: it is still being played, or was cut off" in out  # it had not "ended"


def play_reference_session(root, steps: int):
    """A session of the reference world at 32x18, written as the game writes one."""
    world = ReferenceWorld((32, 18))
    try:
        return play_session(root, world, "reference", steps=steps)
    finally:
        world.close()


def test_out_writes_the_replay_of_a_reference_session(tmp_path, capsys):
    session = play_reference_session(tmp_path, steps=3)
    out = tmp_path / "replay.mp4"
    assert main(["replay", str(session), "--check", "--out", str(out)]) == 0
    assert "13 of 13 frames match" in capsys.readouterr().out
    video = read_video(out)
    assert video.shape == (13, 18, 32, 3) and video.std() > 5


def test_path_from_session_is_within_the_stated_tolerance(tmp_path, history_world, capsys):
    session = play_session(tmp_path, history_world, "generated", steps=12)
    out = tmp_path / "played.toml"
    assert main(["path", "from-session", str(session), "--out", str(out), "--tolerance-m", "0.02"]) == 0
    message = capsys.readouterr().out
    assert "0.02 m" in message and "0.5 degrees" in message
    # how to film it in the world it was played in: a path alone renders with seed 0 and the shipped model
    hint = message.splitlines()[-1]
    assert hint.startswith("to film the same camera path: explorer render --level ") and f"--path {out}" in hint
    assert "--world generated" in hint and "--seed 3" in hint and "rewind" not in hint, hint
    # its poses are the path's, within the tolerance of the played ones: the frames can differ, and that is said
    assert "can differ a little from the session's" in hint and f"explorer replay {session} --out" in hint, hint
    # after a rewind the generated world's frames depend on a past the path does not have: said, with what films it
    rewound = play_session(tmp_path / "rewound", history_world, "generated", steps=12, rewind_after=2)
    assert main(["path", "from-session", str(rewound), "--out", str(tmp_path / "r.toml")]) == 0
    hint = capsys.readouterr().out.splitlines()[-1]
    assert "after its first rewind, at frame 9" in hint and f"explorer replay {rewound} --out" in hint, hint
    reference = play_reference_session(tmp_path / "reference", steps=2)  # rendered at the size it was played at
    assert main(["path", "from-session", str(reference), "--out", str(tmp_path / "ref.toml")]) == 0
    assert capsys.readouterr().out.splitlines()[-1].endswith("--world reference --size 32x18")
    path = load_path(out)
    recorded = [json.loads(line)["pose"] for line in (session / "trajectory.jsonl").read_text().splitlines()]
    resampled = path.poses()
    assert len(resampled) == len(recorded) and 2 <= len(path.keys) < len(recorded) / 2
    error = max(np.linalg.norm(np.subtract(p.position, r["position"])) for p, r in zip(resampled, recorded))
    assert error <= 0.02 + 1e-9


@pytest.mark.parametrize("break_it, words", [
    (lambda s: (s / "session.json").unlink(), ["session.json", "missing"]),
    (lambda s: (s / "session.json").write_text("{"), ["session.json", "not valid JSON"]),
    (lambda s: (s / "session.json").write_bytes(b"\xff{}"), ["session.json", "not UTF-8"]),
    (lambda s: (s / "trajectory.jsonl").write_text("{}\n"), ["trajectory.jsonl:1", "frame", "missing"]),
    (lambda s: (s / "trajectory.jsonl").write_text('{"frame": 0}\nnot json\n{"frame": 2}\n'),
     ["trajectory.jsonl:1"]),
])
def test_corrupt_sessions_are_one_line_and_exit_2(tmp_path, history_world, capsys, break_it, words):
    session = play_session(tmp_path, history_world, "generated", steps=2)
    break_it(session)
    for command in (["replay", str(session), "--check"], ["path", "from-session", str(session), "--out",
                                                         str(tmp_path / "p.toml")]):
        assert main(command) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err
        for word in words:
            assert word in err
    assert not (tmp_path / "p.toml").exists()


def test_a_session_whose_level_is_gone_names_session_json(tmp_path, history_world, capsys):
    session = play_session(tmp_path, history_world, "generated", steps=2)
    header = json.loads((session / "session.json").read_text())
    header["level"] |= {"name": "moved", "path": str(tmp_path / "gone" / "moved.toml")}
    (session / "session.json").write_text(json.dumps(header))
    assert main(["replay", str(session), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "session.json: level: its level file" in err and "'moved'" in err, err


def test_a_difference_in_a_session_from_before_the_kv_cache_change_says_so(tmp_path, history_world, capsys):
    # a generated session recorded before 2026-12-04 differed at its 70th frame, "recorded on cpu" the only reason
    session = play_session(tmp_path, history_world, "generated", steps=3)
    edit_yaw(session, 5, 0.5)
    assert main(["replay", str(session), "--check"]) == 1
    assert "older than 2026-12-05" not in capsys.readouterr().err  # a session of today's: no such reason
    header = json.loads((session / "session.json").read_text())
    del header["controls"]  # what an explorer older than 2026-12-05 wrote
    (session / "session.json").write_text(json.dumps(header))
    assert main(["replay", str(session), "--check"]) == 1
    err = capsys.readouterr().err
    assert "; the session is from an explorer older than 2026-12-05, and one older than 2026-12-04 kept the " \
        "generated world's KV cache otherwise" in err and len(err.strip().splitlines()) == 1, err


def test_a_difference_in_a_session_recorded_by_another_explorer_names_both(tmp_path, history_world, capsys):
    # session.json did not say which explorer recorded it: a difference from a change in the program read as a bug
    from explorer.session import program_version
    session = play_session(tmp_path, history_world, "reference", steps=2)
    header = json.loads((session / "session.json").read_text())
    assert header["program"] == program_version() and program_version().startswith("0.")
    edit_yaw(session, 5, 0.5)
    assert main(["replay", str(session), "--check"]) == 1
    assert "recorded by explorer" not in capsys.readouterr().err  # the same program: no such reason
    header["program"] = "0.0.9 1234567"
    (session / "session.json").write_text(json.dumps(header))
    assert main(["replay", str(session), "--check"]) == 1
    err = capsys.readouterr().err
    assert f"; it was recorded by explorer 0.0.9 1234567, and this is {program_version()}" in err, err


def test_a_gone_level_of_ones_own_is_not_replaced_by_the_shipped_one_of_its_name(tmp_path, history_world, capsys):
    # mine.toml named "meadow", deleted: replay --out filmed the shipped meadow and exited 0; a shipped level moved
    # away (the same file) still replays
    from world.level import LEVELS_DIR
    mine = tmp_path / "mine.toml"
    mine.write_text((LEVELS_DIR / "meadow.toml").read_text().replace("seed = 7", "seed = 99"))
    assert "seed = 99" in mine.read_text()
    session = play_session(tmp_path / "s", history_world, "generated", steps=2, level=str(mine))
    mine.unlink()
    assert main(["replay", str(session), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"session.json: level: its level file {mine} is gone and the shipped level of its name is another " \
        "file; put the file back" in err, err
    assert main(["path", "from-session", str(session), "--out", str(tmp_path / "p.toml")]) == 0
    assert f"(its level file {mine} is gone: give the level it was played in)" in capsys.readouterr().out
    same = tmp_path / "meadow.toml"
    same.write_text((LEVELS_DIR / "meadow.toml").read_text())
    session = play_session(tmp_path / "t", history_world, "generated", steps=2, level=str(same))
    same.unlink()
    assert main(["replay", str(session), "--check"]) == 0


def test_an_unknown_random_config_names_session_json(tmp_path, history_world, capsys):
    session = play_session(tmp_path, history_world, "generated", steps=2)
    header = json.loads((session / "session.json").read_text())
    header["random_config"] = "huge"
    (session / "session.json").write_text(json.dumps(header))
    assert main(["replay", str(session), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "session.json: random_config: unknown config 'huge'" in err, err


def test_random_weights_too_large_for_memory_name_where_the_config_was_given(tmp_path, history_world, capsys,
                                                                             monkeypatch):
    """The message named only "model config 'tiny'": not the session.json field or the option that asked for it."""
    from world import generated
    session = play_session(tmp_path, history_world, "generated", steps=2)
    header = json.loads((session / "session.json").read_text())
    header["random_config"] = "tiny"
    (session / "session.json").write_text(json.dumps(header))
    from world.make import make_world
    monkeypatch.setattr(explorer.replay, "make_world", make_world)  # the real world, past the recorded one
    monkeypatch.setattr(generated, "memory_free", lambda device: 1024)  # a kilobyte free
    assert main(["replay", str(session), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert f"{session / 'session.json'}: random_config: model config 'tiny' needs about" in err, err
    assert main(["bench", "--config", "tiny", "--window", "4", "--seconds", "1"]) == 2
    assert "error: command line: --config: model config 'tiny' needs about" in capsys.readouterr().err


def test_path_from_session_refuses_a_path_that_render_would_refuse(tmp_path, history_world, capsys):
    """Yaw that swings a million degrees each frame unwraps past a path file's limit: no file, one line, exit 2."""
    session = play_session(tmp_path, history_world, "generated", steps=2)
    lines = (session / "trajectory.jsonl").read_text().splitlines()
    records = [json.loads(line) for line in lines]
    for i, record in enumerate(records):
        record["pose"]["yaw"] = 999999.0 * (-1) ** i
    (session / "trajectory.jsonl").write_text("".join(json.dumps(r) + "\n" for r in records))
    assert main(["path", "from-session", str(session), "--out", str(tmp_path / "p.toml")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "cannot be a camera path" in err and ".yaw" in err, err
    assert not (tmp_path / "p.toml").exists()


def test_path_from_session_out_must_be_a_toml_file_outside_the_session(tmp_path, history_world, capsys):
    session = play_session(tmp_path, history_world, "generated", steps=2)
    recorded = (session / "trajectory.jsonl").read_bytes()
    for out, words in ((session / "trajectory.jsonl", ["--out", ".toml"]),
                       (session / "path.toml", ["--out", "inside the session folder"]),
                       (tmp_path / "p.txt", ["--out", ".toml"]),
                       (tmp_path, ["--out", ".toml"])):
        assert main(["path", "from-session", str(session), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and all(w in err for w in words), err
    assert (session / "trajectory.jsonl").read_bytes() == recorded and not (session / "path.toml").exists()
    nested = tmp_path / "new" / "folder" / "p.toml"  # missing folders are made
    assert main(["path", "from-session", str(session), "--out", str(nested)]) == 0
    assert len(load_path(nested).keys) >= 2


def test_a_missing_session_folder_is_one_line_and_exit_2(tmp_path, capsys):
    assert main(["replay", str(tmp_path / "nowhere")]) == 2
    assert "no such session folder" in capsys.readouterr().err


def test_a_session_from_before_the_hold_at_rest_replays_as_it_was_played(tmp_path, capsys):
    # Sessions played before the generated world held its picture at rest ran the model there; their header has
    # no hold_at_rest, and replaying them with the hold would differ from their first step at rest on.
    from world.generated import GeneratedWorld
    level = load_level("meadow")
    for hold in (True, False):
        world = GeneratedWorld.open(device="cpu", random_config="tiny")
        world.hold_at_rest = hold
        writer = SessionWriter(tmp_path / str(hold), level, "generated", seed=3, fps=24, size=world.size,
                               device="test", random_config="tiny", threads=None)
        if not hold:
            writer.header.pop("hold_at_rest")
            (writer.path / "session.json").write_text(json.dumps(writer.header))
        writer.frame(0.0, 0, level.start, InputState(), 1.0, 0.0, frame_sha1(world.reset(level, 3)))
        for step in (1, 2):  # the camera at rest
            for i, image in enumerate(world.step([level.start] * 4)):
                writer.frame((4 * step + i - 3) / 24, step, level.start, InputState(), 1.0, 150.0, frame_sha1(image))
        writer.close()
        assert main(["replay", str(writer.path), "--check"]) == 0, capsys.readouterr().err
        assert "9 of 9 frames match" in capsys.readouterr().out


def test_a_session_whose_checkpoint_file_is_gone_replays_with_the_same_model(tmp_path, monkeypatch, capsys):
    # A session recorded the checkpoint's absolute path: played in a clone since deleted (or on another machine),
    # it could not be replayed at all, though the shipped model was the same file.
    from model.checkpoint import checkpoint_sha256, default_checkpoint_path
    opened = []

    def make_world(kind, size=None, checkpoint=None, **_):
        opened.append(checkpoint)
        world = HistoryWorld()
        world.checkpoint_sha256 = checkpoint_sha256(checkpoint)
        return world
    monkeypatch.setattr(explorer.replay, "make_world", make_world)
    session = play_session(tmp_path, HistoryWorld(), "generated", steps=2)
    header = json.loads((session / "session.json").read_text())
    shipped = default_checkpoint_path()
    header |= {"random_config": None, "checkpoint": str(tmp_path / "deleted-clone" / "mini.safetensors"),
               "checkpoint_sha256": checkpoint_sha256(shipped)}
    (session / "session.json").write_text(json.dumps(header))
    assert main(["replay", str(session), "--check"]) == 0, capsys.readouterr().err
    assert opened == [str(shipped)] and "9 of 9 frames match" in capsys.readouterr().out

    other = tmp_path / "other.safetensors"  # not the model the session was played with
    other.write_bytes(b"another model")
    header["checkpoint_sha256"] = checkpoint_sha256(other)
    (session / "session.json").write_text(json.dumps(header))
    assert main(["replay", str(session), "--check"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "session.json: checkpoint:" in err and "--checkpoint" in err, err
    assert main(["replay", str(session), "--check", "--checkpoint", str(other)]) == 0, capsys.readouterr().err
    assert opened[-1] == str(other)
    assert main(["replay", str(session), "--check", "--checkpoint", str(shipped)]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "is not the checkpoint" in err and str(shipped) in err, err
    assert f"SHA-256 {checkpoint_sha256(shipped)}; the session's is {checkpoint_sha256(other)}" in err, err


def test_a_checkpoint_for_a_session_without_a_model_is_refused(tmp_path, capsys):
    session = play_reference_session(tmp_path, steps=1)
    assert main(["replay", str(session), "--check", "--checkpoint", "any.safetensors"]) == 2
    err = capsys.readouterr().err.strip()
    assert "--checkpoint: session" in err and "reference world, with no checkpoint" in err, err


def test_replay_out_of_a_session_with_odd_frames_blames_session_json(tmp_path, capsys):
    # It blamed the video (--out: "H.264 needs even width and height"), after opening the world.
    session = play_reference_session(tmp_path, steps=1)
    header = json.loads((session / "session.json").read_text())
    header["size"] = [31, 18]
    (session / "session.json").write_text(json.dumps(header))
    assert main(["replay", str(session), "--out", str(tmp_path / "r.mp4")]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "session.json: size: 31x18 frames" in err, err
    assert not (tmp_path / "r.mp4").exists()


def test_path_from_session_hint_names_the_model_where_it_is_now(tmp_path, history_world, capsys):
    # The hint gave the recorded checkpoint path even where the file had gone, so the command it suggested failed.
    from model.checkpoint import checkpoint_sha256, default_checkpoint_path
    session = play_session(tmp_path, history_world, "generated", steps=2)
    header = json.loads((session / "session.json").read_text())
    gone = str(tmp_path / "deleted-clone" / "mini.safetensors")
    for digest, words, absent in ((checkpoint_sha256(default_checkpoint_path()), [], ["--checkpoint", "gone"]),
                                  ("0" * 64, [f"--checkpoint {gone}", f"its checkpoint {gone} is gone"], [])):
        header |= {"random_config": None, "checkpoint": gone, "checkpoint_sha256": digest}
        (session / "session.json").write_text(json.dumps(header))
        assert main(["path", "from-session", str(session), "--out", str(tmp_path / "p.toml")]) == 0
        hint = capsys.readouterr().out.splitlines()[-1]
        assert all(w in hint for w in words) and not any(w in hint for w in absent), hint
