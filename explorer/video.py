"""H.264 video files through imageio-ffmpeg (the ffmpeg binary ships in the wheel)."""
from __future__ import annotations

import logging
import os
import re
import shutil
import signal
import tempfile
import threading
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from camera.errors import InputError, check_output_path, partial_file
from explorer.interrupts import TERMINATING_SIGNALS, HeldInterrupts, handle_stop_signals, restore_handlers


def check_video_path(path) -> Path:
    """Refuses, before any work, a video path that could not be written (H.264 goes in .mp4 only)."""
    return check_output_path(path, (".mp4",))


class VideoWriter:
    """Writes RGB uint8 frames to an .mp4 (H.264, yuv420p). Written to a temporary file and renamed on close,
    so an interrupted render never leaves a truncated file where a good one was.

    While it is open, Ctrl-C (SIGINT) is held and acted on at the next frame: one that came while ffmpeg was being
    started was lost (the render went on and replaced the older file), and one inside a GL call (a world's shaders
    compiling) could crash the process. A second Ctrl-C, a second or more later, acts at once. A SIGTERM or SIGHUP
    is held while ffmpeg starts, for the same reason."""

    def __init__(self, path, size: tuple[int, int], fps: float = 24.0, quality: float = 8):
        self.path = check_video_path(path)
        self.size = tuple(size)
        if self.size[0] % 2 or self.size[1] % 2:
            raise InputError(self.path, "size", f"H.264 needs even width and height, got {self.size[0]}x{self.size[1]}")
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._tmp = partial_file(self.path)
        self._held = HeldInterrupts()
        on_main_thread = threading.current_thread() is threading.main_thread()  # where signal handlers run
        self._previous_sigint = signal.signal(signal.SIGINT, self._held) if on_main_thread else None
        # ffmpeg's own messages go to a log of its own (FFREPORT), not to the terminal: a failure is then one line of
        # ours that quotes its first, instead of ffmpeg's several lines and ours blaming the disk.
        handle, log = tempfile.mkstemp(prefix="explorer-ffmpeg-", suffix=".log")
        os.close(handle)
        self._log = Path(log)
        escaped = log.replace("\\", "\\\\").replace(":", "\\:")
        before = os.environ.get("FFREPORT")
        # A SIGTERM (or SIGHUP) as ffmpeg starts is held too, and acted on once it has: raised in its start, it was
        # lost there (the render went on and replaced the older file), as a Ctrl-C was
        stops = HeldInterrupts()
        previous_stops = handle_stop_signals(stops, TERMINATING_SIGNALS)
        try:
            # One encoder thread: x264 is deterministic either way, but this keeps a render from starving the game.
            self._gen = imageio_ffmpeg.write_frames(
                str(self._tmp), self.size, fps=fps, quality=quality, codec="libx264", macro_block_size=1,
                output_params=["-threads", "1"], ffmpeg_log_level="quiet")
            os.environ["FFREPORT"] = f"file={escaped}:level=16"  # errors; read by ffmpeg as it starts, just below
            try:
                self._gen.send(None)
            finally:
                if before is None:
                    del os.environ["FFREPORT"]
                else:
                    os.environ["FFREPORT"] = before
        except BaseException:
            self._restore_sigint()
            self._remove_partial()
            if self.interrupts:  # a terminal's Ctrl-C reached the ffmpeg being started too ("no ffmpeg found")
                raise KeyboardInterrupt from None
            raise
        finally:
            restore_handlers(previous_stops)
        if stops.count:
            self.abort()
            signal.raise_signal(stops.signum)  # to the handler before: the command line's exits with 128 + it
            raise SystemExit(128 + stops.signum)  # (a handler that returned)
        # imageio-ffmpeg keeps ffmpeg's process to itself; its exit status is the only sign that a
        # file it wrote is whole (an unwritable or full disk otherwise passes silently).
        self._ffmpeg = self._gen.gi_frame.f_locals.get("p")
        self.frames, self.aborted = 0, False

    def write(self, frames: np.ndarray) -> None:
        """frames: (H, W, 3) or (N, H, W, 3) uint8."""
        if self.interrupts:
            raise KeyboardInterrupt
        frames = np.asarray(frames)
        for frame in frames.reshape(-1, *frames.shape[-3:]):
            if frame.shape[1::-1] != self.size:
                raise ValueError(f"frame of size {frame.shape[1]}x{frame.shape[0]} for a {self.size} video")
            try:
                self._gen.send(np.ascontiguousarray(frame, dtype=np.uint8))
            except OSError as e:  # ffmpeg quit
                if self.interrupts:  # a terminal's Ctrl-C reaches ffmpeg too: it was the interrupt
                    raise KeyboardInterrupt from None
                self._gen.close()  # ffmpeg has exited, and its log is whole
                raise InputError(self.path, None, f"ffmpeg stopped writing the video ({self._why(e)})") from None
            self.frames += 1

    def close(self) -> None:
        """Finish the file and put it in place; if ffmpeg failed, or a Ctrl-C or SIGTERM came before the file was
        in place (while ffmpeg finishes, the last fraction of a second), raise and leave an older file as it was
        and no partial one."""
        if self.aborted:  # given up already (abort): nothing to put in place
            return
        if self.interrupts:  # after the last frame: the video is whole, but it was not wanted any more
            self.abort()
            raise KeyboardInterrupt
        if self.frames == 0:  # no video (ffmpeg's file would hold no stream): the file there before stays as it was
            self.abort()
            return
        try:
            self._gen.close()  # Ctrl-C is still held here
            status = getattr(self._ffmpeg, "returncode", 0)
            if status != 0 or not self._tmp.is_file() or self._tmp.stat().st_size == 0:
                kept = "; the file there before is unchanged" if self.path.exists() else ""
                said = self._said()
                raise InputError(self.path, None, f"ffmpeg failed ({said or f'exit status {status}'}){kept}")
            if self.interrupts:
                raise KeyboardInterrupt
            os.replace(self._tmp, self.path)
        finally:
            self._restore_sigint()
            self._remove_partial()

    def abort(self) -> None:
        """Give the video up: the file there before (if any) stays as it was, and no partial one is left."""
        self.aborted = True
        self._restore_sigint()
        quiet = logging.getLogger("imageio_ffmpeg")  # which warns of a video closed before its first frame
        level, quiet.level = quiet.level, logging.ERROR
        try:
            self._gen.close()
        finally:
            quiet.setLevel(level)
            self._remove_partial()

    @property
    def interrupts(self) -> int:
        """Ctrl-Cs held since the writer opened."""
        return self._held.count

    def _restore_sigint(self) -> None:
        if self._previous_sigint is not None:
            signal.signal(signal.SIGINT, self._previous_sigint)
            self._previous_sigint = None

    def _why(self, error: OSError) -> str:
        """What stopped ffmpeg: its broken pipe says nothing; its log, or else the disk under the file, do."""
        said = self._said()
        if said:
            return said
        try:
            if shutil.disk_usage(self.path.parent).free < 1 << 20:
                return "the disk is full"
        except OSError:
            pass
        return str(error).splitlines()[0]

    def _said(self) -> str | None:
        """ffmpeg's first error line (the cause: what follows tells of what it stopped), with the partial file's
        name put back to the video's."""
        try:
            lines = [line.strip() for line in self._log.read_text(errors="replace").splitlines()[2:] if line.strip()]
        except OSError:
            return None
        if not lines:
            return None
        first = re.sub(r"^\[[^]]*@ 0x[0-9a-f]+\]\s*", "", lines[0])  # "[out#0/mp4 @ 0x5635...] Error closing file"
        return first.replace(str(self._tmp), str(self.path))

    def _remove_partial(self) -> None:
        if self._tmp.is_file():
            self._tmp.unlink()
        self._log.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


def read_video(path) -> np.ndarray:
    """All frames of a video as (N, H, W, 3) uint8."""
    reader = imageio_ffmpeg.read_frames(str(path))
    meta = reader.__next__()
    w, h = meta["size"]
    frames = [np.frombuffer(buf, np.uint8).reshape(h, w, 3) for buf in reader]
    return np.stack(frames) if frames else np.zeros((0, h, w, 3), np.uint8)
