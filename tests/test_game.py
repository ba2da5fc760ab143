"""The game client end to end: a real OpenGL window driven for 5 s, the session it logs, replay of that session,
a session killed with SIGKILL, and the one-line errors for no display and bad input.

Windows open on an Xvfb server of the test's own where Xvfb is installed (and then real X input goes in through
xdotool), else on SDL's offscreen driver. Worlds are 128x72 to keep the 2-core machine free.
"""
import json
import os
import shutil
import signal
import subprocess
import sys
import time
import types
from collections import deque
from pathlib import Path

import numpy as np
import pygame
import pytest

from camera.controls import ControlSettings, InputState, MotionState, replay as replay_controls
from camera.pose import at_rest, heading
from explorer.cli import main
from explorer.game import Game, GameConfig, Pacer, Snapshot, SnapshotRing, Ticker, clear_of, screenshot_path
from explorer.keys import KEY_ACTIONS, PygameInput, ScriptedInput, held_actions, stick_axes
from explorer.session import read_session, summary
from world.base import FRAMES_PER_STEP
from world.level import load_level
from world.reference import ReferenceWorld
from world.scene import height_at

SIZE = (128, 72)
WINDOW = (384, 216)  # 3x the world: the screenshot scales back down by whole pixels


@pytest.fixture(scope="module")
def xvfb():
    """The DISPLAY of an Xvfb server started for these tests, or None where Xvfb is not installed."""
    if shutil.which("Xvfb") is None:
        print("Xvfb is not installed: windows use SDL's offscreen driver and the xdotool checks are skipped")
        yield None
        return
    read, write = os.pipe()
    server = subprocess.Popen(["Xvfb", "-displayfd", str(write), "-screen", "0", "1280x800x24", "-nolisten", "tcp"],
                              pass_fds=(write,), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    os.close(write)
    number = b""
    while not number.endswith(b"\n"):
        chunk = os.read(read, 16)
        if not chunk:
            break
        number += chunk
    os.close(read)
    try:
        yield f":{number.decode().strip()}"
    finally:
        server.terminate()
        server.wait(timeout=10)


@pytest.fixture
def window(xvfb, monkeypatch):
    """The test's windows open on the Xvfb display (where there is none, on SDL's offscreen driver); the display."""
    if xvfb:
        monkeypatch.setenv("DISPLAY", xvfb)
        monkeypatch.setenv("SDL_VIDEODRIVER", "x11")
    return xvfb


def display_env(xvfb) -> dict:
    """The environment of a command that should open its window on our display."""
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY")}
    if xvfb:
        env.update(DISPLAY=xvfb, SDL_VIDEODRIVER="x11")
    else:
        env["SDL_VIDEODRIVER"] = "offscreen"
    return env


def trajectory(session: Path) -> list[dict]:
    return [json.loads(line) for line in (session / "trajectory.jsonl").read_text().splitlines()]


def play_cli(sessions: Path, xvfb, seconds: float, world: str = "reference", **popen) -> subprocess.Popen:
    size = ["--size", f"{SIZE[0]}x{SIZE[1]}"] if world == "reference" else ["--random-weights", "tiny"]
    return subprocess.Popen(
        [sys.executable, "-m", "explorer.cli", "play", "--world", world, "--level", "meadow", *size,
         "--seconds", str(seconds), "--window", f"{WINDOW[0]}x{WINDOW[1]}", "--sessions-dir", str(sessions)],
        env=display_env(xvfb), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, **popen)


def wait_for_lines(sessions: Path, n: int, timeout: float = 60.0) -> Path:
    """The (single) session folder once its trajectory has at least n lines."""
    deadline = time.time() + timeout
    while time.time() < deadline:
        files = list(sessions.glob("*/trajectory.jsonl"))
        if files and files[0].read_text().count("\n") >= n:
            return files[0].parent
        time.sleep(0.05)
    raise AssertionError(f"no session with {n} lines after {timeout} s")


def run_cli(*args, env=None):
    proc = subprocess.run([sys.executable, "-m", "explorer.cli", *args], capture_output=True, text=True,
                          timeout=120, env=env)
    return proc.returncode, proc.stdout, proc.stderr


def shows(screenshot: np.ndarray, frame: np.ndarray) -> float:
    """Mean absolute difference between a screenshot scaled down to the frame's size and the frame, over the
    frame's lower half but its bottom quarter (the HUD covers the top left, a message of two lines the bottom)."""
    h, w = frame.shape[:2]
    sh, sw = screenshot.shape[:2]
    small = screenshot.reshape(h, sh // h, w, sw // w, 3).mean(axis=(1, 3))
    rows = slice(h // 2, h - h // 4)
    return float(np.abs(small[rows] - frame[rows].astype(float)).mean())


def test_scripted_play_logs_every_frame_rewinds_splits_and_replays(tmp_path, window):
    level = load_level("meadow")
    forward, turn = 36, 24
    inputs = [InputState({"forward"})] * forward + [InputState(mouse=(10.0, 0.0))] * turn
    # keys pressed when the loop takes input number i: screenshot, split view + screenshot, rewind
    keys = {forward + turn: [pygame.K_F12], 66: [pygame.K_TAB], 74: [pygame.K_F12], 80: [pygame.K_TAB],
            84: [pygame.K_r]}
    opened = []

    def open_world(kind, size):  # both sides of the split view are reference worlds here
        opened.append(kind)
        return ReferenceWorld(size)

    config = GameConfig(level, "reference", SIZE, window=WINDOW, seconds=5.0, sessions_dir=tmp_path)
    game = Game(config, open_world, ScriptedInput(inputs, keys))
    start = time.perf_counter()
    assert game.run() == 0
    assert 5.0 <= time.perf_counter() - start < 15.0
    assert opened == ["reference", "generated"]  # the split view opened the other kind, on the worker thread

    session = read_session(game.sessions[0])
    assert session.ended and session.header["device"]  # e.g. 'llvmpipe': what rendered the frames
    lines = trajectory(game.sessions[0])
    frames = [line for line in lines if "event" not in line]
    # one line per presented frame at 24 fps: 5 s minus the pipeline filling after the start and the rewind
    assert 100 <= len(frames) <= 122, len(frames)
    assert [f["frame"] for f in frames] == list(range(len(frames)))
    assert np.median(np.diff([f["t"] for f in frames])) == pytest.approx(1 / 24, rel=0.15)

    # The poses are exactly the controls integrating the scripted inputs, in order, up to the rewind.
    [rewind] = [line for line in lines if line.get("event") == "rewind"]
    before = session.frames[:rewind["frame"]]
    taken = [f.input for f in before[1:]]
    assert taken == inputs[:len(taken)] + [InputState()] * max(0, len(taken) - len(inputs))
    ground = lambda x, z: float(height_at(level.scene, x, z))  # noqa: E731
    altitude = level.start.position[1] - ground(*level.start.position[::2])
    expected = replay_controls(level.start, taken, ground=ground, altitude=altitude)
    assert [f.pose for f in before[1:]] == expected
    z = [f.pose.position[2] for f in before[1:forward]]
    assert all(b < a for a, b in zip(z, z[1:]))  # W: forward is -z at yaw 0
    yaws = [f.pose.yaw for f in before[forward + 1:forward + turn + 1]]
    assert np.allclose(np.diff(yaws), -10.0 * ControlSettings().mouse_sensitivity)  # mouse right turns right

    # The rewind went back 2 s of motion (the rest after the turn does not count), to a step boundary, and play
    # continued from that frame's pose.
    span = session.frames[rewind["to_frame"]:rewind["frame"]]
    moved = sum(not at_rest(a.pose, [b.pose]) for a, b in zip(span, span[1:]))
    assert 48 <= moved < 48 + 4 and rewind["to_frame"] % 4 == 0, (moved, rewind)
    target = session.frames[rewind["to_frame"]]
    after = session.frames[rewind["frame"]]
    assert after.step > before[-1].step
    for frame in session.frames[rewind["frame"]:]:  # nothing held since: it lands and stands (it slid on at the
        assert np.allclose(frame.pose.position, target.pose.position, atol=1e-9)  # speed it had 2 s before)

    # Screenshots: the world as presented (with the HUD), then the split view of two worlds on the same poses.
    world = ReferenceWorld(SIZE)
    try:
        world.reset(level)
        first, split = [pygame.surfarray.array3d(pygame.image.load(str(p))).swapaxes(0, 1) for p in game.screenshots]
        shown = session.frames[int(game.screenshots[0].stem.split("-")[1])]
        assert first.shape == (WINDOW[1], WINDOW[0], 3) and first.std() > 20
        assert shows(first, world.render([shown.pose])[0]) < 12
        # and not another pose of the walk: the start or the end of the turn, whichever is farther from it (on a
        # loaded machine the frame on screen at the F12 can still be near the start, the pipeline behind)
        others = max(shows(first, world.render([pose])[0]) for pose in (level.start, before[-1].pose))
        assert others > 2 * shows(first, world.render([shown.pose])[0])
        rows = split[WINDOW[1] // 2 - 20:WINDOW[1] // 2 + 20]
        left, right = rows[:, :WINDOW[0] // 2], rows[:, WINDOW[0] // 2:]
        assert np.abs(left.astype(int) - right.astype(int)).mean() < 4  # the same picture twice
        assert split[-5:].max() < 10  # letterboxed: two 16:9 panels side by side leave bars (below the message)
    finally:
        world.close()

    assert main(["replay", str(game.sessions[0]), "--check"]) == 0


def test_a_mouse_turn_shows_on_screen_before_the_world_draws_it(tmp_path, monkeypatch, window):
    """The screen shows the camera's newest orientation (the frame on screen, re-projected), not the ~5 frames older
    one the world drew; with reprojection off, the frame as it is."""
    monkeypatch.setattr("explorer.hud.HUD_REFRESH", 0.0)  # the HUD's numbers as of each draw
    level = load_level("meadow")
    turning = [InputState(mouse=(-30.0, 0.0))] * 200  # 3.6 degrees left a frame: 86 degrees a second
    errors = {}
    for reproject in (True, False):
        class Looked(Game):
            def _screenshot(self, size, frame):
                self.poses = (self.screen_pose, self.motion.pose)
                self.hud_yaw = float(" ".join(self.hud_panel._lines).split("yaw")[1].split()[0])
                super()._screenshot(size, frame)

        config = GameConfig(level, "reference", SIZE, window=WINDOW, seconds=1.5, sessions_dir=tmp_path / str(reproject),
                            reproject=reproject)
        game = Looked(config, lambda kind, size: ReferenceWorld(size), ScriptedInput(turning, {24: [pygame.K_F12]}))
        assert game.run() == 0
        for saver in game.savers:
            saver.join()
        screen = pygame.surfarray.array3d(pygame.image.load(str(game.screenshots[0]))).swapaxes(0, 1)
        drawn, now = game.poses
        assert now.yaw - drawn.yaw > 10  # the camera is well ahead of the frame on screen
        assert game.hud_yaw == pytest.approx(heading((now if reproject else drawn).yaw), abs=0.05)  # what it shows
        world = ReferenceWorld(SIZE)
        try:
            world.reset(level)
            # the right 60%: a left turn reveals a strip at the left that no frame covers yet (drawn dimmed)
            right = (slice(None), slice(WINDOW[0] * 2 // 5, None))
            errors[reproject] = tuple(shows(screen[right], world.render([pose])[0][:, SIZE[0] * 2 // 5:])
                                      for pose in (now, drawn))
        finally:
            world.close()
    assert errors[True][0] < 0.6 * errors[True][1], errors  # re-projected: the camera now
    assert errors[False][1] < 0.6 * errors[False][0], errors  # off: the frame the world drew


def test_time_in_the_pause_menu_is_not_play_time(tmp_path, window):
    """Esc opens the menu for ~1.5 s mid-walk: the log's clock and latencies leave the pause out, so the session
    shows no gap and no dropped frames (it used to count the whole pause as both). --seconds is the wall clock's:
    a run with the menu open still ends (a demo left paused, or paused by a lost focus, used to run for ever)."""
    import threading
    from explorer.session import summary

    def press(key=pygame.K_ESCAPE):
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))

    class PauseOnce(ScriptedInput):
        keys_seen: list = []

        def handle(self, event):
            if event.type == pygame.KEYDOWN:
                self.keys_seen.append(event.key)

        def sample(self):
            if self.taken == 24:  # open the menu, move in it, and close it with a second Esc 1.5 s later
                press()
                threading.Timer(0.7, press, (pygame.K_DOWN,)).start()
                threading.Timer(1.5, press).start()
            return super().sample()

    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=3.0, sessions_dir=tmp_path)
    game = Game(config, lambda kind, size: ReferenceWorld(size), PauseOnce([InputState({"forward"})] * 200))
    assert game.run() == 0
    session = read_session(game.sessions[0])
    t = [f.t for f in session.frames]
    assert 1.0 < t[-1] < 2.0 and max(np.diff(t)) < 0.5, (t[-1], max(np.diff(t)))  # 3 s, 1.5 of them in the menu
    numbers = summary(session)
    assert numbers["dropped"] <= 5 and numbers["latency_ms_p90"] < 1000, numbers
    # the menu's arrow key is not a tap of "back" for the camera once play goes on
    assert game.inputs.keys_seen == [pygame.K_ESCAPE], game.inputs.keys_seen


def test_the_menu_shows_what_was_in_flight_and_play_goes_on_from_rest(tmp_path, window):
    """Esc mid-walk and mid-turn: under the menu the world's frames for what was played before it are shown (the
    picture used to stay a step or two behind the camera there, a dark band where the turn had gone on), and after
    Resume the camera does not glide on by itself (it went on ~1 m with no key held)."""
    import threading
    seen = {}

    def press(key=pygame.K_ESCAPE):
        pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))

    def look():  # a second into the menu
        seen.update(caught_up=not game.buffer and not game.worker.busy, screen=game.screen_pose,
                    camera=game.motion.pose, view=game._view_pose(), frames=game.session.frames)

    def resume():
        seen["resumed_at"] = game.session.frames
        press()

    class PauseMidTurn(ScriptedInput):
        turning = False  # mouse motion that came after the last sample, as the Esc did

        def pending_mouse(self):
            return (12.0, 0.0) if self.turning else (0.0, 0.0)

        def take_pending(self):  # the game takes it as the menu opens
            turned, self.turning = self.turning, False
            return InputState(mouse=(12.0, 0.0)) if turned else InputState()

        def sample(self):
            if self.taken == 30:
                press()
                self.turning = True
                threading.Timer(1.0, look).start()
                threading.Timer(1.5, resume).start()
            return super().sample()

    walk = [InputState({"forward"}, mouse=(12.0, 0.0))] * 31  # the rest: nothing held
    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=4.0, sessions_dir=tmp_path)
    game = Game(config, lambda kind, size: ReferenceWorld(size), PauseMidTurn(walk))
    assert game.run() == 0
    assert seen["caught_up"] and seen["screen"] == seen["camera"], seen  # the turn's last frames too
    assert seen["view"].yaw == seen["screen"].yaw, seen  # and the mouse's turn up to the Esc: no band
    frames = [line for line in trajectory(game.sessions[0]) if "event" not in line]
    moved = [i for i in range(seen["resumed_at"], len(frames))
             if frames[i]["pose"]["position"] != frames[i - 1]["pose"]["position"]]
    assert moved == [], moved  # everything played before the menu was shown under it
    session = read_session(game.sessions[0])
    assert session.resumes == [seen["resumed_at"]]  # the refill after it is logged, as a rewind's is, so it is
    # not counted as dropped frames (test_session's summary tests; bounded here, it failed on a loaded machine)


def test_the_walk_pauses_when_the_window_loses_focus(tmp_path, window):
    """Alt-tab mid-walk: the menu opens and the world waits, as Esc would; the session does not go on without the
    player (it used to walk on, generating, until the window came back)."""

    class LoseFocusOnce(ScriptedInput):
        def sample(self):
            if self.taken == 24:
                pygame.event.post(pygame.event.Event(pygame.WINDOWFOCUSLOST))
            return super().sample()

    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=3.5, sessions_dir=tmp_path)
    game = Game(config, lambda kind, size: ReferenceWorld(size), LoseFocusOnce([InputState({"forward"})] * 400))
    assert game.run() == 0
    assert game.paused
    frames = len(read_session(game.sessions[0]).frames)
    assert 24 <= frames < 48, frames  # without the pause: 3.5 s x 24 fps


def test_the_split_view_message_follows_the_panels_when_the_window_is_resized(tmp_path, monkeypatch):
    # Tab in a tall window said "reference above | generated below"; widened, the panels stood side by side under it
    config = GameConfig(load_level("meadow"), "reference", SIZE, sessions_dir=tmp_path)
    game = Game(config, lambda kind, size: ReferenceWorld(size), ScriptedInput([]))
    game.kind, game.split, game.side_seen, game.paused = "reference", True, True, False
    game.worker = types.SimpleNamespace(size=SIZE)
    window = [(400, 700)]
    monkeypatch.setattr(pygame.display, "get_surface", lambda: object())
    monkeypatch.setattr(pygame.display, "get_window_size", lambda: window[0])
    game._toggle_split()
    game._toggle_split()  # off and on again: said with the window as it is
    assert game.message[0] == "split view: reference above | generated below"
    window[0] = (1400, 300)
    game._handle(pygame.event.Event(pygame.WINDOWSIZECHANGED, x=1400, y=300))
    assert game.message[0] == "split view: reference | generated"


def test_menu_choices_made_while_a_world_opens_are_dropped(tmp_path, window):
    """Restart chosen three times in the seconds a world opened: each waiting choice opened another world once the
    one before had (ten in a row: over a minute without a picture)."""
    def press(*keys):
        for key in keys:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))
    opened = []

    def open_world(kind, size):
        opened.append(kind)
        if len(opened) == 2:  # the restart's world, opening: the player chooses Restart again, twice
            press(pygame.K_ESCAPE, pygame.K_DOWN, pygame.K_RETURN, pygame.K_ESCAPE, pygame.K_DOWN, pygame.K_RETURN)
        return ReferenceWorld(size)

    class Menu(ScriptedInput):
        def sample(self):
            if self.taken == 12:
                press(pygame.K_ESCAPE, pygame.K_DOWN, pygame.K_RETURN)
            return super().sample()

    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=2.5, sessions_dir=tmp_path)
    game = Game(config, open_world, Menu([InputState()] * 200))
    assert game.run() == 0
    assert opened == ["reference", "reference"] and len(game.sessions) == 2 and not game.paused, opened


def test_switch_world_keeps_the_place_and_restart_goes_back_to_the_start(tmp_path, window):
    """Walk 1 s, then Switch world in the menu: the other world opens where the camera was (it used to open at the
    level's start, unsaid); Restart there goes back to the start."""
    import threading

    def press(*keys):
        for key in keys:
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))

    class Menu(ScriptedInput):
        def sample(self):
            if self.taken == 24:  # Esc, then Down twice to "Switch world" and Enter, once the menu is up
                press(pygame.K_ESCAPE)
                threading.Timer(0.3, press, (pygame.K_DOWN, pygame.K_DOWN, pygame.K_RETURN)).start()
            if self.taken == 60:  # in the other world: Restart
                press(pygame.K_ESCAPE)
                threading.Timer(0.3, press, (pygame.K_DOWN, pygame.K_RETURN)).start()
            return super().sample()

    level = load_level("meadow")
    config = GameConfig(level, "reference", SIZE, window=WINDOW, seconds=12.0, sessions_dir=tmp_path,
                        random_weights="tiny")  # the "generated" world below is a reference one standing in
    game = Game(config, lambda kind, size: ReferenceWorld(size or SIZE), Menu([InputState({"forward"})] * 1000))
    game.run()
    first, second, third = (read_session(path) for path in game.sessions[:3])
    assert game.kind == "generated"  # switched once, then restarted in the same kind
    walked = first.frames[-1].pose
    assert np.linalg.norm(np.subtract(walked.position, level.start.position)) > 0.5
    assert second.frames[0].pose == walked  # switched where the screen was
    assert third.frames[0].pose == level.start  # restarted at the start


def test_mouse_sensitivity_and_invert_y_steer_the_camera_and_are_logged(tmp_path, window):
    controls = ControlSettings(mouse_sensitivity=0.3, invert_y=True)
    level = load_level("meadow")
    config = GameConfig(level, "reference", SIZE, window=WINDOW, seconds=1.5, sessions_dir=tmp_path, controls=controls,
                        reproject=False)
    inputs = [InputState({"forward"}, mouse=(4.0, 2.0))] * 200
    game = Game(config, lambda kind, size: ReferenceWorld(size), ScriptedInput(inputs))
    assert game.run() == 0
    session = read_session(game.sessions[0])
    assert session.controls == controls
    # and how it was shown (--no-reproject was not logged)
    assert session.header["display"] == {"reproject": False, "window": list(WINDOW), "fullscreen": False}
    last = session.frames[-1]
    assert last.pose.yaw == pytest.approx(level.start.yaw - 0.3 * 4.0 * last.frame)
    assert last.pose.pitch > level.start.pitch + 5  # the mouse went down: inverted, the camera looks up
    ground = lambda x, z: float(height_at(level.scene, x, z))  # noqa: E731
    start = level.start
    poses = replay_controls(start, [f.input for f in session.frames[1:]], session.controls, ground=ground,
                            altitude=start.position[1] - ground(start.position[0], start.position[2]))
    assert [f.pose for f in session.frames[1:]] == poses  # the logged settings turn the logged input into the poses


def test_a_world_that_keeps_the_loop_waiting_is_said_on_screen(tmp_path, window):

    class StallingWorld(ReferenceWorld):
        def step(self, poses):
            self.steps = getattr(self, "steps", 0) + 1
            if self.steps == 3:
                time.sleep(2.0)  # as a model loading, or the split view's other world opening
            return super().step(poses)

    class Watched(Game):
        said: set = set()

        def _overlays(self, pose):
            super()._overlays(pose)
            self.said.update(self.message_panel._lines)

        def _show_now(self, text):
            super()._show_now(text)
            self.said.add(text)

    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=3.0, sessions_dir=tmp_path)
    game = Watched(config, lambda kind, size: StallingWorld(size), ScriptedInput([InputState({"forward"})] * 200))
    assert game.run() == 0
    assert "opening the reference world..." in game.said
    assert any(line.startswith("waiting for the world...") for line in game.said), game.said


def test_the_screen_says_the_world_is_opening_until_its_first_frame(tmp_path, window):
    """A world whose first frame takes a while: the message stays up over the empty screen until the picture comes
    (it used to go with the first tick, leaving a black screen)."""

    class SlowStart(ReferenceWorld):
        def reset(self, level, seed=0):
            time.sleep(0.5)  # a model's first frame: the prompt encoded, the cache filled
            return super().reset(level, seed)

    class Watched(Game):
        said: list = []

        def _overlays(self, pose):
            super()._overlays(pose)
            self.said.append((self.screen_pose is not None, tuple(self.message_panel._lines)))
            if len(self.said) == 2:  # F12 over the empty screen: no picture named frame -1 in the session
                pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=pygame.K_F12, mod=0, unicode="", scancode=0))

    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=1.0, sessions_dir=tmp_path)
    game = Watched(config, lambda kind, size: SlowStart(size), ScriptedInput([]))
    assert game.run() == 0
    before = [lines for shown, lines in game.said if not shown]
    after = [lines for shown, lines in game.said if shown]
    assert len(before) >= 5 and all(lines == ("opening the reference world...",) for lines in before), before
    assert after and all("opening the reference world..." not in lines for lines in after)
    # F12 over the empty screen is a picture of the first frame (it said "nothing to screenshot yet", which, for a
    # press made while the window opened, came up over the first picture)
    assert [p.name for p in game.screenshots] == ["screenshot-00000.png"]
    # without the opening line, which goes with the frame that ends it
    assert after[0] == () and game.said[len(before)][0]


def test_a_world_that_fails_before_its_first_frame_leaves_no_session_folder(tmp_path, window):

    class BrokenWorld(ReferenceWorld):
        def reset(self, level, seed=0):
            raise ValueError("the start image cannot be read")

    sessions = tmp_path / "sessions"
    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=2.0, sessions_dir=sessions)
    game = Game(config, lambda kind, size: BrokenWorld(size), ScriptedInput([]))
    with pytest.raises(ValueError, match="start image"):
        game.run()
    assert game.sessions == [] and list(sessions.iterdir()) == []


def test_restart_from_the_menu_closes_it_before_the_new_world_opens(tmp_path, window):

    class Watched(Game):
        menu_while_opening: list = []

        def _show_now(self, text):
            self.menu_while_opening.append("menu" in self.presenter._overlays)
            super()._show_now(text)

        def _end(self):  # it waits for the step in flight: seconds, when the split view's other world is opening
            self.menu_while_opening.append(("menu" in self.presenter._overlays, self.message and self.message[0]))
            super()._end()

    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=3.0, sessions_dir=tmp_path)
    keys = {24: [pygame.K_ESCAPE, pygame.K_DOWN, pygame.K_RETURN]}  # menu, Restart, choose
    game = Watched(config, lambda kind, size: ReferenceWorld(size), ScriptedInput([InputState()] * 200, keys))
    assert game.run() == 0
    assert len(game.sessions) == 2 and not game.paused
    # --seconds counts from the game's first frame, not again from the new world's (it ran 1 s + 3 s)
    frames = [len(read_session(path).frames) for path in game.sessions]
    assert frames[1] > 0 and sum(frames) <= 3.0 * 24 + 12, frames
    # at the start; at the restart, before the old world closes (saying what comes) and after; at the end
    assert game.menu_while_opening == [False, False, (False, "opening the reference world..."), False,
                                       (False, None)], game.menu_while_opening


def test_a_rewind_in_split_view_shows_both_worlds_at_once():
    from types import SimpleNamespace
    shown = []
    game = Game(GameConfig(load_level("meadow")), lambda kind, size: None, ScriptedInput([]))
    game.presenter = SimpleNamespace(show=shown.append)
    game.session = SimpleNamespace(frames=120, rewind=lambda frame, step: None)
    game.split, game.generation, game.message = True, 0, None
    game.ring = SnapshotRing()
    image, side = np.zeros((4, 8, 3), np.uint8), np.ones((4, 8, 3), np.uint8)
    game.ring.push(Snapshot(23, 6, 23, 2, MotionState.at(load_level("meadow").start, None), image, side))
    game.ring.push(Snapshot(47, 12, 47, 3, MotionState.at(load_level("meadow").start, None), image, side))
    game._rewind()
    assert len(shown) == 1 and [a.max() for a in shown[0]] == [0, 1]  # the played world, then the comparison
    game.split = False
    game.ring.push(Snapshot(47, 12, 47, 3, MotionState.at(load_level("meadow").start, None), image, side))
    game._rewind()
    assert len(shown[1]) == 1


def test_r_again_at_rest_after_a_rewind_has_nothing_older(tmp_path, window):
    # The first frame after a rewind was compared with the frame before it, counted as motion and kept as a
    # snapshot: R again said "rewound 0.0 s (as far back as kept)" and nothing moved.

    class Watched(Game):
        said: list = []

        def _say(self, text, seconds=None):
            self.said.append(text)
            super()._say(text) if seconds is None else super()._say(text, seconds=seconds)

    walk = [InputState({"right"})] * 12  # 0.5 s held (and a glide), then at rest: R goes back to the start
    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=6.0, sessions_dir=tmp_path)
    game = Watched(config, lambda kind, size: ReferenceWorld(size), ScriptedInput(walk, {60: [pygame.K_r],
                                                                                         84: [pygame.K_r]}))
    assert game.run() == 0
    rewinds = [text for text in game.said if "rewound" in text or "rewind to" in text]
    assert "as far back as kept" in rewinds[0] and rewinds[1:] == ["nothing older to rewind to"], rewinds
    assert len(read_session(game.sessions[0]).rewinds) == 1


def test_generated_world_session_with_a_rewind_replays_exactly(tmp_path, window):
    """The model's world (random weights of the tiny config) in a child process, as `explorer play` runs it: its
    state stays there and goes through the snapshot ring on a rewind, and the replay restores the same snapshot and
    reproduces every frame."""
    from world.make import WorldOpener
    inputs = [InputState({"forward"}, (4.0, 0.0))] * 200
    config = GameConfig(load_level("meadow"), "generated", window=WINDOW, seconds=3.0, sessions_dir=tmp_path,
                        random_weights="tiny", world_process=True)
    game = Game(config, WorldOpener(device="cpu", random_config="tiny"), ScriptedInput(inputs, {6: [pygame.K_r]}))
    assert game.run() == 0
    session = read_session(game.sessions[0])
    assert session.header["random_config"] == "tiny" and session.header["checkpoint"] is None
    assert session.header["device"] == "cpu" and len(session.rewinds) == 1 and session.ended
    assert len(session.frames) > session.rewinds[0].frame + 4  # played on after the rewind
    assert main(["replay", str(game.sessions[0]), "--check"]) == 0


def test_play_command_under_x_with_xdotool_then_replay_check(tmp_path, xvfb, capsys):
    sessions = tmp_path / "sessions"
    proc = play_cli(sessions, xvfb, seconds=5)
    real_input = xvfb is not None and shutil.which("xdotool") is not None
    if not real_input:
        print("no Xvfb or xdotool: the session runs without real X input")
    else:
        wait_for_lines(sessions, 1)
        env = display_env(xvfb)
        xdo = lambda *a: subprocess.run(["xdotool", *a], env=env, check=True)  # noqa: E731
        xdo("keydown", "w")
        time.sleep(1.5)
        xdo("keyup", "w")
        time.sleep(0.3)
        for _ in range(10):
            xdo("mousemove_relative", "--", "15", "0")
            time.sleep(0.05)
        xdo("key", "d")  # a tap: down and up 12 ms apart, between two of the loop's samples
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 0, err
    [session] = sessions.iterdir()
    header = json.loads((session / "session.json").read_text())
    assert "ended" in header and header["world"] == "reference" and header["size"] == list(SIZE)
    frames = trajectory(session)
    assert 105 <= len(frames) <= 125, len(frames)
    [line] = out.strip().splitlines()  # the session's numbers, python -m explorer.session's dropped count too
    dropped = summary(read_session(session))["dropped"]
    assert line.startswith(f"{session}: {len(frames)} frames in ") and f" {dropped} dropped, latency p50 " in line

    if real_input:
        walking = [f for f in frames if "forward" in f["input"]["actions"]]
        assert len(walking) >= 20
        assert walking[-1]["pose"]["position"][2] < walking[0]["pose"]["position"][2] - 0.5
        turning = [f for f in frames if f["input"]["mouse"][0] > 0]
        assert turning, "no mouse motion arrived"
        assert frames[-1]["pose"]["yaw"] < -5  # 150 px right at 0.12 deg/px: about -18 degrees
        assert frames[-1]["pose"]["yaw"] == pytest.approx(
            -sum(f["input"]["mouse"][0] for f in frames) * ControlSettings().mouse_sensitivity)
        assert [f for f in frames if "right" in f["input"]["actions"]], "the tap of D was not seen"

    code, out, err = run_cli("replay", str(session), "--check")
    assert code == 0, err
    assert len(out.strip().splitlines()) == 1 and f"{len(frames)} of {len(frames)} frames match" in out

    lines = (session / "trajectory.jsonl").read_text().splitlines()
    record = json.loads(lines[60])
    record["pose"]["yaw"] += 5.0
    lines[60] = json.dumps(record)
    (session / "trajectory.jsonl").write_text("\n".join(lines) + "\n")
    code, out, err = run_cli("replay", str(session), "--check")
    assert code == 1
    assert len(err.strip().splitlines()) == 1 and "frame 60 " in err


def test_sigkill_leaves_a_readable_session_that_replays(tmp_path, xvfb):
    sessions = tmp_path / "sessions"
    proc = play_cli(sessions, xvfb, seconds=60)
    try:
        session = wait_for_lines(sessions, 30)
        time.sleep(0.3)
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    text = (session / "trajectory.jsonl").read_text()
    lines = text.splitlines()
    complete = lines if text.endswith("\n") else lines[:-1]
    assert len(complete) >= 30
    for line in complete:
        json.loads(line)  # every line written before the kill parses
    assert "ended" not in json.loads((session / "session.json").read_text())
    code, out, err = run_cli("replay", str(session), "--check")
    assert code == 0, err
    n = len(complete)
    checked = int(out.split(" of ")[0])
    assert n - 3 <= checked <= n  # all but a step cut short by the kill


def test_ctrl_c_in_the_terminal_quits_like_closing_the_window(tmp_path, xvfb):
    """As a terminal sends it: to the game and its world's process alike (their own process group here)."""
    sessions = tmp_path / "sessions"
    proc = play_cli(sessions, xvfb, seconds=60, world="generated", start_new_session=True)
    try:
        session = wait_for_lines(sessions, 30)
    finally:
        os.killpg(proc.pid, signal.SIGINT)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err, err  # the world's process too: no KeyboardInterrupt
    assert "ended" in json.loads((session / "session.json").read_text())  # closed, not cut off
    n = len(trajectory(session))
    t = [f["t"] for f in trajectory(session)]
    assert min(np.diff(t)) > 0.005, t[-5:]  # the rest of the step at the frame rate (it was drawn at one time)
    assert (n - 1) % FRAMES_PER_STEP == 0  # whole steps only
    assert out.startswith(f"{session}: {n} frames")  # the numbers, as after any quit
    code, out, err = run_cli("replay", str(session), "--check")
    assert code == 0 and f"{n} of {n} frames match" in out, err


def test_closing_the_terminal_quits_like_closing_the_window(tmp_path, xvfb):
    """Closing the terminal that runs the game (SIGHUP, then its writes fail) closes the session with whole steps,
    as quitting does; SIGHUP used to kill the game mid-step, its session without an end."""
    from conftest import Terminal
    sessions = tmp_path / "sessions"
    term = Terminal([sys.executable, "-m", "explorer.cli", "play", "--world", "reference", "--level", "meadow",
                     "--size", f"{SIZE[0]}x{SIZE[1]}", "--seconds", "60", "--window", f"{WINDOW[0]}x{WINDOW[1]}",
                     "--sessions-dir", str(sessions)], env=display_env(xvfb))
    try:
        session = wait_for_lines(sessions, 30)
    finally:
        term.hang_up()
    assert term.proc.wait(timeout=30) == 128 + signal.SIGHUP, term.text
    assert "ended" in json.loads((session / "session.json").read_text())
    n = len(trajectory(session))
    assert (n - 1) % FRAMES_PER_STEP == 0
    code, out, err = run_cli("replay", str(session), "--check")
    assert code == 0 and f"{n} of {n} frames match" in out, err


def test_sigterm_twice_to_the_group_quits_like_closing_the_window(tmp_path, xvfb):
    """As `timeout` ends a run: SIGTERM to the game, then to its whole process group, within a moment. The
    session is closed and the numbers printed (SIGTERM used to kill the game mid-step, printing nothing)."""
    sessions = tmp_path / "sessions"
    proc = play_cli(sessions, xvfb, seconds=60, start_new_session=True)
    try:
        session = wait_for_lines(sessions, 30)
    finally:
        proc.send_signal(signal.SIGTERM)
        os.killpg(proc.pid, signal.SIGTERM)
        out, err = proc.communicate(timeout=30)
    assert proc.returncode == 128 + signal.SIGTERM and "Traceback" not in err, err  # as render's
    assert "ended" in json.loads((session / "session.json").read_text())
    n = len(trajectory(session))
    assert (n - 1) % FRAMES_PER_STEP == 0 and out.startswith(f"{session}: {n} frames")


def test_play_without_a_display_says_so_in_one_line(tmp_path):
    env = {k: v for k, v in os.environ.items() if k not in ("DISPLAY", "WAYLAND_DISPLAY", "SDL_VIDEODRIVER")}
    code, out, err = run_cli("play", "--seconds", "1", "--sessions-dir", str(tmp_path), env=env)
    assert code == 2
    assert len(err.strip().splitlines()) == 1, err
    assert "display" in err and "xvfb-run" in err and "explorer render" in err and "SDL_VIDEODRIVER" in err
    assert err.strip().endswith("(plays unseen and logs the session)")  # whole: not cut as an overlong value is
    assert not any(tmp_path.iterdir())


@pytest.mark.parametrize("args, words", [
    (["--level", "no-such-level"], ["no-such-level"]),
    (["--world", "generated", "--checkpoint", "missing.safetensors"], ["missing.safetensors", "no such checkpoint"]),
    (["--world", "generated", "--checkpoint", "."], ["is a folder"]),
    (["--world", "generated", "--checkpoint", "{fifo}"], ["is not a regular file"]),  # opening it waited for ever
    # a model file that fails as its world opens: no session kept, and no empty sessions folder left either
    (["--world", "generated", "--checkpoint", "{garbage}"], ["not a readable safetensors file"]),
    (["--seconds", "-1"], ["--seconds"]),
    (["--random-weights", "mini", "--checkpoint", "c.safetensors"], ["--random-weights"]),
    (["--world", "generated", "--size", "128x72"], ["--size"]),
    (["--mouse-sensitivity", "0"], ["--mouse-sensitivity"]),
    (["--mouse-sensitivity", "fast"], ["--mouse-sensitivity"]),
])
def test_play_bad_input_is_one_line_and_exit_2(tmp_path, xvfb, args, words):
    os.mkfifo(tmp_path / "pipe.safetensors")
    (tmp_path / "garbage.safetensors").write_bytes(b"\x00" * 100)
    args = [arg.replace("{fifo}", str(tmp_path / "pipe.safetensors"))
            .replace("{garbage}", str(tmp_path / "garbage.safetensors")) for arg in args]
    code, out, err = run_cli("play", "--sessions-dir", str(tmp_path / "s"), *args, env=display_env(xvfb))
    assert code == 2, err
    assert len(err.strip().splitlines()) == 1, err
    assert "Traceback" not in err
    for word in words:
        assert word in err
    assert not (tmp_path / "s").exists()


# --- the pieces -------------------------------------------------------------------------------------

def test_keys_map_to_actions_and_sticks_scale():
    pressed = {key: key in (pygame.KSCAN_W, pygame.KSCAN_LSHIFT, pygame.KSCAN_E) for key in KEY_ACTIONS}
    assert held_actions(pressed) == {"forward", "fast", "roll_right"}

    class Pad:  # SDL game-controller axes are int16
        values = {pygame.CONTROLLER_AXIS_LEFTX: 32767, pygame.CONTROLLER_AXIS_LEFTY: -32768,
                  pygame.CONTROLLER_AXIS_RIGHTX: 16384, pygame.CONTROLLER_AXIS_RIGHTY: 0}

        def get_axis(self, axis):
            return self.values[axis]

    lx, ly, rx, ry = stick_axes(Pad())
    assert (lx, ly, ry) == (1.0, -1.0, 0.0) and rx == pytest.approx(0.5, abs=1e-3)
    InputState(gamepad=(lx, ly, rx, ry))  # within the range the controls accept


def test_a_key_tapped_between_samples_counts_as_held_for_one_frame():
    keyboard = {key: False for key in KEY_ACTIONS}
    source = PygameInput(pressed=lambda: keyboard)
    down = lambda key, scancode: pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="",  # noqa: E731
                                                    scancode=scancode)
    source.handle(down(pygame.K_w, pygame.KSCAN_W))  # pressed and released again before the loop sampled
    source.handle(down(pygame.K_F1, pygame.KSCAN_F1))  # not a camera key
    assert source.sample().actions == {"forward"}
    assert source.sample().actions == frozenset()  # one frame, not two
    keyboard[pygame.KSCAN_Q] = True
    source.handle(down(pygame.K_q, pygame.KSCAN_Q))
    assert source.sample().actions == {"roll_left"} and source.sample().actions == {"roll_left"}  # held: held
    # AZERTY: the key where W is on a US keyboard is Z; it walks, and the letter W (where Z is) does nothing
    keyboard[pygame.KSCAN_Q] = False
    source.handle(down(pygame.K_z, pygame.KSCAN_W))
    source.handle(down(pygame.K_w, pygame.KSCAN_Z))
    assert source.sample().actions == {"forward"}
    # As the menu opens: what events brought (a tap), not the keyboard now, which can hold the menu's own arrow
    # key, pressed right after the Esc (it moved the camera a frame back)
    source.handle(down(pygame.K_w, pygame.KSCAN_W))
    keyboard[pygame.KSCAN_DOWN] = True
    assert source.take_pending().actions == {"forward"} and source.take_pending() == InputState()


def test_scripted_input_gives_its_inputs_then_nothing():
    inputs = [InputState({"forward"}), InputState(mouse=(3.0, 0.0))]
    source = ScriptedInput(inputs)
    assert [source.sample() for _ in range(4)] == inputs + [InputState()] * 2 and source.taken == 4


def test_snapshot_ring_goes_back_two_seconds_of_play_each_time():
    ring = SnapshotRing(seconds=2.0, fps=24)
    motion = MotionState.at(load_level("meadow").start)
    for frame in range(0, 201, 4):
        ring.push(Snapshot(frame, frame // 4, frame, f"state {frame}", motion, None))
    assert len(ring.ring) <= 14  # bounded: ~2 s of steps and a little more
    target = ring.rewind()
    assert target.frame == 152 and ring.ring[-1] is target  # newer snapshots are dropped
    # Played on for 3 steps (the log's frame numbers go on), then R again: back along the timeline from there, not
    # to the same place as before (the log's frame numbers said "2 s back" of a place only 0.5 s of play ago).
    for i in range(1, 4):
        ring.push(Snapshot(200 + 4 * i, 50 + i, 152 + 4 * i, f"state after {i}", motion, None))
    target = ring.rewind()
    assert target.played == ring.ring[0].played < 152  # nothing 2 s older is kept: the oldest
    assert ring.rewind() is None  # nothing older at all: the game says so and stays



def test_time_at_rest_is_not_rewound():
    # With the camera at rest nothing changes; counted as play, 2 s of rest filled the ring with one moment and R
    # undid a fraction of the walk, saying "rewound 2.0 s" (and then "1.0 s" with nothing changing at all).
    ring = SnapshotRing(seconds=2.0, fps=24)
    motion = MotionState.at(load_level("meadow").start)
    for frame in range(0, 201, 4):  # walking: every frame is motion
        ring.push(Snapshot(frame, frame // 4, frame, f"state {frame}", motion, None))
    for frame in range(204, 401, 4):  # then 8 s at rest: the motion count stays at 200
        ring.push(Snapshot(frame, frame // 4, 200, f"state {frame}", motion, None))
    assert ring.ring[-1].frame == 200  # the rest added nothing
    assert ring.rewind().played == 152  # 2 s of the walk


def pace(turnarounds: list[int], ticks: int) -> tuple[list[int], list[int]]:
    """The loop's pipeline, in ticks, as Game runs it: take input (or not), poll, integrate, submit a full step to an
    idle world that answers `turnarounds[k]` ticks later, show a frame. Returns each shown frame's latency in ticks
    and the ticks where no frame was ready (after the first frame)."""
    pacer, pending, buffer, in_flight = Pacer(), [], deque(), None
    latency, dropped = [], []
    answers = iter(turnarounds)
    for tick in range(1, ticks + 1):
        take = pacer.take_input(tick, len(pending), len(buffer), in_flight is not None)
        if in_flight is not None and tick >= in_flight[0]:
            buffer.extend(in_flight[1])
            in_flight = None
            pacer.received(tick)
        if take:
            pending.append(tick)
        if in_flight is None and len(pending) >= FRAMES_PER_STEP:
            pacer.submitted(tick)
            in_flight, pending = (tick + next(answers), pending[:FRAMES_PER_STEP]), pending[FRAMES_PER_STEP:]
        if buffer:
            latency.append(tick - buffer.popleft())
        elif latency:
            dropped.append(tick)
    return latency, dropped


@pytest.mark.parametrize("turnaround", [1, 2, 3, 4, 6])
def test_pacer_keeps_latency_at_its_floor_without_showing_frames_twice(turnaround):
    latency, dropped = pace([turnaround] * 400, 480)
    # every frame waits three ticks for its step to fill and the world's turnaround, no more
    assert set(latency[8:]) == {3 + turnaround}
    if turnaround <= 4:  # real time or faster: after the first steps, never a tick without a new frame
        assert [t for t in dropped if t > 20] == []
    else:  # slower than real time: four frames per turnaround, and the input is taken just in time
        assert len(latency) == pytest.approx(480 * 4 / turnaround, abs=8)


def test_pacer_absorbs_occasional_slow_steps():
    turnarounds = [3 if k in (30, 40, 41, 50) else 2 for k in range(400)]  # within 24 steps
    latency, dropped = pace(turnarounds, 1200)
    assert len([t for t in dropped if t > 20]) == 1  # only the first slow step comes late; later ones are covered
    assert latency[-40:] == [5] * 40  # and once the slow steps are old, latency is back at its floor


@pytest.mark.parametrize("slow", [5, 8, 20])
def test_one_step_slower_than_real_time_does_not_slow_the_steps_after_it(slow):
    """A single step that takes longer than four ticks (the split view's other world opening, a hiccup) must not
    make the loop treat the world as slower than real time for the next 24 steps: it held the input back and
    submitted every step a tick late, showing 4 frames in 5 ticks (19 fps) for ~5 s."""
    turnarounds = [slow if k == 30 else 2 for k in range(400)]
    latency, dropped = pace(turnarounds, 1200)
    late = [t for t in dropped if t > 20]
    assert late and max(late) - min(late) < slow + 4, late  # the slow step's own gap, and nothing after it
    assert latency[-40:] == [5] * 40


def test_two_screenshots_of_one_frame_are_both_kept(tmp_path):
    # F12 twice in the menu (the same frame on screen) wrote one file over the other.
    taken = []
    for _ in range(3):
        taken.append(screenshot_path(tmp_path, 68, taken))
    assert [p.name for p in taken] == ["screenshot-00068.png", "screenshot-00068-2.png", "screenshot-00068-3.png"]
    assert screenshot_path(tmp_path, 69, taken).name == "screenshot-00069.png"


def test_the_first_split_view_says_the_other_world_is_opening():
    # The first Tab opens the other world on the worker: 1-2 s with the picture still, which looked like a hang.
    game = Game(GameConfig(load_level("meadow")), lambda kind, size: None, ScriptedInput([]))
    game.kind, game.split, game.side_seen, game.message = "reference", False, False, None
    game._toggle_split()
    assert game.split and game.message[0] == "split view: opening the generated world..."
    game._toggle_split()
    game.side_seen = True  # its first frame came
    game._toggle_split()
    assert game.message[0] == "split view: reference | generated"


def test_opening_the_split_views_other_world_is_not_dropped_frames(tmp_path, window):
    # Its seconds counted as frames dropped by play: about 64 in the HUD and the session's numbers for one Tab.

    def open_world(kind, size):
        if kind == "generated":
            time.sleep(1.5)  # a model loading
        return ReferenceWorld(size)

    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=4.0, sessions_dir=tmp_path)
    game = Game(config, open_world, ScriptedInput([InputState({"forward"})] * 200, {12: [pygame.K_TAB]}))
    assert game.run() == 0
    session = read_session(game.sessions[0])
    [opened] = session.resumes  # logged before the first frame with both worlds: the pipeline refills there
    assert 12 <= opened < 40 and session.frames[opened].t - session.frames[opened - 1].t > 1.0
    # the 1.5 s wait is 36 ticks; a few more than none allow for a loaded machine's own drops
    assert summary(session)["dropped"] <= 8 and game.hud.dropped <= 10, (summary(session), game.hud.dropped)
    assert session.frames[opened].step_ms > 1000 and summary(session)["step_ms_p99"] < 1000, summary(session)
    assert summary(session)["fps"] > 18, summary(session)  # the frame rate of play, not the wait's 14 fps


def test_the_split_label_is_not_said_once_split_view_is_off_again():
    # Tab twice before the other world opened: "split view off", then its label as it came, with one picture.
    from explorer.world_host import Job, Result
    game = Game(GameConfig(load_level("meadow")), lambda kind, size: None, ScriptedInput([]))
    game.kind, game.split, game.side_seen, game.message, game.generation = "reference", False, False, None, 0
    game.buffer, game.filling = deque(), True
    frame = np.zeros((4, 4, 3), np.uint8)
    tick = game.last_sent = type("T", (), {})()
    result = Result(Job([tick] * 4, 1, 0, None, split=True), [frame] * 4, ["0" * 40] * 4, 30.0, 1,
                    side=[frame] * 4, note=None)
    game._receive(result)
    assert game.side_seen and game.message is None
    assert [s.refill for s in game.buffer] == [True, False, False, False]
    # a world opened (Restart, Switch world) in split view: its first frame is the start, not a refill to log
    game.side_seen, game.buffer = False, deque()
    reset = Result(Job([tick], 0, 0, None, reset=load_level("meadow"), split=True), [frame], ["0" * 40], 30.0, 1,
                   side=[frame], note=None)
    game._receive(reset)
    assert game.side_seen and [s.refill for s in game.buffer] == [False]


def photo_level_game(folder) -> Game:
    """A game on a level made of a start picture alone (folder/start.png), in the generated world, not started."""
    import matplotlib.pyplot as plt
    plt.imsave(folder / "start.png", np.full((72, 128, 3), 0.5))
    level = folder / "photo.toml"
    level.write_text('[level]\nname = "photo"\nimage = "start.png"\n\n[start]\nposition = [0.0, 1.7, 0.0]\n')
    game = Game(GameConfig(load_level(str(level))), lambda kind, size: None, ScriptedInput([]))
    game.kind, game.message = "generated", None
    return game


def test_switch_world_on_a_level_without_a_scene_says_so_and_stays(tmp_path):
    # It closed the session and began a new one, then said the reference world could not open, with a
    # command-line hint (--world generated) to a player already in the generated world.
    game = photo_level_game(tmp_path)
    game._restart = lambda *a, **k: pytest.fail("restarted")
    game._choose("Switch world")
    assert "reference world needs a [scene]" in game.message[0]


def test_restart_after_the_start_picture_was_deleted_says_so_and_stays(tmp_path):
    # The new world's first frame failed in the worker, and the game ended with the error (exit 2).
    game = photo_level_game(tmp_path)
    game.motion = MotionState.at(game.config.level.start, None)
    game._end = lambda: pytest.fail("the world was ended")
    (tmp_path / "start.png").unlink()
    game._restart("generated")
    assert game.message[0].startswith("cannot open the generated world: ") and "start.png" in game.message[0], \
        game.message


def test_a_world_whose_session_cannot_be_written_is_closed_and_the_world_before_stays_named(tmp_path):
    # A session folder that could not be made (its parent turned into a file) left the new world's worker running,
    # and self.kind named the world that had just failed: Restart's fallback opened that one again.
    (tmp_path / "file").write_text("not a folder")
    opened, closed = [], []

    class Counted(ReferenceWorld):
        def close(self):
            closed.append(self)
            super().close()

    def open_world(kind, size):
        opened.append(Counted(SIZE))
        return opened[-1]

    game = Game(GameConfig(load_level("meadow"), "reference", SIZE, sessions_dir=tmp_path / "file" / "sessions"),
                open_world, ScriptedInput([]))
    game.window, game.kind = WINDOW, "reference"
    with pytest.raises(OSError):
        game._begin("generated")
    assert game.kind == "reference" and len(opened) == 1 and closed == opened


def test_presses_while_the_first_world_opens_are_dropped_and_the_screen_counts_the_seconds(tmp_path, window):
    # Esc, Down x3, Enter pressed at the black "opening the generated world..." screen did nothing there, then, once
    # the world had opened, chose Quit from a menu never seen (exit 0, no session). The screen also said nothing
    # for the 6-9 s a model takes to load on a busy machine.
    said = []

    def open_world(kind, size):
        time.sleep(0.3)
        for key in (pygame.K_ESCAPE, pygame.K_DOWN, pygame.K_DOWN, pygame.K_DOWN, pygame.K_RETURN, pygame.K_F12):
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))
            pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key, mod=0, unicode="", scancode=0))
        time.sleep(2.0)  # a model loading
        return ReferenceWorld(size)

    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=1.5, sessions_dir=tmp_path)
    game = Game(config, open_world, ScriptedInput([InputState({"forward"})] * 100))
    show_now = game._show_now
    game._show_now = lambda text: (said.append(text), show_now(text))
    assert game.run() == 0
    assert not game.paused and len(read_session(game.sessions[0]).frames) > 24  # played on, no menu
    assert list(game.sessions[0].glob("screenshot-*.png"))  # the window's keys are kept: F12 took the first frame
    assert "opening the reference world... 1 s" in said and "opening the reference world... 2 s" in said, said


def test_a_world_begun_away_from_the_start_does_not_start_from_the_start_picture(tmp_path):
    """Switch world where the player stood, on a level with a scene and a start picture: the generated world
    started from the picture (the game moved the level's start to the player, so the picture looked in place)."""
    import time
    from PIL import Image
    from levels import LEVELS_DIR
    from world.generated import GeneratedWorld
    Image.fromarray(np.full((72, 128, 3), (200, 30, 30), np.uint8)).save(tmp_path / "red.png")
    (tmp_path / "both.toml").write_text((LEVELS_DIR / "meadow.toml").read_text().replace(
        'title = "Meadow at noon"', 'title = "x"\nimage = "red.png"'))
    level = load_level(tmp_path / "both.toml")
    game = Game(GameConfig(level, "generated", sessions_dir=tmp_path / "s"),
                lambda kind, size: GeneratedWorld.open(device="cpu", random_config="tiny"), ScriptedInput([]))
    game.split, game.tick = False, 0  # what run() sets before the first world
    try:
        for start, picture in ((level.start.moved(position=(3.0, level.start.position[1], -2.0), yaw=40.0), False),
                               (None, True)):  # where the player stands; the level's start (Restart)
            game._begin("generated", start)
            while (result := game.worker.poll()) is None:
                time.sleep(0.01)
            red = (result.frames[0].reshape(-1, 3).mean(0) - (200, 30, 30)).__abs__().max() < 5
            assert red == picture, result.frames[0].reshape(-1, 3).mean(0)
            game.worker.close()
            game.session.close()
    finally:
        game.worker.close()


def test_two_f12_presses_in_one_frame_make_two_files(tmp_path, window):
    # The request was a yes/no flag: two presses handled in the same loop pass made one file.
    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=1.5, sessions_dir=tmp_path)
    game = Game(config, lambda kind, size: ReferenceWorld(size), ScriptedInput([], {8: [pygame.K_F12, pygame.K_F12]}))
    assert game.run() == 0
    assert len(game.screenshots) == 2 and all(p.is_file() for p in game.screenshots), game.screenshots
    assert game.screenshots[1].name == game.screenshots[0].stem + "-2.png"


def test_a_screenshot_right_after_a_rewind_is_named_by_the_frame_it_shows(tmp_path, window):
    # It was named by the last frame logged before the rewind, not the rewind's target, which is on screen.
    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=4.0, sessions_dir=tmp_path)
    game = Game(config, lambda kind, size: ReferenceWorld(size),
                ScriptedInput([InputState({"forward"})] * 70, {70: [pygame.K_r]}))
    shots = []
    rewind = game._rewind

    def rewind_then_screenshot():
        rewind()
        game.screenshots_requested += 1  # F12 in the same pass, handled after R
        shots.append(game.session.frames)
    game._rewind = rewind_then_screenshot
    assert game.run() == 0
    [r] = read_session(game.sessions[0]).rewinds
    assert shots and r.to_frame < shots[0] - 1
    assert [p.name for p in game.sessions[0].glob("screenshot-*.png")] == [f"screenshot-{r.to_frame:05d}.png"]


def test_a_screenshot_does_not_show_the_message_naming_the_one_before(tmp_path, window):
    # F12 a second after F12: the second picture carried "screenshot: …/screenshot-00566.png", the other file
    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=2.0, sessions_dir=tmp_path)
    messages = []

    class Recording(Game):
        def _screenshot(self, size, frame):
            messages.append(self.message_panel._lines)  # what the picture about to be read shows at the bottom
            super()._screenshot(size, frame)
    game = Recording(config, lambda kind, size: ReferenceWorld(size),
                     ScriptedInput([], {8: [pygame.K_F12], 20: [pygame.K_F12]}))
    assert game.run() == 0
    assert len(game.screenshots) == 2 and not any("screenshot" in " ".join(lines) for lines in messages), messages


def test_a_screenshot_that_cannot_be_saved_is_said_on_screen_and_play_goes_on(tmp_path, monkeypatch, window, capfd):
    # The saver thread printed a traceback, and the screen said the file had been saved.

    def full_disk(surface, path):
        raise pygame.error(f"Couldn't open {path}")
    monkeypatch.setattr(pygame.image, "save", full_disk)
    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=1.0, sessions_dir=tmp_path)
    game = Game(config, lambda kind, size: ReferenceWorld(size), ScriptedInput([], {8: [pygame.K_F12]}))
    assert game.run() == 0
    assert game.message is not None and game.message[0].startswith("screenshot not saved: Couldn't open "), \
        game.message
    assert "Traceback" not in capfd.readouterr().err


def test_a_screenshot_is_written_beside_its_name_and_renamed_into_place(tmp_path, monkeypatch, window):
    # It was written under its own name: a kill during the ~0.1 s of PNG compression left half a PNG there.
    written, save = [], pygame.image.save

    def recorded(surface, path):
        written.append(Path(path))
        save(surface, path)
    monkeypatch.setattr(pygame.image, "save", recorded)
    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=1.0, sessions_dir=tmp_path)
    game = Game(config, lambda kind, size: ReferenceWorld(size), ScriptedInput([], {8: [pygame.K_F12]}))
    assert game.run() == 0
    [shot] = game.sessions[0].glob("*.png")
    assert written and written[0].parent == shot.parent and written[0].name != shot.name
    assert shot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n" and not written[0].exists()


def test_the_first_picture_says_how_to_walk(tmp_path, window, monkeypatch):
    # The HUD lists F1, F12, R, Tab and Esc; nothing on screen said that WASD and the mouse move the camera.
    from explorer import keys
    config = GameConfig(load_level("meadow"), "reference", SIZE, window=WINDOW, seconds=1.0, sessions_dir=tmp_path)
    game = Game(config, lambda kind, size: ReferenceWorld(size), ScriptedInput([]))
    assert game.run() == 0
    assert game.message is not None and game.message[0] == keys.controls_hint()
    assert game.message[0].startswith("WASD or arrows move") and "Q / E roll" in game.message[0]  # this US layout
    # named as the layout prints them: on AZERTY "WASD" sent the A to roll (SDL's keymap, as SDL gives it there)
    azerty = {pygame.KSCAN_W: pygame.K_z, pygame.KSCAN_A: pygame.K_q, pygame.KSCAN_S: pygame.K_s,
              pygame.KSCAN_D: pygame.K_d, pygame.KSCAN_C: pygame.K_c, pygame.KSCAN_Q: pygame.K_a,
              pygame.KSCAN_E: pygame.K_e}
    monkeypatch.setattr(keys, "_sdl", lambda: types.SimpleNamespace(SDL_GetKeyFromScancode=azerty.get))
    hint = keys.controls_hint()
    assert hint.startswith("ZQSD or arrows move") and "A / E roll" in hint, hint
    monkeypatch.setattr(keys, "_sdl", lambda: None)  # where SDL cannot be asked: the US names
    assert keys.controls_hint().startswith("WASD or arrows move")


def test_ticks_the_loop_missed_count_as_dropped():
    # The HUD counted only loop passes that had no new frame: a loop running late (a 3000x2000 window on a software
    # renderer: 13.6 fps) showed "0 dropped" where the session log counted 79.
    import time
    ticker = Ticker(24)
    assert ticker.wait() == 0  # on time
    ticker.next = time.perf_counter() - 0.5  # half a second late: 12 ticks' worth, the one due now among them
    assert ticker.wait() in (11, 12)
    assert abs(ticker.next - time.perf_counter()) < 0.05  # a new schedule from now, no rush through the missed ones


def test_a_window_larger_than_the_screen_fits_and_fullscreen_comes_back_to_the_window(xvfb, monkeypatch, capsys):
    # --window 3000x2000 opened off-screen, its HUD out of sight; --fullscreen then F11 gave a desktop-sized window.
    from explorer.game import fit_on_screen, open_window
    assert fit_on_screen((1280, 720), (1366, 768)) == (1280, 720) and capsys.readouterr().err == ""
    assert fit_on_screen((3000, 2000), (1280, 800)) == (1128, 752)  # below a title bar too
    assert "does not fit on the screen (1280x800, less 48 px for a title bar); opening 1128x752" in \
        capsys.readouterr().err
    assert fit_on_screen((360, 800), (1280, 800)) == (338, 752)  # the screen's height is too tall with a title bar
    if not xvfb:
        pytest.skip("Xvfb is not installed: no screen to fit a window on")
    monkeypatch.setenv("DISPLAY", xvfb)
    monkeypatch.setenv("SDL_VIDEODRIVER", "x11")
    for size, fullscreen, opened in (((3000, 2000), False, (1128, 752)), ((400, 300), True, (1280, 800))):
        ctx, window = open_window(size, fullscreen, "test")
        try:
            for _ in range(3):
                pygame.event.pump()
            assert pygame.display.get_window_size() == opened
            assert window == (opened if not fullscreen else size)  # what the session logs: the window it opened
            if fullscreen:
                pygame.display.toggle_fullscreen()  # F11
                for _ in range(3):
                    pygame.event.pump()
                assert pygame.display.get_window_size() == size
        finally:
            ctx.release()
            pygame.display.quit()


def test_overlay_lines_wrap_at_their_columns_in_a_narrow_window():
    # scaled down to fit, the HUD's and the hint's letters were 3 to 5 px tall at 200 to 400 px wide
    from explorer.game import wrapped
    from explorer.hud import Hud, TextPanel
    from explorer.keys import controls_hint
    panel = TextPanel()
    lines = Hud("reference", "cpu", 24).lines(now=1.0, pose=load_level("meadow").start) + [controls_hint()]
    assert wrapped(panel, lines, 5000) == lines
    narrow = wrapped(panel, lines, 240)
    assert len(narrow) > len(lines) and all(panel.size_of([line])[0] <= 240 for line in narrow), narrow
    assert "   ".join(narrow).split() == "   ".join(lines).split()  # the same words in the same order
    assert any(line.startswith("latency") for line in narrow)  # broken before a word, not in a number's padding
    assert not any(line.strip() in ("latency", "pos") for line in narrow), narrow


def test_in_a_small_window_the_menu_is_not_drawn_over():
    # At 320x180 the HUD's text ran under "Paused" and a message sat over Quit.
    from explorer.hud import MENU_ITEMS, Hud, Menu, TextPanel
    hud, menu = TextPanel(), Menu(TextPanel(size=28))
    lines = Hud("reference", "cpu", 24).lines(now=1.0, pose=load_level("meadow").start)
    panels = [("hud", hud, lines, "top-left"), ("message", TextPanel(), ["waiting for the world... 2 s"], "bottom")]
    above = ("menu", menu.panel, menu.lines(), "center")
    assert [p[2] for p in clear_of(panels, above, (1280, 720))] == [lines, ["waiting for the world... 2 s"]]
    assert [p[2] for p in clear_of(panels, above, (320, 180))] == [[], []]
    assert len(menu.lines()) == len(MENU_ITEMS) + 1
    closed = ("menu", menu.panel, [], "center")  # no menu: nothing gives way
    assert [p[2] for p in clear_of(panels, closed, (320, 180))] == [lines, ["waiting for the world... 2 s"]]
    # the untrained model's warning (top right) over the HUD (top left) in a narrow window: the HUD gives way
    warning = ("warning", TextPanel(size=24), ["RANDOM WEIGHTS (mini): the generated world is an untrained model"],
               "top-right")
    assert clear_of(panels[:1], warning, (480, 270))[0][2] == [] and clear_of(panels[:1], warning, (1280, 720))[0][2]


@pytest.mark.parametrize("window_manager", [None, "openbox"])
def test_a_window_destroyed_from_outside_ends_the_session_cleanly(tmp_path, xvfb, window_manager):
    # `xdotool windowclose` (as a task manager might): Xlib's default error handler ended the process with exit 1
    # and "X Error of failed request: BadWindow", the session without its end. Under a window manager the first
    # fix then hung for good in SDL's exit, waiting for X to confirm the window gone.
    if xvfb is None or shutil.which("xdotool") is None:
        pytest.skip("no Xvfb or xdotool: no X window to destroy")
    if window_manager and shutil.which(window_manager) is None:
        pytest.skip(f"{window_manager} is not installed: the check under a window manager needs it")
    env = display_env(xvfb)
    manager = subprocess.Popen([window_manager], env=env, stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL) if window_manager else None
    try:
        sessions = tmp_path / "sessions"
        proc = play_cli(sessions, xvfb, seconds=60)
        session = wait_for_lines(sessions, 24)
        window = subprocess.run(["xdotool", "search", "--class", "explorer"], env=env, capture_output=True,
                                text=True).stdout.split()[0]
        subprocess.run(["xdotool", "windowclose", window], env=env, check=True)
        try:
            out, err = proc.communicate(timeout=30)  # well before --seconds
        except subprocess.TimeoutExpired:
            proc.kill()
            raise AssertionError("the game did not end after its window was destroyed") from None
    finally:
        if manager is not None:
            manager.terminate()
            manager.wait(timeout=10)
    assert proc.returncode == 0 and "X Error" not in err and "leaked" not in err, err
    assert out.startswith(str(session)) and "ended" in json.loads((session / "session.json").read_text())
    code, out, err = run_cli("replay", str(session), "--check")
    assert code == 0 and "frames match" in out, err


def test_a_full_disk_while_logging_names_the_file_and_a_session_that_cannot_start_leaves_no_folder(tmp_path,
                                                                                                   monkeypatch):
    """A full disk mid-play was a 24-line traceback (the OSError named no file, so the command line re-raised it)."""
    import errno
    from camera.pose import Pose
    from explorer import session as session_module
    level = load_level("meadow")
    session = session_module.SessionWriter(tmp_path, level, "reference", 0, 24.0, SIZE, "llvmpipe")
    session.frame(0.0, 0, Pose((0.0, 1.7, 0.0)), InputState(), 1.0, 100.0, "0" * 40)

    class FullDisk:
        closed = False

        def write(self, text):
            raise OSError(errno.ENOSPC, "No space left on device")
    good, session._file = session._file, FullDisk()
    with pytest.raises(OSError) as full:
        session.frame(0.04, 1, Pose((0.0, 1.7, 0.0)), InputState(), 1.0, 100.0, "0" * 40)
    assert full.value.filename == str(session.path / "trajectory.jsonl") and full.value.errno == errno.ENOSPC
    good.close()
    assert len(trajectory(session.path)) == 1  # the line before it stays

    def no_room(path, data):
        raise OSError(errno.ENOSPC, "No space left on device", str(path))
    monkeypatch.setattr(session_module, "_write_json", no_room)
    with pytest.raises(OSError):
        session_module.SessionWriter(tmp_path / "later", level, "reference", 0, 24.0, SIZE, "llvmpipe")
    assert list((tmp_path / "later").iterdir()) == []  # no empty session folder


def test_a_session_folder_removed_during_play_is_not_made_again_at_the_end(tmp_path, capsys):
    # Its close wrote session.json into a new folder of that name: a session with no log, refused by replay.
    import shutil
    from camera.pose import Pose
    from explorer.session import SessionWriter
    session = SessionWriter(tmp_path, load_level("meadow"), "reference", 0, 24.0, SIZE, "llvmpipe")
    session.frame(0.0, 0, Pose((0.0, 1.7, 0.0)), InputState(), 1.0, 100.0, "0" * 40)
    shutil.rmtree(session.path)
    assert session.close() is False and not session.path.exists()
    assert "the session folder was removed during play" in capsys.readouterr().err
