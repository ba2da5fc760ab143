"""Stop requests by signal (Ctrl-C, SIGTERM, a closed terminal's SIGHUP): held for the program to act on where it
is safe to stop.

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
# Ctrl-C; `kill`, `timeout`, a service manager; the terminal the program runs in was closed
STOP_SIGNALS = tuple(getattr(signal, name) for name in ("SIGINT", "SIGTERM", "SIGHUP") if hasattr(signal, name))
TERMINATING_SIGNALS = tuple(s for s in STOP_SIGNALS if s != signal.SIGINT)  # those Python would just die of


def handle_stop_signals(handler, signals=STOP_SIGNALS) -> dict:
    """Sets `handler` for each of `signals` that is not ignored, and returns the handlers it replaced (for
    restore_handlers). An ignored one stays ignored: `nohup` ignores SIGHUP so that a training outlives its terminal,
    and a shell script's background job ignores Ctrl-C. Only the main thread can set handlers: elsewhere, nothing."""
    if threading.current_thread() is not threading.main_thread():
        return {}
    return {s: signal.signal(s, handler) for s in signals if signal.getsignal(s) is not signal.SIG_IGN}


def restore_handlers(previous: dict) -> None:
    for s, handler in previous.items():
        signal.signal(s, handler if handler is not None else signal.SIG_DFL)


class HeldInterrupts:
    """A signal handler that counts stop requests (`count`) instead of raising, but for a repeated one."""

    def __init__(self):
        self.count, self.signum, self._first = 0, None, -math.inf  # signum: the first one's

    def __call__(self, signum, frame) -> None:
        now = time.monotonic()
        if self.count and now - self._first > REPEAT_SECONDS:
            raise KeyboardInterrupt
        if not self.count:
            self._first, self.signum = now, signum
        self.count += 1


@contextmanager
def held_interrupts():
    """Stop signals wait until the block is done, then act as they would have: for a few steps that must not be
    parted (renaming files that refer to each other). Only the main thread can set handlers; elsewhere signals
    reach the main thread anyway, and nothing changes."""
    held = []
    previous = handle_stop_signals(lambda signum, frame: held.append(signum))
    try:
        yield
    finally:
        restore_handlers(previous)
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
