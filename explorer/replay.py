"""`explorer replay`: drive a world again with a session's recorded poses and seed, and compare or film it.

The world is stepped exactly as during play: the first frame from `reset` at frame 0's pose, then one `step` per
recorded step with that step's four poses, and at a rewind line a `restore` of the snapshot taken after the step
it names. Frames are hashed at the world's native size, as the client hashed them. A model on a CPU computes with
the session's thread count (a CPU's matmuls sum in an order that depends on it). A step that the session shows
only in part (the process died before presenting all four of its frames) is not replayed: its frames depend on
poses that were never recorded.
"""
from __future__ import annotations

import sys
from contextlib import contextmanager, nullcontext
from dataclasses import dataclass
from pathlib import Path

from camera.errors import InputError
from explorer.session import (Session, frame_sha1, level_sha256, program_version, read_session, session_level,
                              shipped_level_file)
from explorer.video import VideoWriter
from world.base import FRAMES_PER_STEP
from world.level import load_level
from world.make import make_world


@dataclass
class ReplayResult:
    frames: int                    # frames replayed (and checked, with check=True)
    total: int                     # frames in the session
    mismatch: int | None = None    # the first frame whose hash differs (check=True), or None
    kept: bool = False             # the video there before was kept: the replay, cut short, did not replace it


def session_checkpoint(session: Session, given=None) -> str | None:
    """The checkpoint to replay a generated world's session with: `given` (--checkpoint), else the file the session
    recorded, else, where that is gone (a session from another machine, or from a clone since deleted), the
    shipped model if it is the same file. None for the reference world and for random weights."""
    h = session.header
    if h["world"] != "generated" or h["random_config"] is not None:
        if given is not None:
            what = "the reference world" if h["world"] != "generated" else f"random weights ({h['random_config']})"
            raise InputError("command line", "--checkpoint", f"session {session.path} was played in {what}, "
                             "with no checkpoint")
        return None
    if given is not None:
        return str(given)
    recorded, digest = h["checkpoint"], h["checkpoint_sha256"]
    if recorded is not None and Path(recorded).is_file():
        return recorded
    from model.checkpoint import checkpoint_sha256, default_checkpoint_path
    shipped = default_checkpoint_path()
    if recorded is None or (digest is not None and shipped.is_file() and checkpoint_sha256(shipped) == digest):
        return str(shipped)
    raise InputError(session.path / "session.json", "checkpoint",
                     f"{recorded} is gone and the shipped model is another one; pass --checkpoint with the file the "
                     f"session was played with" + (f" (SHA-256 {digest})" if digest else ""))


def open_session_world(session: Session, device: str = "auto", checkpoint=None):
    """The world a session was played in (same kind, size, checkpoint: `session_checkpoint`), and its level."""
    h = session.header
    found = session_level(h["level"])  # a file that is there but bad names itself when loaded
    if found is None:
        shipped = "the shipped level of its name is another file" if shipped_level_file(h["level"]["name"]).is_file() \
            else f"no shipped level is named {h['level']['name']!r}"
        raise InputError(session.path / "session.json", "level", f"its level file {h['level']['path']} is gone and "
                         f"{shipped}; put the file back to replay the session")
    level = load_level(found)
    named = f"{session.path / 'session.json'}: random_config"
    if h["random_config"] is not None:
        from model.config import get_config
        get_config(h["random_config"], source=named)
    checkpoint = session_checkpoint(session, checkpoint)
    world = make_world(h["world"], size=session.size if h["world"] == "reference" else None,
                       checkpoint=checkpoint, device=device, level=level, random_config=h.get("random_config"),
                       random_source=named)
    if hasattr(world, "hold_at_rest"):  # as it was played: sessions from before the hold ran the model at rest
        world.hold_at_rest = bool(h.get("hold_at_rest"))
    digest = getattr(world, "checkpoint_sha256", None)
    if h["checkpoint_sha256"] is not None and digest != h["checkpoint_sha256"]:
        close_world(world)
        raise InputError(checkpoint, None, f"is not the checkpoint session {session.path} was played with "
                         f"(SHA-256 {digest}; the session's is {h['checkpoint_sha256']})")
    if tuple(world.size) != session.size:
        close_world(world)
        raise InputError(session.path / "session.json", "size",
                         f"the world renders {world.size[0]}x{world.size[1]}, the session has "
                         f"{session.size[0]}x{session.size[1]}")
    return world, level


def close_world(world) -> None:
    if hasattr(world, "close"):  # test stand-ins have nothing to close
        world.close()


@contextmanager
def session_threads(session: Session, world):
    """While in the block, torch computes with the CPU threads the session's model world computed with."""
    threads = session.header.get("threads")
    if threads is None or getattr(getattr(world, "device", None), "type", None) != "cpu":
        yield
        return
    import torch  # only a model world brings torch
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        yield
    finally:
        torch.set_num_threads(before)


def replay_frames(session: Session, world, level):
    """Yield (frame record, replayed frame (H, W, 3) uint8) in session order, for every whole step."""
    frames, rewinds = session.frames, {r.frame: r for r in session.rewinds}
    targets = {r.to_step for r in session.rewinds}
    snapshots = {}
    first = frames[0]
    yield first, world.reset(level.at(first.pose), session.header["seed"])
    if 0 in targets:
        snapshots[0] = world.state()
    i = 1
    while i + FRAMES_PER_STEP <= len(frames):
        if i in rewinds:
            world.restore(snapshots[rewinds[i].to_step])
        records = frames[i:i + FRAMES_PER_STEP]
        images = world.step([r.pose for r in records])
        if records[0].step in targets:
            snapshots[records[0].step] = world.state()
        yield from zip(records, images)
        i += FRAMES_PER_STEP


def replay(session: Session, check: bool = False, out=None, device: str = "auto", checkpoint=None) -> ReplayResult:
    """Replay a session; with `check`, stop at the first frame whose hash differs from the recording; with
    `out`, write the replayed frames (up to a difference) to a video at the native size."""
    if out is not None and (session.size[0] % 2 or session.size[1] % 2):  # said before the world opens
        raise InputError(session.path / "session.json", "size", f"{session.size[0]}x{session.size[1]} frames cannot "
                         "be an H.264 video, which needs even sizes (replay --check needs no video)")
    world, level = open_session_world(session, device, checkpoint)
    result = ReplayResult(frames=0, total=len(session.frames))
    existed = out is not None and Path(out).exists()
    try:
        with VideoWriter(out, session.size, fps=session.header["fps"]) if out is not None else nullcontext() \
                as writer, session_threads(session, world):
            for record, image in replay_frames(session, world, level):
                if check and frame_sha1(image) != record.frame_sha1:
                    result.mismatch = record.frame
                    if writer is not None and existed:  # a video cut short at the difference does not replace it
                        writer.abort()
                        result.kept = True
                    break
                if writer is not None:
                    writer.write(image)
                result.frames += 1
    finally:
        close_world(world)
    return result


def run_replay(path, check: bool, out, device: str, checkpoint=None) -> int:
    """The command: prints one line and returns the exit code (1 for a mismatch)."""
    session = read_session(path)
    result = replay(session, check=check, out=out, device=device, checkpoint=checkpoint)
    skipped = result.total - result.frames
    if result.mismatch is not None:
        record = session.frames[result.mismatch]
        level = session.header["level"]
        why = ""
        for what, field, digest in (("level file", "path", "sha256"), ("start image", "image", "image_sha256")):
            if not (level.get(field) and level.get(digest)):  # older sessions, a level without a picture
                continue
            now = level_sha256(level[field])  # None: gone, and so not what was replayed
            if now is not None and now != level[digest]:
                why += f"; its {what} {level[field]} has changed since"
        recorded_by = session.header.get("program")
        if isinstance(recorded_by, str) and recorded_by != program_version():
            why += f"; it was recorded by explorer {recorded_by}, and this is {program_version()}"
        if session.header["world"] == "generated" and "controls" not in session.header:  # (added 2026-12-05)
            why += ("; the session is from an explorer older than 2026-12-05, and one older than 2026-12-04 kept the "
                    "generated world's KV cache otherwise: its frames differ from where the cache window fills")
        written = "" if out is None else f"; no frame came before it, so {out} was not written" \
            if not result.frames else f"; kept the {out} there before (not replaced by a video cut short)" \
            if result.kept else f"; wrote {out} up to it"
        print(f"explorer: replay: {Path(path) / 'trajectory.jsonl'}:{record.line}: frame {result.mismatch} differs "
              f"from the recording (recorded on {session.header['device']}{why}){written}", file=sys.stderr)
        return 1
    what = "match the recording" if check else "replayed"
    ending = ("when the session ended" if session.ended else
              "where the log stops (the session has no end: it is still being played, or was cut off)")
    tail = f"; frames {result.frames}-{result.total - 1} not replayed: their step was cut short {ending}" \
        if skipped else ""
    written = f"; wrote {out}" if out is not None else ""
    print(f"{result.frames} of {result.total} frames {what}{tail}{written}")
    return 0
