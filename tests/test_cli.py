"""The command line end to end: render, levels, data, and its handling of bad input."""
import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from explorer.cli import main
from explorer.video import read_video
from levels import LEVELS_DIR, PATHS_DIR
from world.dataset import open_dataset
from world.level import list_levels


def run_cli(*args):
    """The real console entry point in a subprocess: exit code and stderr, as a user sees them."""
    proc = subprocess.run([sys.executable, "-m", "explorer", *args], capture_output=True, text=True, timeout=300)
    return proc.returncode, proc.stdout, proc.stderr


def test_levels_lists_every_shipped_level(capsys):
    assert main(["levels"]) == 0
    out = capsys.readouterr().out
    names = [level.name for level in list_levels()]
    assert len(names) >= 6
    for name in names:
        assert name in out


def test_render_writes_one_frame_per_pose_and_is_deterministic(tmp_path, capsys):
    from camera.paths import load_path
    level = list_levels()[0]
    path = PATHS_DIR / "walk.toml"
    expected = len(load_path(path).poses(start=level.start))
    outs = []
    for i in range(2):
        out = tmp_path / f"walk{i}.mp4"
        assert main(["render", "--level", level.name, "--path", str(path), "--out", str(out),
                     "--size", "96x54"]) == 0
        assert capsys.readouterr().out == f"wrote {out}: {expected} frames\n"  # it said nothing, done
        outs.append(read_video(out))
    assert outs[0].shape == (expected, 54, 96, 3)
    assert np.array_equal(outs[0], outs[1])
    assert outs[0].std() > 5  # not a blank video


WALK = str(PATHS_DIR / "walk.toml")


def test_render_compare_puts_the_generated_world_beside_the_reference(tmp_path):
    out, ref = tmp_path / "compare.mp4", tmp_path / "reference.mp4"
    args = ["--level", "meadow", "--path", WALK, "--size", "64x32"]
    assert main(["render", *args, "--out", str(out), "--world", "compare", "--random-weights", "tiny"]) == 0
    assert main(["render", *args, "--out", str(ref)]) == 0
    both, reference = read_video(out), read_video(ref)
    assert both.shape == (reference.shape[0], 32, 128, 3)
    # the right panel is the reference world (rendered at the model's 64x32, like the left); H.264 is lossy
    assert np.abs(both[:, :, 64:].astype(int) - reference.astype(int)).mean() < 3
    assert np.abs(both[:, :, :64].astype(int) - reference.astype(int)).mean() > 10  # untrained: not the scene


def test_a_name_the_output_encoding_lacks_is_escaped(tmp_path):
    # PYTHONIOENCODING=ascii: render wrote the video, then "wrote …" raised UnicodeEncodeError (a traceback, exit 1)
    path = tmp_path / "short.toml"
    path.write_text("[path]\nrelative = true\n[[path.key]]\nt = 0.0\n[[path.key]]\nt = 0.2\n"
                    "position = [0.0, 0.0, -1.0]\n")
    out = tmp_path / "öut ☃.mp4"
    proc = subprocess.run([sys.executable, "-m", "explorer", "render", "--level", "meadow", "--path", str(path),
                           "--out", str(out), "--size", "64x36"], capture_output=True, timeout=300,
                          env={**os.environ, "PYTHONIOENCODING": "ascii"})
    assert proc.returncode == 0 and out.is_file(), proc.stderr[-2000:]
    assert b"wrote " in proc.stdout and b"\\xf6ut \\u2603.mp4" in proc.stdout, proc.stdout


def test_render_chooses_the_generated_world_as_play_does(tmp_path):
    # A level with only a start image, or a model named on the command line, was refused without --world generated
    # (the reference world has no model and needs a [scene]), where play chooses the generated world for them.
    import matplotlib.pyplot as plt
    plt.imsave(tmp_path / "start.png", np.random.default_rng(0).uniform(size=(32, 64, 3)))
    (tmp_path / "image.toml").write_text('[level]\nname = "image"\nimage = "start.png"\n\n[start]\n'
                                         'position = [0.0, 1.7, 0.0]\n')
    (tmp_path / "short.toml").write_text("[path]\nrelative = true\n[[path.key]]\nt = 0.0\n[[path.key]]\nt = 0.5\n"
                                         "position = [0.0, 0.0, -1.0]\n")
    for level, options, size in (("meadow", ["--random-weights", "tiny"], (32, 64)),
                                 ("meadow", ["--random-weights", "tiny", "--seed", "3"], (32, 64)),
                                 (str(tmp_path / "image.toml"), [], (72, 128))):  # the shipped model's frames
        out = tmp_path / "g.mp4"
        assert main(["render", "--level", level, "--path", str(tmp_path / "short.toml"), "--out", str(out),
                     *options]) == 0
        assert read_video(out).shape[1:] == (*size, 3), (level, options)  # not the reference's 640x360
    # a level with a scene and a start image renders the scene, and says where its picture goes
    (tmp_path / "both.toml").write_text((LEVELS_DIR / "meadow.toml").read_text().replace(
        'title = "Meadow at noon"', 'title = "x"\nimage = "start.png"'))
    code, _, err = run_cli("render", "--level", str(tmp_path / "both.toml"), "--path", str(tmp_path / "short.toml"),
                           "--out", str(tmp_path / "b.mp4"), "--size", "64x36")
    assert code == 0 and "both.toml: rendering the level's scene; its start image is the generated world's" in err, err
    code, _, err = run_cli("render", "--level", "meadow", "--path", str(tmp_path / "short.toml"),
                           "--out", str(tmp_path / "m.mp4"), "--size", "64x36")
    assert code == 0 and "note" not in err, err

@pytest.mark.parametrize("args, words", [
    (["render", "--level", "no-such-level", "--path", WALK, "--out", "x.mp4"], ["no-such-level"]),
    (["render", "--level", "meadow", "--path", "missing.toml", "--out", "x.mp4"], ["missing.toml"]),
    (["render", "--level", "meadow", "--path", WALK, "--out", "x.mp4", "--size", "big"], ["--size"]),
    (["render", "--level", "meadow", "--path", WALK, "--out", "x.mp4", "--size", "17x18"], ["--size", "even"]),
    (["play", "--size", "64x37"], ["--size", "even"]),  # its session could not be filmed with replay --out
    (["render", "--level", "meadow", "--path", WALK, "--out", "x.mp4", "--world", "reference", "--random-weights",
      "tiny"], ["--random-weights", "reference world has no model"]),  # it was ignored: the video showed the reference
    (["render", "--level", "meadow", "--path", WALK, "--out", "x.mp4", "--world", "generated",
      "--random-weights", "foo"], ["--random-weights", "unknown config 'foo'"]),
    (["play", "--random-weights", "foo"], ["--random-weights", "unknown config 'foo'"]),
    (["bench", "--config", "foo"], ["error: command line: --config: unknown config 'foo'"]),
    (["train", "pretrain", "--data", ".", "--run", "r", "--config", "foo"],
     ["error: command line: --config: unknown config 'foo'"]),
    (["render", "--level", "meadow", "--path", WALK, "--out", "x.mp4", "--world", "reference", "--seed", "7"],
     ["--seed", "reference world has no model"]),
    (["render", "--level", "meadow", "--path", WALK, "--out", "x.mp4", "--device", "cuda"],  # no GPU: unsaid
     ["--device", "reference world has no model"]),
    (["data", "--out", "d", "--clips", "2", "--frames", "10"], ["--frames"]),
    (["data", "--out", "d", "--clips", "2", "--frames", "1"], ["--frames: must be 1 + 4k with k at least 1", "got 1"]),
    # Output files that could not be written are refused before any work
    (["render", "--level", "meadow", "--path", WALK, "--out", "x.gif"], ["x.gif", "--out", ".mp4"]),
    (["render", "--level", "meadow", "--path", WALK, "--out", ""], ["command line: --out: is empty", ".mp4"]),
    (["render", "--level", "meadow", "--path", WALK, "--out", "walk.toml/x.mp4"], ["walk.toml is a file"]),
    (["replay", "nowhere", "--out", "x.txt"], ["x.txt", "--out", ".mp4"]),
    (["eval", "--plot", "x.txt"], ["x.txt", "--plot", ".png"]),
    # /proc takes no new file, though os.access says yes to root (eval ran its minutes before it found out)
    (["eval", "--plot", "/proc/explorer-test/p.png"], ["/proc/explorer-test/p.png: --plot: cannot write into /proc"]),
    (["render", "--level", "meadow", "--path", WALK, "--out", "/proc/o.mp4"], ["--out: cannot write into /proc"]),
    # a folder to write in: said of the folder, not as a full disk (data) or on the first write (train)
    (["data", "--out", "/proc/ds", "--clips", "1", "--frames", "9"],
     ["argument --out: cannot write into /proc (it takes no new files)"]),
    (["train", "pretrain", "--data", "d", "--run", "/proc/r"], ["argument --run: cannot write into /proc"]),
    (["render", "--level", "meadow", "--path", ".", "--out", "x.mp4"], ["unknown camera path type"]),
    # under a link to nothing or round to itself: "File exists", or a traceback resolving it
    (["render", "--level", "meadow", "--path", WALK, "--out", "dangling/x.mp4"],
     ["dangling/x.mp4: --out: dangling is a link that leads nowhere"]),
    (["eval", "--plot", "loop/p.png"], ["loop/p.png: --plot: loop is a link that leads nowhere"]),
    (["path", "from-session", "s", "--out", "loop/p.toml"], ["--out: loop is a link that leads nowhere"]),
    (["render", "--level", "meadow", "--path", "folder.toml", "--out", "x.mp4"], ["folder.toml: is a folder"]),
])
def test_bad_input_is_one_line_and_exit_2(tmp_path, monkeypatch, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "walk.toml").write_text("")
    (tmp_path / "folder.toml").mkdir()
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "dangling").symlink_to("nowhere")
    code, out, err = run_cli(*args)
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err
    assert not (tmp_path / "x.mp4").exists()


@pytest.mark.parametrize("args, words", [
    (["bench", "--seconds", "nan"], ["--seconds", "between"]),
    (["bench", "--seconds", "inf"], ["--seconds", "between"]),
    (["bench", "--seconds", "0"], ["--seconds", "between"]),
    (["bench", "--window", "100000"], ["--window", "between 1 and 1024"]),
    (["bench", "--threads", "0"], ["--threads"]),
    (["bench", "--threads", "100000"], ["--threads", "between 1 and"]),
    (["eval", "--seconds", "1e10"], ["--seconds", "between 0 and 3600"]),
    (["eval", "--scenes", "10001"], ["--scenes", "between 1 and 10000"]),  # cut to 10000 without a word
    (["eval", "--baseline-steps", "100000"], ["--baseline-steps", "between 1 and 64"]),  # the OOM killer
    (["train", "vae", "--data", "d", "--run", "r", "--kl-weight", "inf"], ["--kl-weight", "between 0 and"]),
    (["data", "--out", "afile", "--clips", "1"], ["--out", "afile is a file"]),
    (["data", "--out", "d", "--clips", "1", "--seed", "-1"], ["--seed", "between 0"]),
    (["train", "vae", "--data", "d", "--run", "afile"], ["--run", "afile is a file"]),
    (["play", "--sessions-dir", "afile"], ["--sessions-dir", "afile is a file"]),
    (["play", "--sessions-dir", "afile/sub"], ["--sessions-dir", "afile is a file"]),
    (["data", "--out", "afile/sub/d", "--clips", "1"], ["--out", "afile is a file"]),
    (["render", "--level", "meadow", "--path", WALK, "--out", "x.mp4", "--seed", "x"], ["--seed", "whole number"]),
    (["path", "from-session", "s", "--out", "p.toml", "--tolerance-deg", "1e-300"], ["--tolerance-deg"]),
    # a link to nothing or round to itself: "File exists", when the folder was made
    (["data", "--out", "loop", "--clips", "1"], ["--out", "loop is a link that leads nowhere"]),
    (["train", "vae", "--data", "d", "--run", "dangling/r"], ["--run", "dangling is a link that leads nowhere"]),
    (["play", "--sessions-dir", "dangling"], ["--sessions-dir", "dangling is a link that leads nowhere"]),
    (["play", "--sessions-dir", "z" * 300], ["--sessions-dir: File name too long"]),  # a traceback
])
def test_bad_arguments_are_refused_by_the_parser(tmp_path, monkeypatch, capsys, args, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "afile").write_text("keep")
    (tmp_path / "loop").symlink_to("loop")
    (tmp_path / "dangling").symlink_to("nowhere")
    with pytest.raises(SystemExit) as exit:
        main(args)
    err = capsys.readouterr().err
    assert exit.value.code == 2 and len(err.strip().splitlines()) == 1, err
    assert all(word in err for word in words), err
    assert (tmp_path / "afile").read_text() == "keep" and not (tmp_path / "d").exists()


def test_play_checks_its_sessions_folder_before_opening_a_window(monkeypatch, capsys):
    # It used to open the window and load the model (4 s) before failing on a folder it could not make.
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    for folder in ("/proc/explorer-test", "/proc"):  # to be made in, or there: /proc takes no file
        code, out, err = run_cli("play", "--world", "reference", "--sessions-dir", folder)
        assert code == 2 and err.startswith("explorer play: error: argument --sessions-dir: cannot write into /proc")
        assert len(err.strip().splitlines()) == 1, err


def test_play_warns_of_a_reference_size_too_large_to_play(tmp_path, monkeypatch, capsys):
    # 8192x8192 was taken without a word: one frame in 20 s, and a close that took 8 s.
    monkeypatch.delenv("DISPLAY", raising=False)
    monkeypatch.delenv("WAYLAND_DISPLAY", raising=False)
    monkeypatch.delenv("SDL_VIDEODRIVER", raising=False)
    for size, warned in (("8192x8192", True), ("1920x1080", False)):  # then no display: exit 2, after the check
        assert main(["play", "--world", "reference", "--size", size, "--sessions-dir", str(tmp_path)]) == 2
        err = capsys.readouterr().err
        assert err.startswith(f"explorer: warning: --size {size}: ") == warned, err


def test_render_warns_where_a_path_goes_below_the_ground(tmp_path):
    # Under the terrain the ground is seen through: rendered without a word, it looked like a renderer bug.
    path = tmp_path / "under.toml"
    path.write_text('[path]\nfps = 24\nrelative = true\n[[path.key]]\nt = 0.0\n'
                    '[[path.key]]\nt = 0.5\nposition = [0.0, -5.0, 0.0]\n')
    code, _, err = run_cli("render", "--level", "meadow", "--path", str(path), "--out", str(tmp_path / "u.mp4"),
                           "--size", "64x36")
    assert code == 0 and "under.toml: the camera goes below the ground at 0.21 s (frame 5: y = -0.38" in err, err
    code, _, err = run_cli("render", "--level", "meadow", "--path", WALK, "--out", str(tmp_path / "w.mp4"),
                           "--size", "64x36")
    assert code == 0 and "below the ground" not in err


def test_a_relative_path_placed_past_the_position_limit_is_refused(tmp_path):
    """Keys within 100 km of the start, from a start 99 km out: the camera went 199 km from the origin, unsaid."""
    level = tmp_path / "far.toml"
    level.write_text((LEVELS_DIR / "meadow.toml").read_text().replace("position = [0.0, 1.7, 0.0]",
                                                                      "position = [0.0, 1.7, -99000.0]"))
    path = tmp_path / "away.toml"
    path.write_text('[path]\nrelative = true\n[[path.key]]\nt = 0.0\n'
                    '[[path.key]]\nt = 1.0\nposition = [0.0, 0.0, -2000.0]\n')
    out = tmp_path / "far.mp4"
    code, _, err = run_cli("render", "--level", str(level), "--path", str(path), "--out", str(out), "--size", "64x36")
    assert code == 2 and f"{path}: path.key: placed at the level's start [0.0, 1.7, -99000.0], the camera goes to " \
        "[0.0, 1.7, -100083.3] at 0.54 s, past 100000 m from the origin" in err, err
    assert not out.exists()
    code, _, err = run_cli("eval", "--levels", str(level), "--paths", str(path), "--seconds", "1", "--scenes", "1")
    assert code == 2 and f"{path}: path.key: placed at the level's start" in err, err


def test_render_does_not_replace_a_good_video_on_error(tmp_path):
    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    bad_path = tmp_path / "bad.toml"
    bad_path.write_text("[path]\nfps = 24\nspeed = 3\n")
    code, _, err = run_cli("render", "--level", list_levels()[0].name, "--path", str(bad_path), "--out", str(out))
    assert code == 2 and "bad.toml" in err
    assert out.read_bytes() == b"precious"


def test_a_failing_ffmpeg_leaves_the_older_video_and_says_so(tmp_path, capfd, monkeypatch):
    """In one line of ours that quotes ffmpeg (it printed several lines of its own, and ours blamed a full disk
    wherever the folder's file system had no free space to report, as /proc)."""
    import glob
    import tempfile
    from camera.errors import InputError
    from explorer.video import VideoWriter

    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    (tmp_path / ".keep.partial.mp4").mkdir()  # where ffmpeg writes first: it cannot open it and quits
    monkeypatch.setattr("explorer.video.partial_file", lambda path: tmp_path / ".keep.partial.mp4")
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path / "temp"))  # its own, not other processes' logs
    (tmp_path / "temp").mkdir()
    with pytest.raises(InputError) as failed:
        with VideoWriter(out, (32, 16)) as writer:
            writer.write(np.zeros((4, 16, 32, 3), np.uint8))
    assert out.read_bytes() == b"precious"
    message = str(failed.value)
    assert message.startswith(f"{out}: ffmpeg ") and "Is a directory" in message and "partial" not in message, message
    assert capfd.readouterr().err == ""  # nothing from ffmpeg itself
    assert tempfile.gettempdir() == str(tmp_path / "temp") and not glob.glob(f"{tmp_path}/temp/explorer-ffmpeg-*.log")


def test_ctrl_c_while_a_video_is_open_is_held_to_the_next_frame_and_keeps_the_older_file(tmp_path):
    """A Ctrl-C as ffmpeg starts (Python lost it in its start-up: the render went on and replaced the file) or in
    a GL call (a crash) is kept and acted on at the next frame, and the handler before it comes back."""
    import os
    import signal
    from explorer.video import VideoWriter

    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    before = signal.getsignal(signal.SIGINT)
    with pytest.raises(KeyboardInterrupt):
        with VideoWriter(out, (32, 16)) as writer:
            os.kill(os.getpid(), signal.SIGINT)  # held: no KeyboardInterrupt here
            assert writer.interrupts == 1
            writer.write(np.zeros((4, 16, 32, 3), np.uint8))
    assert out.read_bytes() == b"precious" and list(tmp_path.iterdir()) == [out]
    assert signal.getsignal(signal.SIGINT) is before


@pytest.mark.parametrize("stop", ["held", "terminated"])
def test_a_stop_while_ffmpeg_finishes_leaves_the_older_file_and_no_partial(tmp_path, stop):
    # After the last frame, close() waits for ffmpeg; a Ctrl-C or SIGTERM there left .NAME.partial.mp4 behind.
    import os
    import signal
    from explorer.video import VideoWriter

    out = tmp_path / "keep.mp4"
    out.write_bytes(b"precious")
    before = signal.getsignal(signal.SIGINT)
    writer = VideoWriter(out, (32, 16))
    writer.write(np.zeros((4, 16, 32, 3), np.uint8))
    ffmpeg = writer._gen

    class FinishThenStop:  # ffmpeg's generator, stopped by a signal as it finishes
        def close(self):
            ffmpeg.close()
            if stop == "held":
                os.kill(os.getpid(), signal.SIGINT)  # held by the writer until the file would be in place
            else:
                raise SystemExit(143)  # what the command line's SIGTERM handler raises
    writer._gen = FinishThenStop()
    with pytest.raises(KeyboardInterrupt if stop == "held" else SystemExit):
        writer.close()
    assert out.read_bytes() == b"precious" and list(tmp_path.iterdir()) == [out]
    assert signal.getsignal(signal.SIGINT) is before



def test_a_video_is_written_through_a_partial_file_of_its_own(tmp_path):
    # Its partial file had a fixed name, .NAME.partial.mp4: a user's file of that name was replaced, then removed;
    # and for a name of 250 letters it was longer than the file system takes ("File name too long").
    from explorer.video import VideoWriter
    users = tmp_path / ".keep.partial.mp4"
    users.write_bytes(b"mine")
    for out in (tmp_path / "keep.mp4", tmp_path / ("x" * 250 + ".mp4")):
        with VideoWriter(out, (32, 16)) as writer:
            writer.write(np.zeros((2, 16, 32, 3), np.uint8))
        assert out.stat().st_size > 1000
    assert users.read_bytes() == b"mine" and len(list(tmp_path.iterdir())) == 3

def test_a_video_into_a_folder_that_cannot_be_written_is_refused_before_any_work(tmp_path, monkeypatch):
    # ffmpeg found out after the world had opened, printed its own lines and ours said "Broken pipe".
    import camera.errors
    from camera.errors import InputError
    from explorer.video import check_video_path
    locked = tmp_path / "locked"
    locked.mkdir()
    # (as root every folder is writable, so the test asks the check's own question of a folder that says no)
    monkeypatch.setattr(camera.errors.os, "access", lambda path, mode: Path(path) != locked)
    with pytest.raises(InputError, match=f"{locked}/new/x.mp4: --out: cannot write into {locked}$"):
        check_video_path(locked / "new" / "x.mp4")
    assert check_video_path(tmp_path / "x.mp4") == tmp_path / "x.mp4"


def test_ctrl_c_that_a_library_turns_into_another_error_is_still_an_interrupt(monkeypatch, capsys):
    """A Ctrl-C during scipy's import came out as a traceback (exit 1) raised from the KeyboardInterrupt."""
    import explorer.cli as cli

    def interrupted_import(args):
        try:
            raise KeyboardInterrupt
        except KeyboardInterrupt as interrupt:
            raise ImportError("cannot import name ...") from interrupt
    monkeypatch.setattr(cli, "cmd_levels", interrupted_import)
    assert cli.main(["levels"]) == 130
    assert capsys.readouterr().err.strip() == "explorer: interrupted"


def test_a_file_system_error_on_a_long_name_is_one_short_line(monkeypatch, capsys):
    # "File name too long" for a 5000-letter name printed all 5000 letters (a session.json's level.path, say).
    import errno
    import os
    import explorer.cli as cli

    def too_long(args):
        raise OSError(errno.ENAMETOOLONG, os.strerror(errno.ENAMETOOLONG), "x" * 5000 + "\n.toml")
    monkeypatch.setattr(cli, "cmd_levels", too_long)
    assert cli.main(["levels"]) == 2
    err = capsys.readouterr().err
    assert len(err.strip().splitlines()) == 1 and len(err) < 700 and err.strip().endswith(": File name too long"), err

def test_a_terminated_render_leaves_no_partial_file(tmp_path):
    import signal
    import time
    out = tmp_path / "walk.mp4"
    proc = subprocess.Popen([sys.executable, "-m", "explorer.cli", "render", "--level", "meadow", "--path", WALK,
                             "--out", str(out), "--size", "640x360"], stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".*partial*")) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the video is being written
    proc.send_signal(signal.SIGTERM)
    proc.communicate(timeout=60)
    assert proc.returncode == 128 + signal.SIGTERM
    assert list(tmp_path.iterdir()) == []


def test_a_render_whose_terminal_is_closed_leaves_no_partial_file(tmp_path):
    # Closing the terminal sends SIGHUP, which Python leaves to kill the process: .walk.mp4.*.partial.mp4 stayed.
    import signal
    import time
    from conftest import Terminal
    (tmp_path / "walk.mp4").write_bytes(b"an older render")
    term = Terminal([sys.executable, "-m", "explorer.cli", "render", "--level", "meadow", "--path", WALK, "--out",
                     str(tmp_path / "walk.mp4"), "--size", "640x360"])
    deadline = time.monotonic() + 120
    while not list(tmp_path.glob(".*partial*")) and term.proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)  # until the video is being written
    term.hang_up()
    assert term.proc.wait(timeout=60) == 128 + signal.SIGHUP, term.text
    assert [f.name for f in tmp_path.iterdir()] == ["walk.mp4"]
    assert (tmp_path / "walk.mp4").read_bytes() == b"an older render"


def test_output_to_a_reader_that_has_gone_ends_quietly(tmp_path):
    # `explorer levels | head -1`: the pipe's reader gone, the last lines raised BrokenPipeError, a traceback.
    import signal
    read, write = os.pipe()
    os.close(read)
    proc = subprocess.run([sys.executable, "-m", "explorer.cli", "levels"], stdout=write, stderr=subprocess.PIPE,
                          text=True, timeout=60)
    os.close(write)
    assert proc.returncode == 128 + signal.SIGPIPE and proc.stderr == "", proc.stderr  # as `yes | head` reports


def test_data_refuses_what_memory_or_the_disk_cannot_hold(tmp_path):
    # A shard is held in memory before it is written: 1 clip of 100001 frames at 8192x8192 raised MemoryError;
    # 10^9 clips began writing 250 TB.
    code, _, err = run_cli("data", "--out", str(tmp_path / "d"), "--clips", "1", "--frames", "100001", "--size",
                           "8192x8192")
    assert code == 2 and "--frames: a shard of 1 clip of 100001 frames at 8192x8192 is 18,750.2 GiB" in err, err
    code, _, err = run_cli("data", "--out", str(tmp_path / "d"), "--clips", str(10**12), "--frames", "9")
    assert code == 2 and "--clips: 1000000000000 clips of 9 frames at 128x72 need" in err and "free there" in err, err
    assert not (tmp_path / "d").exists()


def test_data_writes_resumable_shards(tmp_path):
    out = tmp_path / "data"
    args = ["data", "--out", str(out), "--clips", "3", "--size", "64x36", "--frames", "9", "--clips-per-scene", "2",
            "--clips-per-shard", "2"]
    assert main(args) == 0
    manifest, shards = open_dataset(out)
    assert manifest["clips"] == 3 and [s["clips"] for s in manifest["shards"]] == [2, 1]
    frames = np.concatenate([s["frames"] for s in shards])
    poses = np.concatenate([s["poses"] for s in shards])
    assert frames.shape == (3, 9, 36, 64, 3) and frames.dtype == np.uint8
    assert poses.shape == (3, 9, 7)
    seeds = np.concatenate([s["scene_seeds"] for s in shards])
    assert seeds[0] == seeds[1] != seeds[2] and seeds.min() >= 10_000  # held-out seeds never drawn for training
    # the camera moves within a clip
    assert np.abs(np.diff(poses[:, :, :4], axis=1)).sum() > 0

    # Interrupted after the first shard: delete the second and resume; the data comes out the same.
    first = np.array(frames)
    import shutil
    shutil.rmtree(out / "shard_00001")
    assert main(args) == 0
    _, shards = open_dataset(out)
    assert np.array_equal(np.concatenate([s["frames"] for s in shards]), first)

    # Training given the manifest instead of its folder is told to give the folder.
    from camera.errors import InputError
    with pytest.raises(InputError, match=r"manifest\.json: is a file; give the dataset's folder"):
        open_dataset(out / "manifest.json")

    # Resuming with different options is refused by name, and nothing is touched.
    code, _, err = run_cli(*args[:-6], "--size", "32x18", "--frames", "9")
    assert code == 2 and "spec.size" in err
    assert json.loads((out / "manifest.json").read_text())["clips"] == 3
    # So is a smaller --clips: it rewrote the shard it cut into and kept the ones after it, a hole in the clips.
    before = (out / "manifest.json").read_bytes()
    code, _, err = run_cli(*args[:4], "2", *args[5:])
    assert code == 2 and "manifest.json: clips: this folder holds 3 clips; --clips 2 would drop some" in err, err
    assert (out / "manifest.json").read_bytes() == before

    # A shard file emptied or cut short (a full disk, a copy stopped half way) names itself.
    (out / "shard_00000" / "frames.npy").write_bytes(b"")
    with pytest.raises(InputError, match=r"shard_00000/frames\.npy: not a readable array"):
        open_dataset(out)
    np.save(out / "shard_00000" / "frames.npy", first[:1])
    with pytest.raises(InputError, match=r"shard_00000: holds 1 clips, the manifest says 2"):
        open_dataset(out)
    np.save(out / "shard_00000" / "frames.npy", first[:2].astype(np.float32))
    with pytest.raises(InputError, match=r"shard_00000/frames\.npy: is float32 .* says uint8"):
        open_dataset(out)
    np.save(out / "shard_00000" / "frames.npy", first[:2])
    np.save(out / "shard_00000" / "poses.npy", np.full((2, 9, 7), np.nan))
    with pytest.raises(InputError, match=r"shard_00000/poses\.npy: holds NaN"):
        open_dataset(out)
    # Resuming over a damaged shard renders it again (it used to report success and leave it).
    (out / "shard_00000" / "frames.npy").write_bytes(b"")
    code, _, err = run_cli(*args)
    assert code == 0 and "shard_00000/frames.npy: damaged; rendering shard_00000 again" in err, err
    _, shards = open_dataset(out)
    assert np.array_equal(np.concatenate([s["frames"] for s in shards]), first)
    shard = json.loads((out / "manifest.json").read_text())["shards"][0]
    first_clips = [json.dumps(manifest | {"shards": [{k: v for k, v in shard.items() if k != "first_clip"}]}),
                   json.dumps(manifest | {"shards": [shard | {"first_clip": "0"}]}),  # a traceback each, on resume
                   json.dumps(manifest | {"shards": [shard | {"first_clip": -100}]})]   # taken as it was
    for bad, field in (("[]", "must be a JSON object"), ('{"format": "explorer-dataset/1", "spec": []}', "spec"),
                       ('{"format": "explorer-dataset/1", "spec": {}, "shards": {}}', "shards"),
                       *((text, "shards") for text in first_clips)):
        (out / "manifest.json").write_text(bad.replace("explorer-dataset/1", manifest["format"]))
        with pytest.raises(InputError, match=f"manifest.json: {field}"):
            open_dataset(out)

    # Killed between a shard's rename and the manifest's rewrite: the unlisted shard folder is rendered again.
    again = tmp_path / "again"
    assert main(args[:2] + [str(again)] + args[3:]) == 0
    (again / "manifest.json").unlink()
    assert main(args[:2] + [str(again)] + args[3:]) == 0
    assert np.array_equal(np.concatenate([s["frames"] for s in open_dataset(again)[1]]), first)


def test_a_ctrl_c_while_the_command_line_imports_is_one_line_and_exit_130(monkeypatch, capsys):
    # The `explorer` script imports the command line (scipy: a third of a second); a Ctrl-C then used to print a
    # traceback. A stand-in module raises where scipy's import would be interrupted.
    import sys
    import types

    from explorer import launch
    interrupted = types.ModuleType("explorer.cli")

    def __getattr__(name):
        raise KeyboardInterrupt
    interrupted.__getattr__ = __getattr__
    monkeypatch.setitem(sys.modules, "explorer.cli", interrupted)
    assert launch.main() == 130
    assert capsys.readouterr().err == "explorer: interrupted\n"
    monkeypatch.setitem(sys.modules, "explorer.cli", types.SimpleNamespace(main=lambda: 7))
    assert launch.main() == 7  # otherwise it is the command line's main


def test_a_plot_that_fills_the_disk_leaves_the_older_file_and_is_one_line(tmp_path):
    # eval --plot (and a training run's loss.png) wrote straight onto the file: a full disk left half a PNG where
    # a good one was, and a traceback.
    import errno
    from camera.errors import InputError, write_replacing

    out = tmp_path / "plot.png"
    out.write_bytes(b"precious")

    def fill_the_disk(tmp):
        tmp.write_bytes(b"half a pic")
        raise OSError(errno.ENOSPC, "No space left on device")
    with pytest.raises(InputError, match=r"plot.png: --plot: cannot write it: No space left on device$"):
        write_replacing(out, fill_the_disk, field="--plot")
    assert out.read_bytes() == b"precious" and list(tmp_path.iterdir()) == [out]
    write_replacing(out, lambda tmp: tmp.write_bytes(b"new"))
    assert out.read_bytes() == b"new" and list(tmp_path.iterdir()) == [out]


def test_render_resizes_each_frame_as_a_batch_would():
    """render resizes a step's frames one at a time (a batch's float copies at 8192x8192 took 12 GB); the same
    pixels as resizing them together, and the frames are not mixed up."""
    import torch
    from explorer.render import resize_frames
    frames = np.random.default_rng(0).integers(0, 256, (4, 18, 32, 3), dtype=np.uint8)
    batch = torch.nn.functional.interpolate(torch.from_numpy(frames).permute(0, 3, 1, 2).float(), size=(45, 80),
                                            mode="bicubic", antialias=True, align_corners=False)
    expected = batch.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).numpy()
    assert np.array_equal(resize_frames(frames, (80, 45)), expected)
    assert resize_frames(frames, (32, 18)) is frames
