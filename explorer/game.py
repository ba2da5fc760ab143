"""`explorer play`: the game loop.

Every 1/24 s the loop does four things, in this order, and never waits for the world:

    events  pygame events: keys that toggle things (Esc, F1, F11, F12, R, Tab), the menu, the window
    action  the player's input for the next video frame, integrated by camera.controls into the next pose
    step    results from the world's worker go into the jitter buffer; once four poses are waiting and the
            worker is free, they go to it as the next step
    draw    the next frame from the jitter buffer is presented and logged (none ready: the last frame stays
            and the tick counts as dropped), turned to where the camera looks now (the mouse moves the view at
            once; the world's frames for the turn come a step later), with the HUD and menu over it

The world lives on a worker (`explorer.world_host.Worker`: a child process for `explorer play`, a thread in some
tests), with a queue of one job: while it computes four frames the loop keeps reading input and presenting at
24 fps. The poses of a step are exactly the input integrated up to the moment the step starts. The loop takes a
tick's input only when it is needed (`Pacer`): it counts, in ticks, how long the world takes to answer a job
(the slowest of its last few), and lets the input wait in the input source for as long as the step it would join
still reaches the screen in time without it. That keeps latency at its floor (three ticks to fill a step plus the
world's answer time) with no frame shown twice; when a step is slower than any recent one, its frames come late
once, and the pipeline then carries one tick more until the slow steps have passed. When the world is slower than
real time, the poses of a step are taken in the ticks just before the world is free for it (time slows down for
the camera instead of the camera running ahead of what is shown).

Time is measured on a play clock (`_clock`) that stops once the menu is open and the frames in flight are shown
under it (`_settle`), so a pause is neither dropped frames nor latency in the HUD and the session log.
Input-to-photon latency is measured per frame: from the
moment the input that produced its pose was sampled to the moment the frame was flipped to the screen. With four
frames per step it is at least three frames (the first pose of a step waits for the fourth) plus the step time plus
the frames queued before it.

Rewind (R) restores a snapshot from a ring that covers ~2 s and continues from there; it happens at the next step
boundary, so the session log always holds whole steps and replays exactly.
"""
from __future__ import annotations

import functools
import itertools
import math
import os
import re
import statistics
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import moderngl  # noqa: E402
import pygame  # noqa: E402

from camera.controls import ControlSettings, InputState, MotionState, mouse_look, step as control_step  # noqa: E402
from camera.errors import InputError, partial_file  # noqa: E402
from camera.pose import Pose, at_rest  # noqa: E402
from explorer.hud import FrameStats, Hud, Menu, TextPanel  # noqa: E402
from explorer.interrupts import HeldInterrupts, handle_stop_signals, restore_handlers  # noqa: E402
from explorer.keys import InputSource, PygameInput, controls_hint  # noqa: E402
from explorer.presenter import MARGIN, Presenter, overlap, overlay_rect, split_stacked  # noqa: E402
from explorer.session import SessionWriter  # noqa: E402
from explorer.world_host import OTHER_WORLD, Job, Result, Tick, Worker, WorldFactory  # noqa: E402
from world.base import FPS, FRAMES_PER_STEP  # noqa: E402
from world.level import NO_SCENE, Level, check_image  # noqa: E402
from world.scene import height_at  # noqa: E402

PLAY_SIZE = (256, 144)  # the reference world's frames: twice mini's 128x72, the largest native size a config may have
REWIND_SECONDS = 2.0
MESSAGE_SECONDS = 3.0
# Said under the first picture (keys.controls_hint): the HUD lists the client's keys, and a new player needs the
# walking ones first
HINT_SECONDS = 8.0
DROPPED_WHILE_OPENING = [pygame.KEYDOWN, pygame.MOUSEBUTTONDOWN, pygame.MOUSEWHEEL, pygame.MOUSEMOTION,
                         pygame.CONTROLLERBUTTONDOWN]  # what came while a world opened, but for the window's keys:
KEPT_WHILE_OPENING = (pygame.K_F1, pygame.K_F11, pygame.K_F12)  # HUD, fullscreen, screenshot (of the first frame)
SCREENSHOT_SAID = "screenshot: "  # the message that names a screenshot's file
SMALLEST_TEXT = 0.75  # an overlay's text is scaled down to fit a window at most this far; its lines wrap beyond
COLUMN_GAP = "   "  # between the columns of an overlay's line (the HUD's numbers, the hint's keys): where it wraps
COLUMN_GAP_AT = re.compile(r"(?<=\S)   (?=[A-Za-z])")  # before a word (not the padding of a number: "latency   150")
SPLIT_SAID = "split view: "  # the message that says the split view's panels
STALL_SECONDS = 1.0  # a job out this long (a model loading, the split view's other world opening) is said on screen
TURNAROUNDS = 24  # the world's answer time is the slowest of this many recent steps (4 s): a slow step now and
                 # then makes the pipeline carry one tick more for a while, not show frames twice every time
MENU_BUTTONS = {pygame.CONTROLLER_BUTTON_DPAD_UP: pygame.K_UP, pygame.CONTROLLER_BUTTON_DPAD_DOWN: pygame.K_DOWN,
                pygame.CONTROLLER_BUTTON_A: pygame.K_RETURN, pygame.CONTROLLER_BUTTON_B: pygame.K_ESCAPE}

@dataclass
class GameConfig:
    level: Level
    world: str = "reference"
    size: tuple[int, int] = PLAY_SIZE          # the reference world's frame size (the generated world has its own)
    seed: int = 0
    window: tuple[int, int] = (1280, 720)
    fullscreen: bool = False
    seconds: float | None = None               # quit by itself after this long (from the game's first frame; wall clock)
    sessions_dir: Path = Path("sessions")
    random_weights: str | None = None          # the generated world is an untrained model of this config: warn
    world_process: bool = False                # run the worlds in a child process (open_world must be picklable)
    controls: ControlSettings = field(default_factory=ControlSettings)  # mouse sensitivity, invert-y, ...
    reproject: bool = True                     # turn the picture with the mouse at once (Presenter.set_view)


# --- rewind ------------------------------------------------------------------------------------------

@dataclass
class Snapshot:
    frame: int            # the session frame it follows: the last frame of its step
    step: int
    played: int           # frames of camera motion behind it on its timeline: rest does not count (the worlds
                          # are static, nothing changes), and a rewind takes it back (the log's frame numbers go on)
    state: int            # the worker's token for World.state() after that step
    motion: MotionState   # the controls' state at that frame
    image: np.ndarray     # that frame, shown at once on rewinding
    side: np.ndarray | None = None  # the comparison world's frame beside it in split view


class SnapshotRing:
    """Snapshots at the step boundaries of the last ~REWIND_SECONDS."""

    def __init__(self, seconds: float = REWIND_SECONDS, fps: float = FPS):
        self.back = round(seconds * fps)  # frames
        self.ring: deque[Snapshot] = deque(maxlen=math.ceil(self.back / FRAMES_PER_STEP) + 2)

    def push(self, snapshot: Snapshot) -> None:
        """Keeps a snapshot that adds motion: at rest the ring would fill with the same moment and lose the walk."""
        if not self.ring or snapshot.played > self.ring[-1].played:
            self.ring.append(snapshot)

    def rewind(self) -> Snapshot | None:
        """The newest snapshot at least `back` frames of play before the newest one (the one on screen), else the
        oldest kept; None if none is older. The newer ones are dropped, since play continues from it. Pressed again,
        rewind goes on back from there, as far as the ring holds."""
        now = self.ring[-1].played
        target = next((s for s in reversed(self.ring) if s.played <= now - self.back), self.ring[0])
        if target.played >= now:
            return None
        while self.ring[-1] is not target:
            self.ring.pop()
        return target


# The world's states play holds at once: the live one, the ring's and those of a step's frames still buffered; each
# a copy of the generated world's KV cache, which its memory check counts (an edited window passed it, then ran out)
STATES_HELD = 1 + SnapshotRing().ring.maxlen + 2


# --- the window --------------------------------------------------------------------------------------

def screenshot_path(folder: Path, frame: int, taken: list[Path]) -> Path:
    """screenshot-FRAME.png, or -2, -3, ... after it for more of the same frame (two presses in the menu): none
    replaces another."""
    names = (f"screenshot-{frame:05d}.png" if n == 1 else f"screenshot-{frame:05d}-{n}.png" for n in itertools.count(1))
    return next(folder / name for name in names if folder / name not in taken)


NO_DISPLAY = ("cannot open a window ({why}); without a screen use `explorer render` (a camera path to video), "
              "`xvfb-run -a explorer play ...`, or `SDL_VIDEODRIVER=offscreen explorer play --seconds S` "
              "(plays unseen and logs the session)")


TITLE_BAR = 48  # pixels a window manager may take above a window (a 1280x720 window still fits a 1366x768 screen)


def fit_on_screen(size: tuple[int, int], screen: tuple[int, int]) -> tuple[int, int]:
    """A window `size` that fits on the screen, below a window manager's title bar (TITLE_BAR): one larger is
    scaled down to fit, keeping its shape, and said (it opened off-screen, the HUD and half the picture out of
    sight)."""
    usable = (screen[0], screen[1] - TITLE_BAR)
    scale = min(1.0, usable[0] / size[0], usable[1] / size[1]) if min(usable) > 0 else 1.0
    if scale == 1.0:
        return size
    fitted = (max(1, int(size[0] * scale)), max(1, int(size[1] * scale)))
    print(f"explorer: warning: --window {size[0]}x{size[1]} does not fit on the screen ({screen[0]}x{screen[1]}, "
          f"less {TITLE_BAR} px for a title bar); opening {fitted[0]}x{fitted[1]}", file=sys.stderr)
    return fitted


def open_window(size: tuple[int, int], fullscreen: bool, title: str) -> tuple[moderngl.Context, tuple[int, int]]:
    """A resizable OpenGL 3.3 window and a ModernGL context on it, and the window's size (`size`, or smaller to fit
    on the screen; F11 comes back to it). No display: InputError (one line, exit 2)."""
    requested = os.environ.get("SDL_VIDEODRIVER", "")
    if sys.platform.startswith("linux") and not requested and not (os.environ.get("DISPLAY")
                                                                    or os.environ.get("WAYLAND_DISPLAY")):
        raise InputError("display", None, NO_DISPLAY.format(why="no DISPLAY or WAYLAND_DISPLAY is set"))
    # GL through EGL on X11 too, as the worlds' headless contexts are: with libglvnd, a thread that ever had an EGL
    # context current cannot make a GLX context current (X error BadAccess, and Xlib ends the process), which
    # happens to any process that rendered headless before opening the window (tests, a replay).
    os.environ.setdefault("SDL_VIDEO_X11_FORCE_EGL", "1")
    os.environ["SDL_VIDEO_X11_WMCLASS"] = "explorer"  # pygame's import set it to the script's name: "cli.py" under -m
    try:
        pygame.display.init()
        driver = pygame.display.get_driver()
        if driver in ("offscreen", "dummy") and requested != driver:  # SDL's silent fallback: nothing to see
            raise pygame.error(f"SDL found no display and fell back to its {driver} driver")
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_MAJOR_VERSION, 3)
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_MINOR_VERSION, 3)
        pygame.display.gl_set_attribute(pygame.GL_CONTEXT_PROFILE_MASK, pygame.GL_CONTEXT_PROFILE_CORE)
        if driver not in ("offscreen", "dummy"):  # their "screen" is a made-up 1024x768
            size = fit_on_screen(size, pygame.display.get_desktop_sizes()[0])
        pygame.display.set_mode(size, pygame.OPENGL | pygame.DOUBLEBUF | pygame.RESIZABLE)
        if fullscreen:  # from a window of `size`, so that F11 comes back to it (not to the desktop's size)
            pygame.display.toggle_fullscreen()
    except pygame.error as e:
        pygame.display.quit()
        raise InputError("display", None, NO_DISPLAY.format(why=str(e))) from None
    pygame.display.set_caption(title)
    if pygame.display.get_driver() == "x11":
        XErrors.install()
    return moderngl.create_context(require=330), size


class XErrors:
    """Xlib's default error handler ends the process (exit 1, a session without its end) when the window is
    destroyed from outside (xkill, `xdotool windowclose`) and SDL then asks X about it. This handler notes the
    error instead (BadWindow: the window is gone), and the loop ends the game as if the window had been closed;
    any other error goes on to the handler before it (SDL's, then Xlib's), as it did."""
    BAD_WINDOW = 3
    window_gone = False
    _handler = _previous = None  # kept alive: Xlib calls them

    @classmethod
    def install(cls) -> None:
        """For a new window (SDL sets its own handler when its video starts): note BadWindow from now on."""
        import ctypes
        import ctypes.util
        name = ctypes.util.find_library("X11")
        if name is None:
            return
        handler_type = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.c_void_p, ctypes.c_void_p)
        if cls._handler is None:
            def on_error(display, event) -> int:
                # XErrorEvent: int type; Display *display; XID resourceid; unsigned long serial; uchar error_code
                code = ctypes.cast(event, ctypes.POINTER(ctypes.c_ubyte))[4 * ctypes.sizeof(ctypes.c_void_p)]
                if code == cls.BAD_WINDOW:
                    cls.window_gone = True
                    return 0
                return cls._previous(display, event) if cls._previous else 0
            cls._handler = handler_type(on_error)
        x11 = ctypes.CDLL(name)
        x11.XSetErrorHandler.argtypes, x11.XSetErrorHandler.restype = [handler_type], handler_type
        previous = x11.XSetErrorHandler(cls._handler)
        ours = ctypes.cast(cls._handler, ctypes.c_void_p).value
        if ctypes.cast(previous, ctypes.c_void_p).value != ours:  # not ourselves, from an earlier window
            cls._previous = previous
        cls.window_gone = False


def wrapped(panel, lines: list[str], width: int) -> list[str]:
    """`lines` broken at their column gaps (three spaces) where one is wider than `width` pixels: scaled down to fit
    a narrow window instead, the HUD's and the hint's letters were 3 to 5 px tall. A single column still too wide is
    scaled, as before. Asked every frame of the same few texts: measured once each (~70 us a time)."""
    return list(_wrapped(panel, tuple(lines), width))


@functools.lru_cache(maxsize=64)
def _wrapped(panel, lines: tuple[str, ...], width: int) -> tuple[str, ...]:
    out = []
    for line in lines:
        columns = COLUMN_GAP_AT.split(line)
        current = columns[0]
        for column in columns[1:]:
            if panel.size_of([current + COLUMN_GAP + column])[0] <= width:
                current += COLUMN_GAP + column
            else:
                out.append(current)
                current = column
        out.append(current)
    return tuple(out)


def clear_of(panels: list, above: tuple, window: tuple[int, int]) -> list:
    """The overlays (name, TextPanel, lines, anchor) with no lines for those that would overlap `above` (the menu)
    in this window: in a small one, the HUD and a message were drawn over the menu's items."""
    name, panel, lines, anchor = above
    if not lines:
        return panels
    rect = overlay_rect(anchor, panel.size_of(lines), window)
    return [(n, p, [] if ls and overlap(overlay_rect(a, p.size_of(ls), window), rect) else ls, a)
            for n, p, ls, a in panels]


class Ticker:
    """Wakes the loop every 1/fps s on a fixed schedule; after a long hold-up it starts a new schedule rather
    than rushing through the missed ticks."""

    def __init__(self, fps: float):
        self.period = 1.0 / fps
        self.next = time.perf_counter()

    def wait(self) -> int:
        """Sleep to the next tick; returns the ticks missed (the loop ran late by more than a tick: a huge window
        on a software renderer, a busy machine), which showed no frame and count as dropped."""
        self.next += self.period
        delay = self.next - time.perf_counter()
        if delay > 0:
            time.sleep(delay)
        elif delay < -self.period:
            self.next = time.perf_counter()
            return int(-delay / self.period)
        return 0


class Pacer:
    """When the loop takes a tick's input, so that latency stays at its floor and no frame is shown twice.

    It counts in ticks (video frames) and knows the world's turnaround: the ticks from a step's submission to the
    poll that receives it, the slowest of the last few. The pending poses go to the world when there are four of
    them and it is free, and come back a turnaround later; their first frame is due once the frames ahead of it
    (the jitter buffer's, and a step's worth while the world computes one) are shown. Letting the input wait a tick
    delays the step by a tick at most, and is worth it whenever the step is still on time then: every tick waited
    is a tick less of input-to-photon latency. Nor is a pose taken so early that it would wait for a busy world (a
    world slower than real time, judged by its typical answer, not its slowest): its step then starts as soon as
    the world is free, with the newest input.
    """

    def __init__(self, recent: int = TURNAROUNDS):
        self.turnarounds: deque[int] = deque(maxlen=recent)
        self.submitted_at = 0

    def submitted(self, tick: int) -> None:
        self.submitted_at = tick

    def received(self, tick: int) -> None:
        """A step's result came in at this tick's poll."""
        self.turnarounds.append(tick - self.submitted_at)

    def take_input(self, tick: int, pending: int, buffered: int, busy: bool) -> bool:
        """Whether to take this tick's input (before this tick's poll) with `pending` poses integrated and not yet
        sent, `buffered` frames in the jitter buffer and the world `busy` with a step."""
        if pending >= FRAMES_PER_STEP:
            return False
        elapsed = tick - self.submitted_at if busy else 0
        # Two estimates of the world's answer time, for two risks. Being on time takes the slowest recent answer (a
        # late frame shows). Holding input back for a world that is busy for longer takes the typical one: had
        # that used the slowest too, one slow step (the split view's other world opening) would make a world that
        # answers in two ticks look slower than real time, and every step for the next 24 would start a tick late
        # (4 frames in 5 ticks). Before the first step: real time; a step later than expected is expected at this
        # tick's poll at the soonest.
        turnaround = max(max(self.turnarounds, default=FRAMES_PER_STEP), elapsed)
        typical = max(statistics.median_low(self.turnarounds) if self.turnarounds else FRAMES_PER_STEP, elapsed)
        last_pose = FRAMES_PER_STEP - 1 - pending  # ticks from now until the step has its four poses
        if busy and typical - elapsed > last_pose:  # free only after the step could start without this tick
            return False
        busy_left = turnaround - elapsed if busy else 0  # 0: free by this tick's poll
        ahead = buffered + (FRAMES_PER_STEP if busy else 0)
        still_on_time = max(last_pose, busy_left - 1) + turnaround <= ahead - 1
        return not still_on_time


# --- the game ----------------------------------------------------------------------------------------

@dataclass
class Shown:
    """A frame in the jitter buffer."""
    frame: np.ndarray
    side: np.ndarray | None
    sha1: str
    tick: Tick
    step: int
    step_ms: float
    snapshot: int | None = None  # the token of the world's state after this frame's step, on its last frame only
    refill: bool = False  # the first after a wait not paced (the split view's other world opening): logged as a resume


class Game:
    def __init__(self, config: GameConfig, open_world: WorldFactory, inputs: InputSource | None = None):
        self.config, self.open_world = config, open_world
        self.inputs = inputs or PygameInput()
        level = config.level
        self.ground = (lambda x, z: float(height_at(level.scene, x, z))) if level.scene is not None else None
        self.sessions: list[Path] = []       # the session folders written, in order
        self.screenshots: list[Path] = []
        self.savers: list[threading.Thread] = []
        self.savers_said: list[str] = []  # by the screenshot savers' threads, for the loop to put on screen
        self.done = False
        # time in the menu is off the play clock, from when the frames asked for before it are shown (`_settle`)
        self.paused, self.paused_seconds, self.paused_since = False, 0.0, None
        self.worker: Worker | None = None
        self.first_shown: float | None = None  # the game's first frame on the wall clock: --seconds counts from it
        self.window = config.window  # the window's size as opened (run: smaller where it did not fit on the screen)

    # --- the loop ---
    def run(self) -> int:
        self.ctx, self.window = open_window(self.config.window, self.config.fullscreen,
                                            f"explorer - {self.config.level.title}")
        self.presenter = Presenter(self.ctx)
        self.hud_panel, self.menu_panel, self.message_panel = TextPanel(), TextPanel(size=28), TextPanel()
        self.warning_panel = TextPanel(size=24, color=(255, 110, 90))
        self.menu = Menu(self.menu_panel)
        self.show_hud, self.split, self.screenshots_requested = True, False, 0
        self.message: tuple[str, float] | None = None
        self.worker, self.tick = None, 0
        self.interrupts, self.stopped_by = HeldInterrupts(), None
        previous = handle_stop_signals(self._interrupted)  # Ctrl-C, `kill`, `timeout`, a closed terminal
        try:
            self._show_now(f"opening the {self.config.world} world...")
            self._begin(self.config.world)
            self._capture(True)
            ticker = Ticker(FPS)
            while not self.done:
                self.tick += 1
                for event in pygame.event.get():  # events
                    self._handle(event)
                if XErrors.window_gone:  # destroyed from outside: as if closed
                    self.done = True
                inp = self._action()              # action
                self._step(inp)                   # step
                self._draw(advance=not self.paused or bool(self.buffer))  # draw (under the menu: what is in flight)
                self._settle()
                if self.config.seconds is not None and self.first_shown is not None \
                        and time.perf_counter() - self.first_shown >= self.config.seconds:
                    self.done = True
                missed = ticker.wait()
                if missed and not self.paused and not self.filling and self.t0 is not None:
                    self.hud.dropped += missed
            self._end()
        finally:
            if self.worker is not None:
                self.worker.close()  # after a crash: no `ended` in the session, but the world is closed
            if getattr(self, "session", None) is not None and self.session.frames == 0:
                self._close_session()  # the world failed before its first frame: no empty session folder
            for saver in self.savers:
                saver.join()
            self._hear_savers()
            if not XErrors.window_gone:  # SDL would wait for X to tell it about the window it no longer has
                self.presenter.release()
                pygame.display.quit()
            restore_handlers(previous)
        return 0 if self.stopped_by is None else 128 + self.stopped_by  # as the shell reports a signal's end

    def _interrupted(self, signum, frame) -> None:
        """Ctrl-C in the terminal (or SIGTERM, or the terminal closed) quits as closing the window does: the step on
        screen is shown to its end and the session is closed. Another one a second later (the game stuck somewhere)
        interrupts at once; one within the second is the same request sent twice (`timeout` signals the game and its
        group)."""
        if self.done and not self.interrupts.count:  # quitting already (the window closed) and stuck
            raise KeyboardInterrupt
        self.interrupts(signum, frame)
        self.done = True
        if self.stopped_by is None:
            self.stopped_by = signum

    def _begin(self, kind: str, start: Pose | None = None) -> None:
        """Open a world of `kind` on a new worker, start a session, and ask for the first frame, seen from `start`
        (default: the level's start)."""
        c = self.config
        worker = Worker(self.open_world, kind, c.size if kind == "reference" else None, c.seed, process=c.world_process,
                        waiting=self._opening(kind))
        self._drop_presses_made_while_opening()
        try:
            session = SessionWriter(c.sessions_dir, c.level, kind, c.seed, FPS, worker.size, worker.device,
                                    worker.checkpoint, worker.checkpoint_sha256,
                                    random_config=c.random_weights if kind == "generated" else None,
                                    threads=worker.threads, controls=c.controls,
                                    display={"reproject": c.reproject, "window": list(self.window),
                                             "fullscreen": c.fullscreen})
        except BaseException:  # no session folder to log into: the world opened for it is closed, and self.kind
            worker.close()     # still names the world before, which a failed Restart or Switch world opens again
            raise
        self.worker, self.kind, self.session = worker, kind, session
        self.sessions.append(self.session.path)
        self.hud = Hud(kind, self.worker.device, FPS)
        start = c.level.start if start is None else start
        altitude = None if self.ground is None else start.position[1] - self.ground(start.position[0],
                                                                                     start.position[2])
        self.motion = MotionState.at(start, altitude)
        self.pending: list[Tick] = []        # integrated, not yet sent to the worker
        self.buffer: deque[Shown] = deque()  # back from the worker, not yet shown
        self.ring = SnapshotRing()
        self.side_seen = False                # the split view's other world has sent a frame on this worker
        self.played = -1                      # frames of motion on the screen's timeline after frame 0 (Snapshot)
        self.generation, self.next_step, self.restore = 0, 1, None
        self.t0: float | None = None          # when frame 0 was shown, on the play clock (the menu's time left out)
        self.logged_pose: Pose | None = None  # the camera of the last frame logged (after a rewind: its target's)
        self.screen_pose = None               # the pose of the frame on screen (this world's): see _view_pose
        self.screen_frame = 0                 # its number in the session (a screenshot's name)
        self.at_boundary = False              # the last frame shown was the last of its step
        self.filling = True                   # no step back yet since the start or a rewind: not a stall
        self.pacer = Pacer()
        self.rewind_requested = False
        self.worker.submit(Job([Tick(self._clock(), InputState(), self.motion)], 0, 0, start,
                               reset=c.level, split=self.split))  # the level as it is: Level.at places it
        self.pacer.submitted(self.tick)

    def _opening(self, kind: str):
        """What the loop does while a world opens (the loop itself waits: seconds, loading a model): the window is
        kept answering its window manager, and from STALL_SECONDS on the screen counts the seconds."""
        started, said = time.perf_counter(), [0]

        def waiting() -> None:
            if not pygame.display.get_init():  # no window (a test of the game's parts)
                return
            pygame.event.pump()
            seconds = int(time.perf_counter() - started)
            if seconds >= STALL_SECONDS and seconds != said[0]:
                said[0] = seconds
                self._show_now(f"opening the {kind} world... {seconds} s")
        return waiting

    def _drop_presses_made_while_opening(self) -> None:
        """Presses and pointer moves made while a world opened are dropped, but for the window's keys (F1, F11,
        F12): with no picture they acted unseen once it had (Esc, Down, Enter: a Quit chosen blind; each Restart or
        Switch world chosen in those seconds opened yet another world, ten in a row: over a minute without a
        picture), and the mouse's moves turned the new camera at once. Held keys still walk (they are read as held),
        key-ups and closing the window still count."""
        if not pygame.display.get_init():
            return
        kept = [e for e in pygame.event.get(eventtype=DROPPED_WHILE_OPENING)
                if e.type == pygame.KEYDOWN and e.key in KEPT_WHILE_OPENING]
        for event in kept:
            pygame.event.post(event)

    def _end(self) -> None:
        """Show the rest of the step on screen (so the log holds whole steps), close the session and the world."""
        ticker = Ticker(FPS)  # at the frame rate: drawn at once, the log gave them one time and latencies too low
        while self.buffer and not self.at_boundary:
            ticker.wait()
            self._draw(advance=True)
        self._close_session()
        self.worker.close()  # waits for the step in flight

    def _close_session(self) -> None:
        if not self.session.close() and self.session.path in self.sessions:  # no frame was shown: nothing to keep
            self.sessions.remove(self.session.path)

    def _clock(self) -> float:
        """Seconds of play: time.perf_counter() less the time spent paused (standing still while paused)."""
        now = time.perf_counter()
        return now - self.paused_seconds - (now - self.paused_since if self.paused_since is not None else 0.0)

    def _settle(self) -> None:
        """Stop the play clock once the menu is open and the world's frames for what was played before it are
        shown: the picture catches up with the camera under the menu (a turn in flight used to leave a dark band
        there, and its glide to play out after Resume)."""
        if self.paused and self.paused_since is None and not (self.buffer or self.pending or self.worker.busy):
            self.paused_since = time.perf_counter()

    # --- events ---
    def _handle(self, event) -> None:
        if not (self.paused and event.type == pygame.KEYDOWN):  # the menu's keys are not a tap of the camera's
            self.inputs.handle(event)
        if event.type == pygame.QUIT:
            self.done = True
        elif event.type == pygame.KEYDOWN:
            if event.key == pygame.K_F1:
                self.show_hud = not self.show_hud
            elif event.key == pygame.K_F11:
                pygame.display.toggle_fullscreen()
            elif event.key == pygame.K_F12:  # two presses within a frame: two files; before the world's first
                self.screenshots_requested += 1  # frame (pressed as it opened), of that frame
            elif self.paused:
                self._choose(self.menu.key(event.key))
            elif event.key == pygame.K_ESCAPE:
                self._pause(True)
            elif event.key == pygame.K_r:
                if self.ring.ring:
                    self.rewind_requested = True
                else:  # still starting: a press now must not fire seconds later
                    self._say("nothing to rewind to yet")
            elif event.key == pygame.K_TAB:
                self._toggle_split()
        elif event.type == pygame.WINDOWSIZECHANGED and self.message and self.message[0].startswith(SPLIT_SAID) \
                and self.split and self.side_seen:  # the panels may have turned (stacked, side by side): said anew
            self.message = (f"{SPLIT_SAID}{self._split_label()}", self.message[1])
        elif event.type in (pygame.WINDOWFOCUSLOST, pygame.WINDOWMINIMIZED) and not self.paused:
            self._pause(True)  # the player is elsewhere (alt-tab, another window): the walk waits in the menu
        elif event.type in (pygame.MOUSEBUTTONDOWN, pygame.MOUSEMOTION) and self.paused \
                and self.menu_panel.image is not None:
            image = self.menu_panel.image
            rect = overlay_rect("center", (image.shape[1], image.shape[0]), pygame.display.get_window_size())
            if event.type == pygame.MOUSEMOTION:
                self.menu.hover(event.pos, rect)
            else:
                self._choose(self.menu.click(event.pos, rect, event.button))
        elif event.type == pygame.CONTROLLERBUTTONDOWN:
            if event.button == pygame.CONTROLLER_BUTTON_START:
                self._pause(not self.paused)
            elif self.paused and event.button in MENU_BUTTONS:
                self._choose(self.menu.key(MENU_BUTTONS[event.button]))

    def _choose(self, item: str | None) -> None:
        if item == "Resume":
            self._pause(False)
        elif item == "Quit":
            self.done = True
        elif item == "Restart":
            self._restart(self.kind)
        elif item == "Switch world" and self._can_open(OTHER_WORLD[self.kind]):  # else the menu and session stay
            self._restart(OTHER_WORLD[self.kind], here=True)

    def _pause(self, on: bool, resume: bool = True) -> None:
        """Open or close the menu; closed with `resume`, play goes on (not so for Restart and Switch world)."""
        if on and not self.paused and self.t0 is not None:
            # what came in up to the Esc (a mouse turn, a key tapped) is the last input before the menu: taken now,
            # it goes to the world with the rest, where after Resume it played on and the camera glided. Not the
            # keyboard's state: by now it can hold the menu's own arrow key, pressed right after the Esc
            inp = self.inputs.take_pending()
            if inp != InputState():
                self._integrate(inp)
            # the camera stops where it is: no glide after Resume
            self.motion = MotionState.at(self.motion.pose, self.motion.altitude)
            # and the step being gathered is filled with frames at rest and sent, so that the picture under the menu
            # catches up with the camera (a turn's last frames left a dark band there for as long as it was open)
            while self.pending and len(self.pending) % FRAMES_PER_STEP:
                self.pending.append(Tick(self._clock(), InputState(), self.motion))
        elif self.paused and not on and self.paused_since is not None:
            self.paused_seconds += time.perf_counter() - self.paused_since
            if resume:  # everything was shown under the menu: the pipeline refills, as at the start
                self.session.resume()
                self.filling = True
        if not on:
            self.paused_since = None
        self.paused = on
        self.menu.open()
        self._capture(not on)

    def _capture(self, on: bool) -> None:
        """Grab and hide the mouse for looking around; released, it is for the menu (and the desktop)."""
        pygame.event.set_grab(on)
        pygame.mouse.set_visible(not on)

    def _restart(self, kind: str, here: bool = False) -> None:
        """A new session, in a world of `kind`, at the level's start or (`here`) where the camera is on screen; if
        that world cannot be opened, say so and stay."""
        start = self.motion.pose if here else self.config.level.start
        picture = self.config.level.at(start).image if kind == "generated" else None
        if picture is not None:  # its start picture, read again: one deleted since play began ended the game
            try:
                check_image(picture, self.config.level.source)
            except InputError as e:
                self._say(f"cannot open the {kind} world: {e.problem}")
                return
        self._pause(False, resume=False)  # the menu goes at once, not after the seconds the new world takes to open
        if self.menu_panel.render([]):
            self.presenter.set_overlay("menu", None)
        opening = f"opening the {kind} world..."
        # Said before _end, whose last frames show it and which waits for a step in flight (the split view's other
        # world opening: seconds, with the menu up as if the choice had not been taken)
        self._say(opening)
        self._show_now(opening)
        self._end()
        self.message = None  # from here the screen says it until the new world's first frame, and no longer
        # (`start`: where the camera is, not the frame on screen: a choice made as the menu opened came before the
        # last turn's frames did, and the new world opened without that turn)
        self._show_now(opening)  # the loop stops for the seconds a world takes to open
        try:
            self._begin(kind, start)
        except Exception as e:  # noqa: BLE001 - a world that cannot be opened must not end the game
            self._begin(self.kind, start)
            self._say(f"cannot open the {kind} world: {str(e).splitlines()[0]}")

    def _split_label(self) -> str:
        """The split view's worlds in the order shown: side by side, or one above the other (`panel_rects`)."""
        other = OTHER_WORLD[self.kind]
        window = pygame.display.get_window_size() if pygame.display.get_surface() is not None else None
        if window and self.worker is not None and split_stacked(self.worker.size, window):
            return f"{self.kind} above | {other} below"
        return f"{self.kind} | {other}"

    def _can_open(self, kind: str) -> bool:
        """Whether a world of `kind` can open on this level; if not, said on screen (the reference world draws the
        level's [scene], which a level of a start image alone lacks)."""
        if kind == "reference" and self.config.level.scene is None:
            self._say(NO_SCENE)
            return False
        return True

    def _toggle_split(self) -> None:
        if not self._can_open("reference"):  # one of its two worlds
            return
        self.split = not self.split
        other = OTHER_WORLD[self.kind]
        if self.split and not self.side_seen:  # the worker opens it first: a second or two with the picture still
            self._say(f"split view: opening the {other} world...")
        else:
            self._say(f"{SPLIT_SAID}{self._split_label()}" if self.split else "split view off")

    # --- action ---
    def _action(self) -> InputState | None:
        """This tick's input, or None when it must wait in the input source: paused, no first frame yet, or not
        needed yet (`Pacer`)."""
        if self.paused or self.t0 is None:
            return None
        take = self.pacer.take_input(self.tick, len(self.pending), len(self.buffer), self.worker.busy)
        return self.inputs.sample() if take else None

    # --- step ---
    def _step(self, inp: InputState | None) -> None:
        while (result := self.worker.poll()) is not None:
            if result.job.reset is None:  # a reset (first frame, model warm-up) is not a step
                self.pacer.received(self.tick)
            self._receive(result)
        if inp is not None:
            self._integrate(inp)
        if self.rewind_requested and self.at_boundary:
            self._rewind()
        if not self.worker.busy and len(self.pending) >= FRAMES_PER_STEP:
            ticks, self.pending = self.pending[:FRAMES_PER_STEP], self.pending[FRAMES_PER_STEP:]
            start = self.last_sent.motion.pose
            if self.split and not self.side_seen and self.t0 is not None:
                self.filling = True  # the worker opens the other world first: seconds, and no frame dropped by play
            self.worker.submit(Job(ticks, self.next_step, self.generation, start, restore=self.restore,
                                   split=self.split, keep=self._held_states()))
            self.pacer.submitted(self.tick)
            self.last_sent, self.next_step, self.restore = ticks[-1], self.next_step + 1, None

    def _integrate(self, inp: InputState) -> None:
        """The camera moved by one frame's input, its pose the next to send to the world."""
        self.motion, _ = control_step(self.motion, inp, self.config.controls, ground=self.ground)
        self.pending.append(Tick(self._clock(), inp, self.motion))

    def _held_states(self) -> tuple[int, ...]:
        """The tokens of the world states the game may still rewind to: the ring's and the buffered frames'."""
        return tuple(s.state for s in self.ring.ring) + tuple(s.snapshot for s in self.buffer
                                                              if s.snapshot is not None)

    def _receive(self, result: Result) -> None:
        job = result.job
        if job.generation != self.generation:
            return  # asked for before a rewind
        self.filling = job.reset is not None  # the start is not a stall until the first step is back, as in the log
        if job.reset is not None:
            self.last_sent = job.ticks[0]
        if job.split and result.side is None:
            self.split = False
            self._say(f"split view: {result.note}")
        opened = result.side is not None and not self.side_seen  # the seconds it took are no stall of play
        if opened:
            self.side_seen = True
            if self.split:  # and not if it was turned off while it opened
                self._say(f"{SPLIT_SAID}{self._split_label()}")
        n = len(result.frames)
        for i, (tick, frame, sha1) in enumerate(zip(job.ticks, result.frames, result.sha1)):
            side = result.side[i] if result.side is not None else None
            self.buffer.append(Shown(frame, side, sha1, tick, job.step, result.step_ms,
                                     snapshot=result.state if i == n - 1 else None,
                                     refill=opened and job.reset is None and i == 0))  # a reset refills anyway

    def _rewind(self) -> None:
        """Back ~2 s: the world to a snapshot (with the next job), the camera to its motion state, the screen to
        its frame; what was in flight is dropped."""
        self.rewind_requested = False
        now = self.ring.ring[-1].played
        target = self.ring.rewind()
        if target is None:
            self._say("nothing older to rewind to")
            return
        self.session.rewind(target.frame, target.step)
        self.played = target.played
        self.generation += 1
        self.pending, self.buffer = [], deque()
        # the camera lands at rest: the speed it had then would carry it on with no key held
        self.restore, self.motion = target.state, MotionState.at(target.motion.pose, target.motion.altitude)
        self.last_sent = Tick(self._clock(), InputState(), target.motion)
        # the frame on screen is the target's: at rest, the frames after it are no motion (R again went back by the
        # one frame that compared them with the frame before the rewind: "rewound 0.0 s")
        self.logged_pose = target.motion.pose
        self.filling = True
        self._present(target.image, target.side, target.motion.pose)
        self.screen_frame = target.frame
        back = (now - target.played) / FPS
        self._say(f"rewound {back:.1f} s" + ("" if now - target.played >= self.ring.back else " (as far back as kept)"))

    # --- draw ---
    def _draw(self, advance: bool) -> None:
        """Present the next frame of the jitter buffer (with `advance`; else, or if there is none, the last one
        stays), with the overlays."""
        shown = self.buffer.popleft() if self.buffer and advance else None
        if shown is not None:
            self._present(shown.frame, shown.side, shown.tick.motion.pose)
            self.screen_frame = self.session.frames  # the number _log gives it, below
        elif advance and not self.filling:
            self.hud.dropped += 1
        view = self._view_pose()
        if self.screenshots_requested and self.message and self.message[0].startswith(SCREENSHOT_SAID):
            self.message = None  # an earlier screenshot's file name is no part of this one (it named the other file)
        self._overlays(view or self.motion.pose)
        size = pygame.display.get_window_size()
        if view is not self.screen_pose:  # re-projecting: a ray of the camera now, in the camera of the frame on screen
            self.presenter.set_view(self.screen_pose.rotation().as_matrix().T @ view.rotation().as_matrix(), view.fov)
        self.presenter.draw(self.ctx.screen, size)
        while self.screenshots_requested and self.screen_pose is not None:
            self._screenshot(size, self.screen_frame)
        pygame.display.flip()
        if shown is not None:
            self._log(shown, self._clock())

    def _present(self, frame: np.ndarray, side: np.ndarray | None, pose) -> None:
        self.presenter.show([frame] if side is None or not self.split else [frame, side])
        self.screen_pose = pose

    def _view_pose(self):
        """The pose the screen shows: the frame on screen's, and when re-projecting, turned to where the camera
        looks now (with the mouse motion that no input has taken yet). The presenter turns the picture by the
        difference, so a mouse turn shows at once rather than ~200 ms later, when the world's frames for it come
        (and the turn left to show is back to none). None before a frame of this world is on screen."""
        if not self.config.reproject or self.screen_pose is None:
            return self.screen_pose
        pose = self.motion.pose
        yaw, pitch = mouse_look(pose.yaw, pose.pitch, self.inputs.pending_mouse(), self.config.controls)
        return replace(self.screen_pose, yaw=yaw, pitch=pitch, roll=pose.roll)

    def _log(self, shown: Shown, now: float) -> None:
        if self.t0 is None:
            self.t0 = now
            if self.first_shown is None:  # not again after Restart or Switch world: --seconds is the game's, menu too
                self.first_shown = time.perf_counter()
            if len(self.sessions) == 1 and self.message is None:  # the game's first picture: how to play it
                self._say(controls_hint(), seconds=HINT_SECONDS)
        latency_ms = (now - shown.tick.sampled) * 1000
        frame = self.session.frames
        if shown.refill:
            self.session.resume()
        if self.logged_pose is None or not at_rest(self.logged_pose, [shown.tick.motion.pose]):
            self.played += 1  # a frame of motion: what R takes back
        self.session.frame(now - self.t0, shown.step, shown.tick.motion.pose, shown.tick.input, shown.step_ms,
                           latency_ms, shown.sha1)
        self.hud.presented(FrameStats(now, shown.step_ms, latency_ms))
        self.logged_pose = shown.tick.motion.pose
        self.at_boundary = shown.snapshot is not None
        if self.at_boundary:
            self.ring.push(Snapshot(frame, shown.step, self.played, shown.snapshot, shown.tick.motion, shown.frame,
                                    shown.side if self.split else None))

    def _overlays(self, pose) -> None:
        """The HUD (at `pose`, what the screen shows), the menu, the message and the warning, re-rendered where their
        text changed."""
        self._hear_savers()
        now = time.perf_counter()
        if self.message is not None and now > self.message[1]:
            self.message = None
        message = [self.message[0]] if self.message else []
        if self.screen_pose is None and not self.paused:  # no picture of this world yet: the screen says why, above
            message = [f"opening the {self.kind} world..."] + message  # what was said (R pressed: nothing yet)
        elif self.worker.busy and now - self.worker.submitted > STALL_SECONDS:  # under what was said (F12's file)
            message = message + [f"waiting for the world... {now - self.worker.submitted:.0f} s"]
        split = self._split_label() if self.split and self.side_seen else None
        window = pygame.display.get_window_size()
        width = int((window[0] - 2 * MARGIN) / SMALLEST_TEXT)  # wrapped to fit at this scale (overlay_rect's)
        # refreshed on the wall clock: the play clock stands still under the menu, and the HUD with it showed a pose
        # from before the frames that were in flight
        hud = ("hud", self.hud_panel, wrapped(self.hud_panel, self.hud.lines(time.perf_counter(), pose, split)
                                              if self.show_hud else [], width), "top-left")
        warning = ("warning", self.warning_panel, wrapped(self.warning_panel, self._warning(), width), "top-right")
        message = wrapped(self.message_panel, message, width)
        menu = ("menu", self.menu_panel, self.menu.lines(OTHER_WORLD[self.kind]) if self.paused else [], "center")
        # In a small window what would lie under the menu waits until it closes (the menu is read), and the HUD
        # under the warning (an untrained model must be said)
        panels = clear_of([*clear_of([hud], warning, window), ("message", self.message_panel, message, "bottom"),
                           warning], menu, window) + [menu]
        for name, panel, lines, anchor in panels:
            if panel.render(lines):
                self.presenter.set_overlay(name, panel.image, anchor)

    def _warning(self) -> list[str]:
        """Always on screen while an untrained model is shown."""
        config = self.config.random_weights
        if config and (self.kind == "generated" or self.split):
            return [f"RANDOM WEIGHTS ({config}): the generated world is an untrained model"]
        return []

    def _say(self, text: str, seconds: float = MESSAGE_SECONDS) -> None:
        self.message = (text, time.perf_counter() + seconds)

    def _hear_savers(self) -> None:
        """What the screenshot savers said, said here on the loop's thread (a saver's own assignment could come
        between the loop's test of the message's age and its clearing, and be lost)."""
        while self.savers_said:
            self._say(self.savers_said.pop(0))

    def _show_now(self, text: str) -> None:
        """Put `text` on screen at once, over the last frame, before something that holds up the loop (the next
        draw takes it away)."""
        if self.message_panel.render([text]):
            self.presenter.set_overlay("message", self.message_panel.image, "bottom")
        self.presenter.draw(self.ctx.screen, pygame.display.get_window_size())
        pygame.display.flip()

    def _screenshot(self, size: tuple[int, int], frame: int) -> None:
        """Save what the window shows (HUD included) as a PNG in the session folder, named by the frame."""
        self.screenshots_requested -= 1
        image = self.presenter.read(self.ctx.screen, size)
        path = screenshot_path(self.session.path, frame, self.screenshots)
        surface = pygame.image.frombuffer(image.tobytes(), size, "RGB")

        def save() -> None:  # a full disk, or the folder gone: said on screen, as the saving was, and play goes on
            tmp = None
            try:  # through a file renamed into place: a kill part-way leaves no half a PNG under the name
                tmp = partial_file(path)
                pygame.image.save(surface, str(tmp))
                os.replace(tmp, path)
            except (pygame.error, OSError) as e:
                why = str(e).splitlines()
                self.savers_said.append(f"screenshot not saved: {why[0] if why else type(e).__name__}")
            finally:
                if tmp is not None:
                    tmp.unlink(missing_ok=True)
        saver = threading.Thread(target=save, name="screenshot")
        self._say(f"{SCREENSHOT_SAID}{path}")
        saver.start()  # PNG compression takes ~0.1 s: longer than a frame
        self.savers.append(saver)
        self.screenshots.append(path)
