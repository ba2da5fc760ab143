"""Session logs: what the writer writes, the reader reads back exactly; torn tails are tolerated; anything else
that is wrong is an InputError naming the file, the line and the field."""
import json
import os

import numpy as np
import pytest

from camera.controls import InputState
from camera.errors import InputError
from camera.pose import Pose
from explorer.session import SessionWriter, frame_sha1, read_session, summary
from world.level import load_level


def random_pose(rng) -> Pose:
    return Pose(tuple(rng.normal(size=3) * 10), rng.uniform(-400, 400), rng.uniform(-80, 80), rng.normal() * 5,
                rng.uniform(40, 90))


def write_session(root, steps: int = 3, rewind_after: int | None = None, seed: int = 0):
    """A session with frame 0 and `steps` whole steps (optionally a rewind to step 1 after step `rewind_after`);
    returns the writer (closed) and what was written."""
    rng = np.random.default_rng(seed)
    writer = SessionWriter(root, load_level("meadow"), "reference", seed=5, fps=24, size=(16, 8), device="test")
    written = []

    def frame(step):
        pose = random_pose(rng)
        inp = InputState(frozenset({"forward", "fast"}) if rng.random() < 0.5 else frozenset(),
                         tuple(rng.normal(size=2) * 7), tuple(rng.uniform(-1, 1, 4)))
        sha1 = frame_sha1(rng.integers(0, 256, (8, 16, 3), dtype=np.uint8))
        writer.frame(writer.frames / 24, step, pose, inp, float(rng.uniform(1, 50)), float(rng.uniform(50, 300)),
                     sha1)
        written.append((pose, inp, sha1, step))

    frame(0)
    for step in range(1, steps + 1):
        for _ in range(4):
            frame(step)
        if step == rewind_after:
            writer.rewind(to_frame=4, to_step=1)
    return writer, written


def test_round_trip_is_exact_and_ended_only_on_close(tmp_path):
    writer, written = write_session(tmp_path, steps=4, rewind_after=2)
    header = json.loads((writer.path / "session.json").read_text())
    assert "ended" not in header  # not closed yet: as after a crash
    lines = (writer.path / "trajectory.jsonl").read_text().splitlines()
    assert len(lines) == 1 + 4 * 4 + 1  # flushed per line, before close
    writer.close()

    session = read_session(writer.path)
    assert session.ended and not session.torn
    assert session.header["world"] == "reference" and session.size == (16, 8) and session.header["seed"] == 5
    assert session.header["level"]["name"] == "meadow"
    assert [(f.pose, f.input, f.frame_sha1, f.step) for f in session.frames] == written
    assert [f.frame for f in session.frames] == list(range(len(written)))
    [rewind] = session.rewinds
    assert (rewind.frame, rewind.to_frame, rewind.to_step) == (9, 4, 1)
    assert session.frames[rewind.frame].line == rewind.line + 1


def test_sessions_started_in_the_same_second_get_their_own_folders(tmp_path):
    level = load_level("meadow")
    paths = {SessionWriter(tmp_path, level, "reference", 0, 24, (16, 8), "test").path for _ in range(3)}
    assert len(paths) == 3 and all(p.name.endswith("meadow") or "meadow-" in p.name for p in paths)


def test_a_torn_last_line_is_left_out(tmp_path):
    writer, written = write_session(tmp_path, steps=2)
    with open(writer.path / "trajectory.jsonl", "a") as f:
        f.write('{"frame": 9, "t": 0.37, "step": 3, "pose": {"posi')  # killed while writing
    session = read_session(writer.path)
    assert session.torn and len(session.frames) == len(written) and not session.ended


def test_a_short_last_step_is_accepted(tmp_path):
    writer, written = write_session(tmp_path, steps=2)
    lines = (writer.path / "trajectory.jsonl").read_text().splitlines()
    (writer.path / "trajectory.jsonl").write_text("\n".join(lines[:-2]) + "\n")
    assert len(read_session(writer.path).frames) == len(written) - 2


def edit_line(session, number: int, change) -> None:
    path = session / "trajectory.jsonl"
    lines = path.read_text().splitlines()
    lines[number - 1] = change(lines[number - 1])
    path.write_text("\n".join(lines) + "\n")


def set_field(field, value):
    def change(line):
        record = json.loads(line)
        record[field] = value
        return json.dumps(record)
    return change


@pytest.mark.parametrize("number, change, where, field", [
    (3, lambda line: line[:20], "trajectory.jsonl:3", None),                   # cut in the middle of the file
    (3, lambda line: "\n" + line[:20], "trajectory.jsonl:4", None),            # blank lines are skipped, counted
    (3, set_field("frame", 7), "trajectory.jsonl:3", "frame"),
    (3, set_field("pose", {"position": [0, 0], "yaw": 0, "pitch": 0, "roll": 0, "fov": 60}), "trajectory.jsonl:3",
     "pose.position"),
    (3, set_field("pose", {"position": [1e300, 0, 0], "yaw": 0, "pitch": 0, "roll": 0, "fov": 60}),
     "trajectory.jsonl:3", "pose.position"),
    (3, set_field("pose", {"position": [0, 0, 0], "yaw": 0, "pitch": 1000, "roll": 0, "fov": 60}),
     "trajectory.jsonl:3", "pose.pitch"),
    (3, set_field("pose", {"position": [0, 0, 0], "yaw": 0, "pitch": 0, "roll": 0, "fov": 0}),
     "trajectory.jsonl:3", "pose.fov"),
    (3, set_field("t", -1e308), "trajectory.jsonl:3", "t"),
    (3, set_field("t", 0.0), "trajectory.jsonl:3", "t"),                     # back in time
    (3, set_field("latency_ms", 1e300), "trajectory.jsonl:3", "latency_ms"),
    (3, set_field("input", {"actions": ["jump"]}), "trajectory.jsonl:3", "input.actions"),
    (3, set_field("frame_sha1", "abc"), "trajectory.jsonl:3", "frame_sha1"),
    (3, set_field("frame_sha1", "ZZ" * 20), "trajectory.jsonl:3", "frame_sha1"),  # 40 characters, not hex
    (4, set_field("step", 2), "trajectory.jsonl:2", "step"),                   # step 1 (from line 2) is short
    (1, set_field("step", 1), "trajectory.jsonl:1", "step"),
    (10, lambda line: json.dumps({"event": "teleport", "frame": 9}), "trajectory.jsonl:10", "event"),
    (10, lambda line: json.dumps({"event": "resume", "frame": 99}), "trajectory.jsonl:10", "frame"),
    (10, lambda line: json.dumps({"event": "rewind", "frame": 9, "to_frame": 3, "to_step": 1}),
     "trajectory.jsonl:10", "to_frame"),                                      # frame 3 is not a step's last
    (8, lambda line: json.dumps({"event": "rewind", "frame": 7, "to_frame": 4, "to_step": 1}) + "\n" + line,
     "trajectory.jsonl:8", "frame"),                                          # in the middle of step 2
    (3, set_field("input", {"actions": [], "mouse": [10**400, 0]}), "trajectory.jsonl:3", "input.mouse"),
    (3, lambda line: '{"big": 1' + "0" * 5000 + ", " + line[1:], "trajectory.jsonl:3", None),
])
def test_corrupt_lines_are_named(tmp_path, number, change, where, field):
    writer, _ = write_session(tmp_path, steps=3, rewind_after=2)
    writer.close()
    edit_line(writer.path, number, change)
    with pytest.raises(InputError) as e:
        read_session(writer.path)
    assert where in str(e.value) and e.value.field == field
    assert "\n" not in str(e.value)


def test_a_negative_step_is_said_to_be_below_0(tmp_path):
    writer, _ = write_session(tmp_path, steps=2)
    writer.close()
    edit_line(writer.path, 3, set_field("step", -1))  # "must be a whole number, got -1": which it is
    with pytest.raises(InputError, match=r"step: must be a whole number 0 or more, got -1"):
        read_session(writer.path)


def test_a_pose_that_is_not_finite_is_said_to_be(tmp_path):
    writer, _ = write_session(tmp_path, steps=2)
    writer.close()
    for pose, field in (({"position": [float("inf"), 0, 0], "yaw": 0, "pitch": 0, "roll": 0, "fov": 60}, "position"),
                        ({"position": [0, 0, 0], "yaw": float("nan"), "pitch": 0, "roll": 0, "fov": 60}, "yaw")):
        edit_line(writer.path, 3, set_field("pose", pose))  # json writes Infinity and NaN, which it reads back
        with pytest.raises(InputError, match=f"pose.{field}: must be .*finite"):
            read_session(writer.path)


@pytest.mark.parametrize("field, value", [("format", "explorer-session/0"), ("size", [16]), ("world", "dream"),
                                          ("seed", "zero"), ("fps", 0), ("fps", 1e9), ("level", "meadow"),
                                          ("threads", 0), ("threads", 10**9),
                                          ("size", [100000, 100000]),
                                          ("threads", 1.5), ("controls", [0.12]),
                                          ("controls", {"mouse_sensitivity": -1.0}),
                                          ("controls", {"invert_y": "yes"}), ("controls", {"ease_time": 0}),
                                          ("controls", {"turbo": 2.0}), ("fps", 10**400),
                                          ("controls", {"walk_speed": -10**400}), ("ended", 12),
                                          ("display", [1280, 720])])
def test_corrupt_headers_are_named(tmp_path, field, value):
    writer, _ = write_session(tmp_path)
    writer.close()
    header = json.loads((writer.path / "session.json").read_text())
    header[field] = value
    (writer.path / "session.json").write_text(json.dumps(header))
    with pytest.raises(InputError) as e:
        read_session(writer.path)
    named = field if not isinstance(value, dict) else f"{field}.{next(iter(value))}"
    assert "session.json" in str(e.value) and e.value.field == named and "\n" not in str(e.value)


@pytest.mark.parametrize("edit, field, words", [
    (dict(seed=-1), "seed", "from 0 to 9223372036854775807"),  # 2**70 used to replay as its value modulo 2**64
    (dict(seed=2**70), "seed", "from 0 to 9223372036854775807"),
    (dict(checkpoint=None), "checkpoint", "missing"),  # replay used to raise KeyError
    (dict(checkpoint_sha256=None), "checkpoint_sha256", "missing"),
    (dict(checkpoint="mini.safetensors"), "checkpoint", "must be null: the reference world has no model"),
    (dict(world="generated"), "checkpoint", "not neither"),
    (dict(world="generated", checkpoint="m.safetensors", random_config="mini"), "checkpoint", "not both"),
    (dict(world="generated", checkpoint="m.safetensors"), "checkpoint_sha256", "with a checkpoint"),
    (dict(world="generated", checkpoint="m.safetensors", checkpoint_sha256="abc"), "checkpoint_sha256", "64"),
])
def test_a_header_must_say_one_thing_about_its_model_and_seed(tmp_path, edit, field, words):
    writer, _ = write_session(tmp_path)
    writer.close()
    header = json.loads((writer.path / "session.json").read_text())
    for key, value in edit.items():
        if value is None and key.startswith("checkpoint"):
            del header[key]
        else:
            header[key] = value
    (writer.path / "session.json").write_text(json.dumps(header))
    with pytest.raises(InputError) as e:
        read_session(writer.path)
    assert e.value.field == field and words in str(e.value), str(e.value)


def test_the_control_settings_are_logged_and_an_older_session_without_them_has_the_defaults(tmp_path):
    from camera.controls import ControlSettings
    writer, _ = write_session(tmp_path)
    writer.close()
    assert read_session(writer.path).controls == ControlSettings()
    header = json.loads((writer.path / "session.json").read_text())
    assert header["controls"] == ControlSettings().to_dict()
    del header["controls"]  # as sessions logged before the setting existed
    (writer.path / "session.json").write_text(json.dumps(header))
    assert read_session(writer.path).controls == ControlSettings()


def test_missing_pieces_are_named(tmp_path):
    with pytest.raises(InputError, match="no such session folder"):
        read_session(tmp_path / "nowhere")
    (tmp_path / "walk.mp4").write_bytes(b"")
    with pytest.raises(InputError, match="walk.mp4: is a file; give the session's folder"):
        read_session(tmp_path / "walk.mp4")
    with pytest.raises(InputError, match="session.json: missing"):
        read_session(tmp_path)
    writer, _ = write_session(tmp_path)
    os.remove(writer.path / "trajectory.jsonl")
    with pytest.raises(InputError, match="trajectory.jsonl: missing"):
        read_session(writer.path)


def test_the_summary_module_prints_one_line_errors(tmp_path):
    import subprocess
    import sys
    for args in ([], [str(tmp_path / "nowhere")], [str(tmp_path / ("n" * 300))]):  # the last: a name too long
        proc = subprocess.run([sys.executable, "-m", "explorer.session", *args], capture_output=True, text=True)
        assert proc.returncode == 2 and len(proc.stderr.strip().splitlines()) == 1, proc.stderr
    # several sessions (docs/benchmarks.md's `python -m explorer.session D/*/`): a line each, naming its session
    folders = [str(write_session(tmp_path / name)[0].path) for name in ("a", "b")]
    proc = subprocess.run([sys.executable, "-m", "explorer.session", *folders], capture_output=True, text=True)
    lines = [json.loads(line) for line in proc.stdout.splitlines()]
    assert proc.returncode == 0 and [line["session"] for line in lines] == folders and lines[0]["frames"] > 0
    # a bad one among them is said, and the ones after it still come; exit 2
    proc = subprocess.run([sys.executable, "-m", "explorer.session", folders[0], str(tmp_path / "nowhere"),
                           folders[1]], capture_output=True, text=True)
    assert proc.returncode == 2 and "nowhere" in proc.stderr and len(proc.stdout.splitlines()) == 2, proc


def test_summary_counts_dropped_frames_and_latency(tmp_path):
    level = load_level("meadow")
    writer = SessionWriter(tmp_path, level, "reference", 0, 24, (16, 8), "test")
    # frame 0, then a step shown at 24 fps after the pipeline filled (not a drop), two ticks without a new frame
    # (dropped), and another step
    ts = [0.0] + [0.2 + i / 24 for i in range(4)] + [0.2 + (6 + i) / 24 for i in range(4)]
    for i, t in enumerate(ts):
        writer.frame(t, 0 if i == 0 else (i + 3) // 4, level.start, InputState(), 10.0 + i, 100.0 + 10 * i, "0" * 40)
    writer.close()
    numbers = summary(read_session(writer.path))
    assert numbers["frames"] == 9 and numbers["dropped"] == 2
    assert numbers["latency_ms_p50"] == 145.0 and numbers["step_ms_p50"] == 14.5  # frames 1-8: 110..180, 11..18


def test_summary_nets_out_timing_jitter(tmp_path):
    # A frame shown 0.6 tick late and the next one on time dropped nothing; counted gap by gap (1.6 ticks, rounded
    # to 2) it was a drop. The HUD and this summary disagreed 59 to 320 over a 4-minute session.
    level = load_level("meadow")
    writer = SessionWriter(tmp_path, level, "reference", 0, 24, (16, 8), "test")
    late = {5: 0.6, 9: 0.6}  # in ticks
    ts = [0.0] + [0.2 + (i - 1 + late.get(i, 0.0)) / 24 for i in range(1, 13)]
    for i, t in enumerate(ts):
        writer.frame(t, 0 if i == 0 else (i + 3) // 4, level.start, InputState(), 10.0, 100.0, "0" * 40)
    writer.close()
    assert summary(read_session(writer.path))["dropped"] == 0


def test_summary_leaves_out_the_refill_after_a_resume_but_counts_a_drop_beside_it(tmp_path):
    # After the menu's Resume the pipeline refills (4 ticks without a new frame here), which counted 3 to 4 dropped
    # frames; a tick lost within the steps after it still counts.
    level = load_level("meadow")
    writer = SessionWriter(tmp_path, level, "reference", 0, 24, (16, 8), "test")
    ts = [0.0] + [0.2 + i / 24 for i in range(4)]  # frame 0, then a step
    ts += [ts[-1] + (5 + i) / 24 for i in range(4)]  # resumed: the next step 5 ticks after the last frame
    ts += [ts[-1] + (2 + i) / 24 for i in range(4)]  # and one more, a tick late (dropped)
    for i, t in enumerate(ts):
        if i == 5:
            writer.resume()
        writer.frame(t, 0 if i == 0 else (i + 3) // 4, level.start, InputState(), 10.0, 100.0, "0" * 40)
    writer.close()
    session = read_session(writer.path)
    assert session.resumes == [5]
    assert summary(session)["dropped"] == 1


def test_deeply_nested_json_is_one_line_not_a_recursion_error(tmp_path):
    # json.loads recurses once a level: a thousand deep was a RecursionError traceback from replay, path
    # from-session and python -m explorer.session.
    from camera.errors import TOO_DEEP
    deep = "[" * 100000 + "]" * 100000
    writer, _ = write_session(tmp_path)
    writer.close()
    edit_line(writer.path, 3, lambda line: deep)
    with pytest.raises(InputError) as e:
        read_session(writer.path)
    assert str(e.value) == f"{writer.path / 'trajectory.jsonl'}:3: not valid JSON for us: {TOO_DEEP}"
    whole, _ = write_session(tmp_path / "torn")
    whole.close()
    log = whole.path / "trajectory.jsonl"
    n = len(log.read_text().splitlines())
    log.write_text(log.read_text() + deep)  # as the last line, cut (no newline after it)
    assert len(read_session(whole.path).frames) == n  # a torn line, dropped as any other
    (writer.path / "session.json").write_text(deep)
    with pytest.raises(InputError) as e:
        read_session(writer.path)
    assert str(e.value) == f"{writer.path / 'session.json'}: not valid JSON for us: {TOO_DEEP}"
    (writer.path / "session.json").write_text('{"seed": ' + "7" * 5000 + "}")  # Python's advice was to programmers
    with pytest.raises(InputError) as e:
        read_session(writer.path)
    assert str(e.value) == f"{writer.path / 'session.json'}: not valid JSON for us: it holds an integer of over 4300 digits"


def test_path_from_session_does_not_write_over_the_sessions_own_files(tmp_path, capsys):
    # A session.json whose level is --out had its level replaced by the camera path (and the hint then offered
    # the path as the level).
    from explorer.cli import main
    from levels import LEVELS_DIR
    level = tmp_path / "my.toml"
    level.write_text((LEVELS_DIR / "meadow.toml").read_text())
    writer, _ = write_session(tmp_path / "s")
    writer.close()
    header = json.loads((writer.path / "session.json").read_text())
    header["level"]["path"] = str(level)
    (writer.path / "session.json").write_text(json.dumps(header))
    (tmp_path / "link.toml").symlink_to(level)
    (tmp_path / "hard.toml").hardlink_to(level)
    (tmp_path / "log.toml").hardlink_to(writer.path / "trajectory.jsonl")
    before = {f: f.read_bytes() for f in (level, writer.path / "trajectory.jsonl", writer.path / "session.json")}
    for out, what in ((level, "level file"), (tmp_path / "new" / ".." / "my.toml", "level file"),
                      (tmp_path / "link.toml", "level file"), (tmp_path / "hard.toml", "level file"),
                      (tmp_path / "log.toml", "trajectory.jsonl")):
        assert main(["path", "from-session", str(writer.path), "--out", str(out)]) == 2
        err = capsys.readouterr().err
        assert err == f"explorer: error: {out}: --out: is the session's {what}; write the path somewhere else\n"
    assert {f: f.read_bytes() for f in before} == before and not (tmp_path / "new").exists()
    assert main(["path", "from-session", str(writer.path), "--out", str(tmp_path / "p.toml")]) == 0


def test_path_from_session_hints_only_what_render_takes(tmp_path, capsys):
    # A hand-edited session.json's odd size and unknown random_config went into the hint as they were: render
    # refuses both (--size 255x143, --random-weights nope).
    import shlex
    from explorer.cli import build_parser, check_model_options, main
    writer, _ = write_session(tmp_path / "s")
    writer.close()
    header = json.loads((writer.path / "session.json").read_text())

    def hint(**edit) -> tuple[list[str], str]:
        """The render options the hint gives (checked as render checks them), and its remarks."""
        (writer.path / "session.json").write_text(json.dumps(header | edit))
        assert main(["path", "from-session", str(writer.path), "--out", str(tmp_path / "p.toml")]) == 0
        line = capsys.readouterr().out.splitlines()[-1]
        command, _, remarks = line.removeprefix("to film the same camera path: explorer render ").partition(" (")
        options = shlex.split(command)
        check_model_options(build_parser().parse_args(["render", *options]))  # exits 2 if render refuses them
        return options, remarks

    options, remarks = hint(size=[255, 143])
    assert options[-2:] == ["--size", "256x144"] and "render takes even sizes from 16 to 8192, not the " \
        "session's 255x143" in remarks, remarks
    options, remarks = hint(size=[32, 18])
    assert options[-2:] == ["--size", "32x18"] and not remarks
    options, remarks = hint(world="generated", random_config="nope")
    assert "--random-weights" not in options and "random_config 'nope' is no config render knows: add " \
        "--random-weights with one of tiny, mini" in remarks, remarks
    options, remarks = hint(world="generated", random_config="tiny")
    assert options[options.index("--random-weights") + 1] == "tiny" and "random_config" not in remarks
    gone = str(tmp_path / "gone.toml")  # a level file since removed, whose name no shipped level has
    options, remarks = hint(level={"name": "gone", "path": gone})
    assert f"its level file {gone} is gone: give the level it was played in" in remarks, remarks


def test_path_from_session_hint_quotes_a_name_with_a_newline_on_one_line(tmp_path, capsys):
    # shlex.quote kept a newline raw: the hint's render command broke over two lines, the second a bare word.
    import subprocess
    from explorer.cli import main
    writer, _ = write_session(tmp_path / "s")
    writer.close()
    out = tmp_path / "my\nwalk's.toml"
    assert main(["path", "from-session", str(writer.path), "--out", str(out)]) == 0
    line = capsys.readouterr().out.splitlines()[-1]
    command = line.removeprefix("to film the same camera path: explorer render ").partition(" (")[0]
    assert command != line and "\n" not in command
    words = subprocess.run(["bash", "-c", f"printf '%s\\0' {command}"], capture_output=True, check=True).stdout
    assert words.split(b"\0")[3] == str(out).encode(), words  # --level L --path P


def test_shell_word_reads_back_as_the_text_it_quotes():
    import subprocess
    from camera.errors import shell_word
    for text in ("plain", "a b", "it's", "x\ny", "tab\there", "\x01\x7f", "nl\u2028sep", "\x85é", "a\\'b\n"):
        quoted = shell_word(text)
        assert "\n" not in quoted
        shown = subprocess.run(["bash", "-c", f"printf '%s' {quoted}"], capture_output=True, check=True).stdout
        assert shown.decode() == text, (text, quoted)
