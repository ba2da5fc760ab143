"""Where the game's worlds run: a worker, on a thread or in a child process, that takes one job at a time.

The game loop hands the worker a `Job` (four poses, or a reset) and polls for its `Result` without ever waiting.
The worlds are created, stepped, snapshotted and closed by the worker, because a GL context (and a CUDA stream)
belongs to the thread that made it.

A model world runs in a child process (`Worker(..., process=True)`, what `explorer play` uses): moderngl holds the
GIL for the whole of each GL call, and the presenter's ~10 ms of them per frame on the main thread slowed a world
thread's step by about a quarter and dropped 7-21% of frames (docs/benchmarks.md). Tests and the reference world
may use a thread: the same code runs in both (`serve`).

Snapshots for rewind stay with the worlds: a model's state is its KV cache (~14 MB for `mini`), too big to send to
the game every step. A result carries a token for the state after it; a job names the tokens the game still holds
(`keep`), and the worker forgets the rest; a job may ask to `restore` one of them before stepping.
"""
from __future__ import annotations

import multiprocessing
import os
import pickle
import queue
import signal
import threading
import time
from dataclasses import dataclass
from typing import Callable

import numpy as np

from camera.controls import InputState, MotionState
from camera.pose import Pose
from explorer.interrupts import STOP_SIGNALS
from explorer.session import frame_sha1
from world.base import World
from world.level import Level

OTHER_WORLD = {"reference": "generated", "generated": "reference"}
CLOSE_SECONDS = 30.0  # a child process that has not closed its worlds by then is killed

# Opens a world of a kind: (kind, size or None) -> World. Called by the worker; picklable for a child process.
WorldFactory = Callable[[str, "tuple[int, int] | None"], World]


@dataclass
class Tick:
    """One integrated video frame: the input, when it was sampled, and the motion state (with the pose) after it."""
    sampled: float  # the game's play clock (time.perf_counter() less the time paused)
    input: InputState
    motion: MotionState


@dataclass
class Job:
    ticks: list[Tick]            # the poses to step through (one tick with `reset`: the pose to start at)
    step: int                    # the step number (0 for the reset)
    generation: int              # results of an older generation (before a rewind or restart) are dropped
    start: Pose                  # the pose before the first tick's (where a comparison world joins)
    reset: Level | None = None   # start the world on this level at ticks[0]'s pose
    restore: int | None = None   # the token of a state to restore before stepping
    split: bool = False          # also step the comparison world
    keep: tuple[int, ...] = ()   # the state tokens the game still holds; the worker forgets the others


@dataclass
class Result:
    job: Job
    frames: np.ndarray           # (n, H, W, 3) uint8
    sha1: list[str]              # per frame, of the native-size frame
    step_ms: float               # the whole job: the world's step and, in split view, the comparison world's
    state: int                   # the token of World.state() after the job
    side: np.ndarray | None      # the comparison world's frames
    note: str | None             # why the comparison world is not there


@dataclass
class Opened:
    size: tuple[int, int]
    device: str
    threads: int | None          # the CPU threads a model world computes with (None: not a model on a CPU)
    checkpoint: str | None
    checkpoint_sha256: str | None


class Worker:
    """The game's side: `submit` a job when not `busy`, `poll` for its result (never blocks), `close` at the end."""

    def __init__(self, open_world: WorldFactory, kind: str, size, seed: int, process: bool = False,
                 waiting: Callable[[], None] | None = None):
        """Opens the world (`waiting`, if given, is called about every 0.1 s until it has: a window kept alive)."""
        self.busy, self.process = False, process
        if process:  # spawn, not fork: the parent has a GL context and threads that a forked child must not inherit
            mp = multiprocessing.get_context("spawn")
            self._jobs, self._results = mp.Queue(maxsize=1), mp.Queue()
            self._runner = mp.Process(target=serve, args=(open_world, kind, size, seed, self._jobs, self._results),
                                      name="explorer-world", daemon=True)
        else:
            self._jobs, self._results = queue.Queue(maxsize=1), queue.Queue()
            self._runner = threading.Thread(target=serve, args=(open_world, kind, size, seed, self._jobs,
                                                                self._results), name="world", daemon=True)
        if process:
            _start_deaf_to_stop_signals(self._runner)
        else:
            self._runner.start()
        opened = self._get(block=True, waiting=waiting)  # the only wait: a world that cannot be opened fails here
        if isinstance(opened, BaseException):
            self._runner.join()
            raise opened
        self.size, self.device, self.threads = opened.size, opened.device, opened.threads
        self.checkpoint, self.checkpoint_sha256 = opened.checkpoint, opened.checkpoint_sha256

    def submit(self, job: Job) -> None:
        assert not self.busy, "one job at a time"
        self.busy, self.submitted = True, time.perf_counter()
        self._jobs.put_nowait(job)

    def poll(self) -> Result | None:
        result = self._get(block=False)
        if result is None:
            return None
        self.busy = False
        if isinstance(result, BaseException):
            raise result
        return result

    def close(self) -> None:
        """Wait for the job in progress, then close the worlds. Results that still come are read and dropped:
        a child process cannot end while its last result is unread in the pipe (it waited CLOSE_SECONDS)."""
        if self._runner.is_alive():
            self._jobs.put(None)
            deadline = time.monotonic() + CLOSE_SECONDS
            while self._runner.is_alive() and (not self.process or time.monotonic() < deadline):
                try:
                    self._results.get(timeout=0.05)
                except queue.Empty:
                    pass
        if self.process and self._runner.is_alive():
            self._runner.kill()
        self._runner.join()

    def _get(self, block: bool, waiting: Callable[[], None] | None = None):
        while True:
            try:
                return self._results.get(timeout=0.1) if block else self._results.get_nowait()
            except queue.Empty:
                if self._runner.is_alive():
                    if block:
                        if waiting is not None:
                            waiting()
                        continue
                    return None
                try:  # it may have put its last word just before it ended
                    return self._results.get(timeout=0.5)
                except queue.Empty:
                    code = getattr(self._runner, "exitcode", None)
                    return RuntimeError(f"the world's {'process' if self.process else 'thread'} ended without "
                                        f"answering" + (f" (exit code {code})" if code is not None else ""))


def _start_deaf_to_stop_signals(process) -> None:
    """Starts the world's process with the stop signals (SIGINT, SIGTERM, SIGHUP) blocked (a signal mask survives
    fork and exec). A Ctrl-C in a terminal signals the whole process group, and one during the child's first second
    (its imports, before `serve` can ignore it) killed it, ending the game with an error. The game decides what a
    Ctrl-C does; its own signals wait in its other threads or until the mask is restored here, so none is lost."""
    before = signal.pthread_sigmask(signal.SIG_BLOCK, STOP_SIGNALS)
    try:
        process.start()
    finally:
        signal.pthread_sigmask(signal.SIG_SETMASK, before)


def serve(open_world: WorldFactory, kind: str, size, seed: int, jobs, results) -> None:
    """The worker's body, on its thread or in its process: open the world, then do jobs until a None."""
    if multiprocessing.parent_process() is not None:
        threading.Thread(target=_exit_with_parent, args=(os.getppid(),), daemon=True).start()
        # Ctrl-C in a terminal signals the whole process group (as `timeout` and a closed terminal do): the game
        # decides (it finishes the step on screen and closes this worker); a child that died of it would end the
        # game with an error instead
        for stop in STOP_SIGNALS:
            signal.signal(stop, signal.SIG_IGN)
    try:
        host = WorldHost(open_world, kind, size, seed)
        results.put(host.opened)
    except BaseException as e:  # noqa: BLE001 - handed to the game, which raises it
        results.put(_sendable(e))
        return
    try:
        while (job := jobs.get()) is not None:
            try:
                results.put(host.do(job))
            except BaseException as e:  # noqa: BLE001
                results.put(_sendable(e))
    finally:
        host.close()


def _exit_with_parent(parent: int) -> None:
    """In the child: a game killed outright (SIGKILL) cannot close its worker, so the worker ends itself."""
    while os.getppid() == parent:
        time.sleep(0.25)
    os._exit(1)


def _sendable(e: BaseException) -> BaseException:
    """The exception itself if it survives pickling (a child process sends it), else a RuntimeError with its text."""
    try:
        pickle.loads(pickle.dumps(e))
        return e
    except Exception:  # noqa: BLE001
        return RuntimeError(f"{type(e).__name__}: {e}")


class WorldHost:
    """The world played, the comparison world of the split view (opened when first asked for), and the states
    kept for rewind."""

    def __init__(self, open_world: WorldFactory, kind: str, size, seed: int):
        self._open, self._kind, self._seed = open_world, kind, seed
        self.world = open_world(kind, size)
        threads = leave_a_core(self.world)
        # a world that loads a checkpoint says which (`checkpoint`, `checkpoint_sha256`), for the session log
        self.opened = Opened(tuple(self.world.size), device_name(self.world), threads,
                             getattr(self.world, "checkpoint", None),
                             getattr(self.world, "checkpoint_sha256", None))
        self.other, self.other_note, self.other_synced, self.level = None, None, False, None
        self.states: dict[int, object] = {}
        self.next_token = 0

    def do(self, job: Job) -> Result:
        start = time.perf_counter()
        poses = [t.motion.pose for t in job.ticks]
        if job.reset is not None:
            self.level = job.reset
            frames = self.world.reset(job.reset.at(poses[0]), self._seed)[None]
            self.other_synced = False
        else:
            if job.restore is not None:
                self.world.restore(self.states[job.restore])
                self.other_synced = False  # it joins again at the restored pose
            frames = self.world.step(poses)
        self.states = {t: s for t, s in self.states.items() if t in job.keep}
        token, self.next_token = self.next_token, self.next_token + 1
        self.states[token] = self.world.state()
        side = self._step_other(job, poses) if job.split else None
        self.other_synced = side is not None
        step_ms = (time.perf_counter() - start) * 1000  # the whole job, both worlds in split view: what play waits on
        return Result(job, frames, [frame_sha1(f) for f in frames], step_ms, token, side, self.other_note)

    def _step_other(self, job: Job, poses: list[Pose]) -> np.ndarray | None:
        """The comparison world, stepped with the same poses; it joins (reset at job.start) after any gap."""
        if self.other is None and self.other_note is None:
            kind = OTHER_WORLD[self._kind]
            try:
                self.other = self._open(kind, tuple(self.world.size))
                leave_a_core(self.other)  # the generated world beside a played reference world fought the UI too
            except Exception as e:  # noqa: BLE001 - shown on screen; play goes on without it
                self.other_note = f"the {kind} world is not available: {str(e).splitlines()[0]}"
        if self.other is None:
            return None
        if job.reset is not None:
            return self.other.reset(self.level.at(poses[0]), self._seed)[None]
        if not self.other_synced:
            self.other.reset(self.level.at(job.start), self._seed)
        return self.other.step(poses)

    def close(self) -> None:
        for world in (self.world, self.other):
            if world is not None and hasattr(world, "close"):
                world.close()


def leave_a_core(world) -> int | None:
    """A model on the CPU gets all cores but one for its intra-op threads, so that the UI (input, texture upload,
    llvmpipe's draw) keeps a core's share. Measured on the 2-core development machine with the presenter drawing
    1280x720 at 24 fps (random 256x144 `mini`, world on a thread): one thread, step p50 128 / p99 140 ms; two
    threads, p50 137 / p99 205 ms (alone, two threads are faster: 71 against 102 ms in `explorer bench`, but they
    fight the UI for the cores). torch's thread count is per process; on a thread, only the world computes with it.
    Returns the thread count (for the session log: a replay must compute with as many), or None for a world that is
    not a model on a CPU.
    """
    device = getattr(world, "device", None)
    if getattr(device, "type", None) == "cpu":
        import torch  # only a model world brings torch; the reference world does not need it
        cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
        torch.set_num_threads(max(1, cores - 1))
        return torch.get_num_threads()
    return None


def device_name(world) -> str:
    """What computes a world's frames: the torch device of a model, the GL renderer of a rasteriser."""
    if hasattr(world, "device"):
        return str(world.device)
    if hasattr(world, "ctx"):
        with world.ctx:  # current only while in use: another context may be current on this thread
            return world.ctx.info["GL_RENDERER"].split(" (")[0]  # 'llvmpipe (LLVM 15.0.6, 256 bits)' -> 'llvmpipe'
    return type(world).__name__
