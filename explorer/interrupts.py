"""Stop requests by signal (Ctrl-C, SIGTERM): held for the program to act on where it is safe to stop.

A signal's default, an exception raised wherever Python happens to be, can land inside ffmpeg's start (where
Python loses it) or a GL call (where it can crash the process). The game and a video being written instead note
it and stop at their next frame. The same request often comes twice at once (`timeout` signals the process, then
its whole group): one within REPEAT_SECONDS of the first counts once; one later means the program is stuck, and
raises KeyboardInterrupt at once.
"""
from __future__ import annotations

import math
import signal
import threading
import time
from contextlib import contextmanager

REPEAT_SECONDS = 1.0


class HeldInterrupts:
    """A signal handler that counts stop requests (`count`) instead of raising, but for a repeated one."""

    def __init__(self):
        self.count, self._first = 0, -math.inf

    def __call__(self, signum, frame) -> None:
        now = time.monotonic()
        if self.count and now - self._first > REPEAT_SECONDS:
            raise KeyboardInterrupt
        if not self.count:
            self._first = now
        self.count += 1


@contextmanager
def held_interrupts():
    """Ctrl-C and SIGTERM wait until the block is done, then act as they would have: for a few steps that must
    not be parted (renaming files that refer to each other). Only the main thread can set handlers; elsewhere
    signals reach the main thread anyway, and nothing changes."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    held = []
    previous = {s: signal.signal(s, lambda signum, frame: held.append(signum)) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        yield
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler if handler is not None else signal.SIG_DFL)
        if held:
            signal.raise_signal(held[0])


def caused_by_interrupt(error: BaseException | None) -> bool:
    """Whether a Ctrl-C is behind `error`: one that lands while a library imports or looks for a program can come
    out as another exception raised from it (scipy's import, imageio-ffmpeg's search for ffmpeg)."""
    seen = set()
    while error is not None and id(error) not in seen:
        if isinstance(error, KeyboardInterrupt):
            return True
        seen.add(id(error))
        error = error.__cause__ or error.__context__
    return False
