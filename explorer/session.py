"""Session logs (DESIGN section 5): what a person played, enough to replay it frame for frame.

    sessions/20250101-120000-meadow/
        session.json       {"format": "explorer-session/1", "level": {"name", "path", "sha256", "image",
                            "image_sha256"}, "world", "checkpoint",
                            "checkpoint_sha256", "random_config", "seed", "fps", "size": [w, h], "device",
                            "threads", "controls", "display", "hold_at_rest", "program", "started", "ended"}
        trajectory.jsonl   one line per presented video frame:
                           {"frame", "t", "step", "pose", "input", "step_ms", "latency_ms", "frame_sha1"}
                           and a line per rewind: {"event": "rewind", "frame", "to_frame", "to_step"}
                           and per resume: {"event": "resume", "frame"}

`threads` is the number of CPU threads a model world computed with (null for the reference world and on a GPU):
a CPU's matmuls sum in an order that depends on it, so a replay computes with as many to reproduce the frames.
`checkpoint` and its SHA-256 are null for the reference world; `random_config` names the config of a generated
world with random weights (`explorer play --random-weights`), null otherwise. `controls` holds the settings that
turned the logged input into the logged poses (`camera.controls.ControlSettings`: mouse sensitivity, invert-y, ...;
absent in older sessions, which used the defaults). `display` says how the game showed it: {"reproject", "window",
"fullscreen"} (`explorer play`'s --no-reproject, --window, --fullscreen as started; absent in older sessions and in
sessions not played in a window); it changes nothing that is logged or replayed. The level's `sha256` is its file's when played (absent in older
sessions): a replay whose frames differ says when the file has changed since; so for its start picture, `image` and
`image_sha256` (null for a level without one; absent in older sessions). `hold_at_rest` is true where the
generated world kept its last frame while the camera was at rest (`camera.pose.at_rest`); older sessions,
without it, are replayed with the model run at rest too, as they were played. `program` is the explorer that
recorded it (`program_version`: "0.1.0", and in a git checkout its commit, "0.1.0 af58109", "+changes" where its
files differed from it; absent in older sessions): a replay whose frames differ names it beside this one's.

`frame` counts presented frames from 0 (the world's first frame, at the start pose); `t` is when it was presented,
in seconds of play from frame 0 (time paused in the menu counts neither here nor in `latency_ms`); `step` is the
world step that made it (0 for the first frame; every later step makes four frames, and a session only ever shows
whole steps, except where the process died). A rewind line, only ever after a step's last frame, says that the
world went back to its state after step `to_step` (whose last frame was `to_frame`) before the frame `frame`.
A resume line says that play went on before the frame `frame` after a wait the game did not pace: from the pause
menu (the frames asked for before it all shown under it), or once the split view's other world had opened (the
seconds that took). The pipeline refills there, as at the start and after a rewind (older sessions have none).
`frame_sha1` is the SHA-1 of the world's frame at its native size, (H, W, 3) uint8 bytes, before any upscaling.

Every line is flushed as it is written and `ended` is added to session.json only on a clean exit, so a crash
leaves every line before it readable. The reader tolerates a torn last line and names the file, line and field
of anything else that is wrong.
"""
from __future__ import annotations

import functools
import hashlib
import importlib.metadata
import json
import re
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from camera.controls import ControlSettings, InputState
from camera.errors import InputError, escape_controls, file_sha256, is_number, parse_json, read_text, write_replacing
from camera.paths import FPS_RANGE
from camera.pose import PITCH_LIMIT, Pose, check_pose_limits
from levels import LEVELS_DIR
from world.base import FRAMES_PER_STEP, MAX_SEED
from world.make import WORLDS

FORMAT = "explorer-session/1"
HEADER = "session.json"
TRAJECTORY = "trajectory.jsonl"


def frame_sha1(frame: np.ndarray) -> str:
    return hashlib.sha1(np.ascontiguousarray(frame, dtype=np.uint8).tobytes()).hexdigest()


def now_iso() -> str:
    return datetime.now(timezone.utc).isoformat(timespec="milliseconds")


@functools.lru_cache(maxsize=1)
def program_version() -> str:
    """This explorer's version, and where it runs from a git checkout, its commit ("0.1.0 af58109", with "+changes"
    if its tracked files differ from that commit): what recorded a session, for a replay whose frames differ."""
    try:
        version = importlib.metadata.version("explorer")
    except importlib.metadata.PackageNotFoundError:  # run from a clone that was not installed
        version = "unknown"
    root = Path(__file__).resolve().parent.parent
    if not (root / ".git").exists():
        return version
    try:
        def git(*args):
            return subprocess.run(["git", "-C", str(root), *args], capture_output=True, text=True, timeout=5,
                                  stdin=subprocess.DEVNULL)
        commit = git("rev-parse", "--short=7", "HEAD")
        changed = git("status", "--porcelain", "--untracked-files=no")
    except (OSError, subprocess.SubprocessError):  # no git here
        return version
    if commit.returncode != 0:
        return version
    return f"{version} {commit.stdout.strip()}" + ("+changes" if changed.stdout.strip() else "")


def _write_json(path: Path, data: dict) -> None:
    """Write-then-rename, so session.json is never seen half written."""
    write_replacing(path, lambda tmp: tmp.write_text(json.dumps(data, indent=2) + "\n"), field=None)


# --- writing -------------------------------------------------------------------------------------

def shipped_level_file(name: str) -> Path:
    """Where the shipped level called `name` is (whether or not there is one)."""
    return LEVELS_DIR / f"{name}.toml"


def session_level(level: dict) -> str | None:
    """Where the level a session was played in (session.json's `level`) is now, as load_level takes it: its file,
    or, moved or deleted, the shipped level of its name where that is the same file (its SHA-256 the recorded one;
    older sessions have none); None where there is neither (a level of one's own named after a shipped one was
    replayed in the shipped one, unsaid)."""
    if Path(level["path"]).is_file():
        return level["path"]
    shipped = shipped_level_file(level["name"])
    if shipped.is_file() and level.get("sha256") in (None, level_sha256(shipped)):
        return level["name"]
    return None


def level_sha256(path) -> str | None:
    """The level file's SHA-256 (a replay that differs can say the file changed since), or None if unreadable."""
    try:
        return file_sha256(path)
    except OSError:
        return None


class SessionWriter:
    def __init__(self, root, level, world: str, seed: int, fps: float, size: tuple[int, int], device: str,
                 checkpoint=None, checkpoint_sha256: str | None = None, random_config: str | None = None,
                 threads: int | None = None, controls: ControlSettings = ControlSettings(),
                 display: dict | None = None):
        """Create a new session folder under `root` and write its session.json (without `ended`)."""
        root = Path(root)
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1000):  # two sessions in the same second get -1, -2, ...
            self.path = root / (f"{stamp}-{level.name}" + (f"-{n}" if n else ""))
            try:
                self.path.mkdir(parents=True)
                break
            except FileExistsError:
                continue
        else:
            raise InputError(root, None, "cannot find a free session folder name")
        self.header = {
            "format": FORMAT, "level": {"name": level.name, "path": str(Path(level.source).resolve()),
                                        "sha256": level_sha256(level.source),
                                        "image": None if level.image is None else str(Path(level.image).resolve()),
                                        "image_sha256": None if level.image is None else level_sha256(level.image)},
            "world": world, "checkpoint": None if checkpoint is None else str(Path(checkpoint).resolve()),
            "checkpoint_sha256": checkpoint_sha256, "random_config": random_config, "seed": int(seed),
            "fps": float(fps), "size": [int(size[0]), int(size[1])], "device": device, "threads": threads,
            "controls": controls.to_dict(), "hold_at_rest": world == "generated" or None,
            "program": program_version(), "started": now_iso(),
        }
        if display is not None:
            self.header["display"] = display
        try:
            _write_json(self.path / HEADER, self.header)
            self._file = open(self.path / TRAJECTORY, "w", buffering=1, encoding="utf-8")  # line-buffered: per line
        except BaseException:
            shutil.rmtree(self.path, ignore_errors=True)  # a full disk: no empty session folder left behind
            raise
        self.frames = 0

    def frame(self, t: float, step: int, pose: Pose, inp: InputState, step_ms: float, latency_ms: float,
              sha1: str) -> None:
        """Log the next presented frame (numbered in order)."""
        self._line({"frame": self.frames, "t": round(t, 4), "step": step, "pose": pose.to_dict(),
                    "input": inp.to_dict(), "step_ms": round(step_ms, 3), "latency_ms": round(latency_ms, 3),
                    "frame_sha1": sha1})
        self.frames += 1

    def rewind(self, to_frame: int, to_step: int) -> None:
        self._line({"event": "rewind", "frame": self.frames, "to_frame": to_frame, "to_step": to_step})

    def resume(self) -> None:
        self._line({"event": "resume", "frame": self.frames})

    def close(self) -> bool:
        """A clean end: session.json gets `ended`. A session that never showed a frame (the world failed to start,
        or the player quit while it loaded) holds nothing to replay: its folder is removed, and False returned."""
        if self._file.closed:
            return self.path.exists()
        self._file.close()
        if self.frames == 0:
            shutil.rmtree(self.path, ignore_errors=True)
            return False
        if not self.path.is_dir():  # removed while it was played: a session.json alone would be a session refused
            print(f"explorer: warning: {self.path}: the session folder was removed during play; its log is gone",
                  file=sys.stderr)
            return False
        self.header["ended"] = now_iso()
        _write_json(self.path / HEADER, self.header)
        return True

    def _line(self, record: dict) -> None:
        try:
            self._file.write(json.dumps(record, separators=(",", ":")) + "\n")
        except OSError as e:  # a full disk: the error names the file (one line), and the lines before it stay
            raise OSError(e.errno, e.strerror, str(self.path / TRAJECTORY)) from None


# --- reading -------------------------------------------------------------------------------------

@dataclass
class FrameRecord:
    frame: int
    t: float
    step: int
    pose: Pose
    input: InputState
    step_ms: float
    latency_ms: float | None  # input sample -> present (absent in logs written by other tools)
    frame_sha1: str
    line: int  # 1-based line number in trajectory.jsonl, for messages


@dataclass
class Rewind:
    frame: int     # the first frame after the rewind
    to_frame: int
    to_step: int
    line: int


@dataclass
class Session:
    path: Path
    header: dict
    frames: list[FrameRecord]
    rewinds: list[Rewind]
    torn: bool  # the last line was cut short (the process died while writing it) and was left out
    resumes: list[int] = field(default_factory=list)  # the first frame after each resume (menu, split view opened)

    @property
    def ended(self) -> bool:
        return "ended" in self.header

    @property
    def size(self) -> tuple[int, int]:
        return tuple(self.header["size"])

    @property
    def controls(self) -> ControlSettings:
        """The settings the input was integrated with (checked when the session was read)."""
        return ControlSettings.from_dict(self.header.get("controls", {}), self.path / HEADER)


def read_session(path) -> Session:
    """Read and check a session folder. Raises InputError naming the file, line and field of a problem."""
    path = Path(path)
    if not path.is_dir():
        raise InputError(path, None, "is a file; give the session's folder (sessions/<time>-<level>)"
                         if path.exists() else "no such session folder")
    header = _read_header(path / HEADER)
    source = path / TRAJECTORY
    text = read_text(source, missing="missing")
    lines = text.split("\n")
    torn = False
    if lines[-1] == "":
        lines.pop()
    else:  # no newline at the end: the last line may have been cut while being written
        try:
            json.loads(lines[-1])
        except (ValueError, RecursionError):  # not JSON (a number of too many digits, "[[[..." too deep): cut
            lines.pop()
            torn = True
    frames: list[FrameRecord] = []
    rewinds: list[Rewind] = []
    resumes: list[int] = []
    for number, line in enumerate(lines, start=1):
        if not line.strip():  # a blank line (an editor's) says nothing
            continue
        where = f"{source}:{number}"
        record = parse_json(line, where, None)
        if not isinstance(record, dict):
            raise InputError(where, None, "must be a JSON object")
        if record.get("event") == "resume":
            resumes.append(_parse_resume(record, where, frames))
        elif "event" in record:
            rewinds.append(_parse_rewind(record, where, number, frames))
        else:
            frames.append(_parse_frame(record, where, number, frames, rewinds))
    if not frames:
        raise InputError(source, None, "no frames")
    _check_steps(frames, source)
    return Session(path, header, frames, rewinds, torn, resumes)


def _read_header(source: Path) -> dict:
    header = parse_json(read_text(source, missing="missing (is this a session folder?)"), source, None)
    if not isinstance(header, dict):
        raise InputError(source, None, "must be a JSON object")
    if header.get("format") != FORMAT:
        raise InputError(source, "format", f"expected {FORMAT!r}, got {header.get('format')!r}")
    level = header.get("level")
    if not (isinstance(level, dict) and isinstance(level.get("name"), str) and isinstance(level.get("path"), str)):
        raise InputError(source, "level", "must be {\"name\": ..., \"path\": ...}")
    for key in ("sha256", "image", "image_sha256"):  # older sessions have none
        if not (level.get(key) is None or isinstance(level[key], str)):
            raise InputError(source, f"level.{key}", "must be a string or null")
    if header.get("world") not in WORLDS:
        raise InputError(source, "world", f"must be one of {', '.join(WORLDS)}, got {header.get('world')!r}")
    size = header.get("size")
    if not (isinstance(size, list) and len(size) == 2 and all(_is_int(v) and 1 <= v <= 8192 for v in size)):
        raise InputError(source, "size", f"must be [width, height], each from 1 to 8192, got {size!r}")
    if not (_is_int(header.get("seed")) and 0 <= header["seed"] <= MAX_SEED):
        raise InputError(source, "seed", f"must be a whole number from 0 to {MAX_SEED}, got {header.get('seed')!r}")
    if not (is_number(header.get("fps")) and FPS_RANGE[0] <= header["fps"] <= FPS_RANGE[1]):
        raise InputError(source, "fps", f"must be a number from {FPS_RANGE[0]:g} to {FPS_RANGE[1]:g}, "
                         f"got {header.get('fps')!r}")
    _check_model_fields(header, source)
    if not (header.get("hold_at_rest") is None or isinstance(header["hold_at_rest"], bool)):
        raise InputError(source, "hold_at_rest", "must be true, false or null")
    for name in ("device", "started"):
        if not isinstance(header.get(name), str):
            raise InputError(source, name, "must be a string")
    if not (header.get("threads") is None or (_is_int(header["threads"]) and 1 <= header["threads"] <= 1024)):
        raise InputError(source, "threads", f"must be a whole number from 1 to 1024 or null, got {header['threads']!r}")
    ControlSettings.from_dict(header.get("controls", {}), source)
    if not isinstance(header.get("ended", ""), str):  # when it ended; absent if the process died
        raise InputError(source, "ended", "must be a string (absent if the session was cut off)")
    if not isinstance(header.get("display", {}), dict):
        raise InputError(source, "display", "must be an object")
    return header


def _check_model_fields(header: dict, source: Path) -> None:
    """checkpoint, checkpoint_sha256 and random_config: present, and saying one thing. The reference world has no
    model; the generated world has a checkpoint with its SHA-256, or random weights of a config."""
    for name in ("checkpoint", "checkpoint_sha256", "random_config"):
        if name not in header:
            raise InputError(source, name, "missing (null where there is none)")
        if not (header[name] is None or isinstance(header[name], str)):
            raise InputError(source, name, "must be a string or null")
    checkpoint, digest, config = header["checkpoint"], header["checkpoint_sha256"], header["random_config"]
    if header["world"] == "reference":
        for name in ("checkpoint", "checkpoint_sha256", "random_config"):
            if header[name] is not None:
                raise InputError(source, name, "must be null: the reference world has no model")
    elif (checkpoint is None) == (config is None):
        raise InputError(source, "checkpoint", "a generated world has a checkpoint or a random_config, not "
                         + ("both" if checkpoint else "neither"))
    elif (checkpoint is None) != (digest is None):
        raise InputError(source, "checkpoint_sha256", "must be given with a checkpoint, and only then")
    elif digest is not None and not re.fullmatch(r"[0-9a-f]{64}", digest):
        raise InputError(source, "checkpoint_sha256", "must be 64 lowercase hex digits")


def _parse_frame(r: dict, where: str, number: int, frames: list[FrameRecord], rewinds: list[Rewind]) -> FrameRecord:
    for name in ("frame", "t", "step", "pose", "input", "step_ms", "frame_sha1"):
        if name not in r:
            raise InputError(where, name, "missing")
    if not (_is_int(r["frame"]) and r["frame"] == len(frames)):
        raise InputError(where, "frame", f"expected {len(frames)}, got {r['frame']!r}")
    for name, limit in (("t", MAX_TIME), ("step_ms", MAX_TIME * 1e3), ("latency_ms", MAX_TIME * 1e3)):
        if not (is_number(r.get(name, 0.0)) and 0.0 <= r.get(name, 0.0) <= limit):  # latency_ms may be absent
            raise InputError(where, name, f"must be a number from 0 to {limit:g}, got {r.get(name)!r}")
    if frames and r["t"] < frames[-1].t:
        raise InputError(where, "t", f"must not go back in time ({r['t']} after {frames[-1].t})")
    if not (_is_int(r["step"]) and r["step"] >= 0):
        raise InputError(where, "step", f"must be a whole number 0 or more, got {r['step']!r}")
    if not (isinstance(r["frame_sha1"], str) and re.fullmatch(r"[0-9a-f]{40}", r["frame_sha1"])):
        raise InputError(where, "frame_sha1", "must be 40 hex digits")
    latency = r.get("latency_ms")
    return FrameRecord(r["frame"], float(r["t"]), r["step"], _parse_pose(r["pose"], where),
                       InputState.from_dict(r["input"], where), float(r["step_ms"]),
                       None if latency is None else float(latency), r["frame_sha1"], number)


def _parse_pose(d, where: str) -> Pose:
    if not isinstance(d, dict):
        raise InputError(where, "pose", "must be an object")
    position = d.get("position")
    if not (isinstance(position, list) and len(position) == 3 and all(is_number(v) for v in position)):
        raise InputError(where, "pose.position", f"must be [x, y, z], three finite numbers, got {position!r}")
    for name in ("yaw", "pitch", "roll", "fov"):
        if not is_number(d.get(name)):
            raise InputError(where, f"pose.{name}", f"must be a finite number, got {d.get(name)!r}")
    if abs(d["pitch"]) > PITCH_LIMIT:
        raise InputError(where, "pose.pitch", f"must be within {PITCH_LIMIT:g} degrees, got {d['pitch']!r}")
    check_pose_limits(where, "pose", position, d["yaw"], d["roll"], d["fov"])
    return Pose.from_dict(d)


def _parse_resume(r: dict, where: str, frames: list[FrameRecord]) -> int:
    if r.get("frame") != len(frames) or not _is_int(r.get("frame")):
        raise InputError(where, "frame", f"expected {len(frames)}, got {r.get('frame')!r}")
    return r["frame"]


def _parse_rewind(r: dict, where: str, number: int, frames: list[FrameRecord]) -> Rewind:
    if r["event"] != "rewind":
        raise InputError(where, "event", f"unknown event {r['event']!r} (known: rewind, resume)")
    for name in ("frame", "to_frame", "to_step"):
        if not _is_int(r.get(name)):
            raise InputError(where, name, f"must be a whole number, got {r.get(name)!r}")
    if r["frame"] != len(frames):
        raise InputError(where, "frame", f"expected {len(frames)}, got {r['frame']}")
    if (len(frames) - 1) % FRAMES_PER_STEP:  # the game rewinds at step boundaries only: 1 + 4k frames shown
        raise InputError(where, "frame", f"a rewind must follow the last frame of a step, not frame {len(frames) - 1}")
    targets = {f.frame: f for f in frames}
    target = targets.get(r["to_frame"])
    if target is None or target.step != r["to_step"] or (target.frame + 1 < len(frames)
                                                          and frames[target.frame + 1].step == target.step):
        raise InputError(where, "to_frame", f"frame {r['to_frame']} is not the last frame of step {r['to_step']}")
    return Rewind(r["frame"], r["to_frame"], r["to_step"], number)


def _check_steps(frames: list[FrameRecord], source: Path) -> None:
    """Frame 0 is step 0 on its own; every later step is FRAMES_PER_STEP consecutive frames with a step number
    larger than the one before; only the last step may be short (the session was cut off in the middle of it)."""
    if frames[0].step != 0:
        raise InputError(f"{source}:{frames[0].line}", "step", "the first frame must be step 0")
    i = 1
    while i < len(frames):
        step = frames[i].step
        if step <= frames[i - 1].step:
            raise InputError(f"{source}:{frames[i].line}", "step", f"must be larger than {frames[i - 1].step}")
        j = i
        while j < len(frames) and frames[j].step == step:
            j += 1
        if j - i > FRAMES_PER_STEP or (j - i < FRAMES_PER_STEP and j < len(frames)):
            raise InputError(f"{source}:{frames[i].line}", "step",
                             f"step {step} has {j - i} frames; a step has {FRAMES_PER_STEP}")
        i = j


def _is_int(v) -> bool:
    return isinstance(v, int) and not isinstance(v, bool)


MAX_TIME = 1e7  # seconds (16 weeks): a bound on t in a session, far beyond any


def summary(session: Session) -> dict:
    """How a session ran (docs/benchmarks.md): frames shown per second, frames dropped, latency and step time.

    Dropped: the ticks between two frames that showed no new one, netted over each stretch of play, so that a frame
    late by half a tick and the next one early by as much (the loop's timing jitter) count none, as in the HUD. The
    start, each rewind and each resume (from the menu, or once the split view's other world opened) are left out,
    since the pipeline refills."""
    frames, fps = session.frames, session.header["fps"]
    refills = {1} | {r.frame for r in session.rewinds} | set(session.resumes)
    stretches, start = [], frames[0]
    for a, b in zip(frames, frames[1:]):
        if b.frame in refills:
            stretches.append((start, a))
            start = b
    stretches.append((start, frames[-1]))
    dropped = sum(max(0, round((b.t - a.t) * fps) - (b.frame - a.frame)) for a, b in stretches)
    # nor does the step after a resume count in latency and step time: where the split view's other world opened,
    # it holds the seconds that took (a step p99 of a second in a session of 10 ms steps)
    opening = {frames[r].step for r in session.resumes if r < len(frames)}
    timed = [f for f in frames[1:] if f.step not in opening]
    latency = [f.latency_ms for f in timed if f.latency_ms is not None]
    steps = [f.step_ms for f in timed]
    seconds = frames[-1].t
    played = sum(b.t - a.t for a, b in stretches)  # the frame rate of play, the refills' waits left out too
    return {"world": session.header["world"], "size": "x".join(map(str, session.size)),
            "device": session.header["device"], "frames": len(frames), "seconds": round(seconds, 2),
            "fps": round(sum(b.frame - a.frame for a, b in stretches) / played, 2) if played else None,
            "dropped": int(dropped),
            "latency_ms_p50": _percentile(latency, 50), "latency_ms_p90": _percentile(latency, 90),
            "step_ms_p50": _percentile(steps, 50), "step_ms_p99": _percentile(steps, 99)}


def _percentile(values: list[float], q: float) -> float | None:
    return round(float(np.percentile(values, q)), 1) if values else None


if __name__ == "__main__":
    # python -m explorer.session SESSION [SESSION ...]: one JSON line of numbers per played session
    usage = ("usage: python -m explorer.session SESSION_FOLDER [...]   (one JSON line each: fps, dropped frames, "
             "latency, step time; with several, the line names its session)")
    if sys.argv[1:] in (["-h"], ["--help"]):
        print(usage)
        sys.exit(0)
    if len(sys.argv) < 2:
        print(usage, file=sys.stderr)
        sys.exit(2)
    failed = False
    for folder in sys.argv[1:]:  # a bad one is said and the others still go
        try:
            named = {"session": folder} if len(sys.argv) > 2 else {}
            print(json.dumps(named | summary(read_session(folder))), flush=True)
        except InputError as error:
            print(f"explorer.session: error: {error}", file=sys.stderr)
            failed = True
        except OSError as error:  # a name the system refuses (too long), a folder it cannot read
            print(f"explorer.session: error: {escape_controls(str(error.filename))}: {error.strerror}",
                  file=sys.stderr)
            failed = True
    sys.exit(2 if failed else 0)
