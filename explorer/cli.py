"""The `explorer` command line (DESIGN section 6).

Each subcommand's handler imports what it needs when it runs, so `explorer --help` stays instant and a command that
does not touch the model never imports torch. Bad input raises camera.errors.InputError anywhere below; it is printed
here as one line and the process exits with code 2 (set EXPLORER_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import argparse
import os
import select
import signal
import sys
from pathlib import Path

from camera.controls import ControlSettings
from camera.errors import (InputError, check_writable, escape_controls, first_missing, refuse_overwriting,
                           remove_empty_folders, shell_word, unusable_name)
from explorer.interrupts import TERMINATING_SIGNALS, caused_by_interrupt, handle_stop_signals, restore_handlers
from model.training.options import STAGES
from world.base import MAX_SEED
from world.dataset import HELD_OUT_SEEDS


class Parser(argparse.ArgumentParser):
    """argparse, but a usage error is one line (and still exit code 2)."""

    def error(self, message):
        print(f"{self.prog}: error: {message} (see {self.prog} --help)", file=sys.stderr)
        sys.exit(2)


def parse_size(text: str) -> tuple[int, int]:
    """'256x144' -> (256, 144)."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT, two whole numbers such as 1280x720, got {text!r}") \
            from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"width and height must be between 16 and 8192, got {text!r}")
    return w, h


def parse_frame_size(text: str) -> tuple[int, int]:
    """A size of frames that may become video: parse_size's, both even (H.264's 4:2:0 halves them)."""
    w, h = parse_size(text)
    if w % 2 or h % 2:
        raise argparse.ArgumentTypeError(f"width and height must be even, got {text!r} (frames become H.264 video, "
                                         "which halves them: a played session too, with replay --out)")
    return w, h


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


def positive_float(text: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a number, got {text!r}") from None
    if not value > 0 or value == float("inf"):
        raise argparse.ArgumentTypeError(f"must be a positive number, got {text}")
    return value


def number_in(lo, hi, kind=float):
    """An argparse type: a number of `kind` from lo to hi (a bound that keeps the work finite)."""
    def parse(text: str):
        try:
            value = kind(text)
        except ValueError:
            what = "a whole number" if kind is int else "a number"
            raise argparse.ArgumentTypeError(f"expected {what}, got {text!r}") from None
        if not lo <= value <= hi:  # also refuses nan
            show = str if kind is int else "{:g}".format  # 9223372036854775807, not 9.22337e+18
            raise argparse.ArgumentTypeError(f"must be between {show(lo)} and {show(hi)}, got {text}")
        return value
    return parse


seed_int = number_in(0, MAX_SEED, int)
weight = number_in(0.0, 1e9)  # a loss weight, clip norm or noise level: finite and not negative


def folder(text: str) -> str:
    """A folder the command writes into: it may be missing (it is made), but neither it nor the nearest folder
    above it that exists may be a file, and that one must take new files (not /proc, not read-only)."""
    path = Path(text)
    unusable = unusable_name(path)
    if unusable is not None:
        raise argparse.ArgumentTypeError(InputError(path, None, unusable).problem)  # (cut to one short line)
    existing = next((p for p in (path, *path.parents) if p.exists()), Path("."))
    if not existing.is_dir():
        raise argparse.ArgumentTypeError(f"{existing} is a file, not a folder")
    try:
        check_writable(existing, path, None)
    except InputError as e:
        raise argparse.ArgumentTypeError(e.problem) from None
    return text


# --- handlers ------------------------------------------------------------------------------------

def cmd_levels(args) -> int:
    from world.level import list_levels
    levels = list_levels()
    name_width = max(len(level.name) for level in levels) + 2
    title_width = max(len(level.title) for level in levels) + 2
    for level in levels:
        scene = level.scene
        what = (f"{scene.sky.preset} sky, {scene.ground.material} ground, {scene.terrain.kind} terrain"
                if scene is not None else "start image only")
        print(f"{level.name:<{name_width}}{level.title:<{title_width}}{what}")
    return 0


def check_model_options(args) -> None:
    """--checkpoint and --random-weights (play, render): one or the other, and a config that exists."""
    from model.config import get_config
    if args.random_weights and args.checkpoint:
        raise InputError("command line", "--random-weights", "random weights or a checkpoint, not both")
    if args.random_weights:
        get_config(args.random_weights, source="command line: --random-weights")


def cmd_render(args) -> int:
    from explorer.render import render_path
    from explorer.video import check_video_path
    check_video_path(args.out)
    check_model_options(args)
    if args.world is None:  # the reference unless a model is named or there is no scene (play opens the shipped model)
        from world.level import load_level
        level = load_level(args.level)
        names_a_model = args.checkpoint or args.random_weights or args.seed is not None
        args.world = "generated" if names_a_model or level.scene is None else "reference"
        if args.world == "reference" and level.image is not None:  # a picture the user added, unused: said
            print(f"explorer: note: {escape_controls(str(level.source))}: rendering the level's scene; its start "
                  "image is the generated world's first frame (--world generated or compare)", file=sys.stderr)
    if args.world == "reference" and (args.checkpoint or args.random_weights or args.seed is not None
                                      or args.device != "auto"):  # --device cuda, with no GPU, passed unsaid
        option = "--checkpoint" if args.checkpoint else "--random-weights" if args.random_weights else "--seed" \
            if args.seed is not None else "--device"
        raise InputError("command line", option, "the reference world has no model; add --world generated or "
                         "--world compare")
    frames = render_path(level=args.level, path=args.path, out=args.out, world_kind=args.world, size=args.size,
                         checkpoint=args.checkpoint, device=args.device, seed=args.seed or 0,
                         random_config=args.random_weights)
    print(f"wrote {escape_controls(str(args.out))}: {frames} frames")  # as replay --out says
    return 0


def cmd_play(args) -> int:
    from explorer.game import PLAY_SIZE, STATES_HELD, Game, GameConfig
    from explorer.session import read_session, summary
    from world.level import load_level, require_scene
    from world.make import WorldOpener

    level = load_level(args.level)
    if args.world is None:  # the shipped model when there is one (or when asked for one), else the level's scene
        from model.checkpoint import default_checkpoint_path
        wants_model = args.checkpoint or args.random_weights or default_checkpoint_path().exists()
        args.world = "generated" if wants_model or level.scene is None else "reference"
    if args.world == "reference":
        require_scene(level)
    if args.world == "generated" and args.size is not None:
        raise InputError("command line", "--size", "the generated world renders at its checkpoint's size; --size is "
                         "for the reference world")
    if args.size is not None and args.size[0] * args.size[1] > 1920 * 1080:  # allowed, but a new player would wait
        print(f"explorer: warning: --size {args.size[0]}x{args.size[1]}: the reference world draws frames this "
              "large slowly (1920x1080 runs at about 11 fps on two CPU cores with software OpenGL; 8192x8192 showed "
              "one frame in 20 s); the window upscales smaller ones", file=sys.stderr)
    check_model_options(args)
    if args.checkpoint:  # fail before the window opens, not on the world's thread after
        from model.checkpoint import check_checkpoint_file
        check_checkpoint_file(args.checkpoint)  # a pipe: opening it waited for ever
        try:
            open(args.checkpoint, "rb").close()
        except OSError as e:
            raise InputError(args.checkpoint, None, f"cannot read the checkpoint: {e.strerror}") from None

    sessions_dir = Path(args.sessions_dir)
    made = first_missing(sessions_dir)
    try:  # fail before the window opens and the model loads, not after
        sessions_dir.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise InputError(sessions_dir, "--sessions-dir", f"cannot make the folder: {e.strerror or e}") from None
    check_writable(sessions_dir, sessions_dir, "--sessions-dir")

    open_world = WorldOpener(args.checkpoint, args.device, level, args.random_weights, caches=STATES_HELD)
    config = GameConfig(level, args.world, size=args.size or PLAY_SIZE, seed=args.seed, window=args.window,
                        fullscreen=args.fullscreen, seconds=args.seconds, sessions_dir=sessions_dir,
                        random_weights=args.random_weights, world_process=True,
                        controls=ControlSettings(mouse_sensitivity=args.mouse_sensitivity, invert_y=args.invert_y),
                        reproject=args.reproject)
    game = Game(config, open_world)
    try:
        code = game.run()
    finally:  # a world that could not open (a damaged model file) kept no session: the folders made for it go too
        if made is not None and not game.sessions:
            remove_empty_folders(sessions_dir, made)
    for path in game.sessions:  # the session's numbers (python -m explorer.session's), for whoever played unseen
        numbers = {k: "n/a" if v is None else v for k, v in summary(read_session(path)).items()}  # one frame: no rates
        print(f"{escape_controls(str(path))}: {numbers['frames']} frames in {numbers['seconds']} s "
              f"({numbers['fps']} fps), {numbers['dropped']} dropped, latency p50 {numbers['latency_ms_p50']} ms, "
              f"step p99 {numbers['step_ms_p99']} ms")
    from explorer.game import XErrors
    if XErrors.window_gone:  # destroyed from outside: SDL's exit would wait forever for X to confirm the window
        import multiprocessing.util  # gone (under a window manager), so the process ends here, its session closed
        multiprocessing.util._exit_function()  # what exit would do for the world's process and its queues
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(code)
    return code


def cmd_replay(args) -> int:
    from explorer.replay import run_replay
    from explorer.video import check_video_path
    if args.out is not None:
        check_video_path(args.out)
    return run_replay(args.session, check=args.check, out=args.out, device=args.device, checkpoint=args.checkpoint)


def cmd_path_from_session(args) -> int:
    from camera.errors import check_output_path
    from camera.paths import check_path, path_from_poses, save_path
    from explorer.replay import session_checkpoint
    from explorer.session import read_session, session_level

    out = check_output_path(args.out, (".toml",))
    session = read_session(args.session)
    if out.resolve().parent == session.path.resolve():
        raise InputError(out, "--out", "is inside the session folder; write the path somewhere else")
    # Nor over another file of the session's, whatever name leads to it (a link, "new/../"): a session.json whose
    # level is --out had its level replaced by the path (which the hint below then offered as the level).
    header = session.header
    refuse_overwriting(out, (("the session's session.json", session.path / "session.json"),
                             ("the session's trajectory.jsonl", session.path / "trajectory.jsonl"),
                             ("the session's level file", Path(header["level"]["path"]))),
                       "--out", "write the path somewhere else")
    poses = [record.pose for record in session.frames]
    if len(poses) < 2:
        raise InputError(args.session, None, "a camera path needs at least two frames; this session has one")
    path = path_from_poses(poses, fps=session.header["fps"], tolerance_m=args.tolerance_m,
                           tolerance_deg=args.tolerance_deg)
    try:  # a file that `render` would refuse is not written (a session may turn further than a path may)
        check_path(path, out)
    except InputError as e:
        raise InputError(args.session, None, f"cannot be a camera path: its {e.field} would be out of range "
                         f"({e.problem})") from None
    save_path(path, args.out)
    print(f"wrote {escape_controls(str(args.out))}: {len(path.keys)} {path.interpolation} keys for {len(poses)} "
          f"frames, within {args.tolerance_m:g} m and {args.tolerance_deg:g} degrees of every recorded pose")
    # A generated world's frames depend on its past: a rewind took it back where the path goes on, and so it shows
    # other frames from there; and the path's poses are within the tolerance of the played ones, not the same, so
    # its frames can drift a little from the session's (`replay --out` films exactly what was played).
    caveat = ""
    if session.header["world"] == "generated":
        differ = (f"differ from the session's after its first rewind, at frame {session.rewinds[0].frame}"
                  if session.rewinds else "follow the path's poses, not the played ones, and can differ a little "
                  "from the session's")
        caveat = (f" (the generated world's frames {differ}; `explorer replay {shell_word(str(args.session))} --out "
                  f"walk.mp4` films exactly what was played)")
    try:  # the model where it is now (the recorded file, or the shipped one if the same)
        model = session_checkpoint(session)
    except InputError:
        model, caveat = session.header["checkpoint"], caveat + (f" (its checkpoint {session.header['checkpoint']} "
                                                                "is gone: give the model it was played with)")
    # The hint offers only what render takes, checked as render checks it: a hand-edited session.json may hold an
    # odd size (H.264 halves frames) or a config no model has; and the level file may be gone, where no shipped
    # level has its name.
    if session_level(header["level"]) is None:
        caveat += f" (its level file {header['level']['path']} is gone: give the level it was played in)"
    if header["world"] != "generated":
        try:
            parse_frame_size("x".join(map(str, header["size"])))
        except argparse.ArgumentTypeError:
            even = [min(8192, max(16, v + v % 2)) for v in header["size"]]
            caveat += (f" (--size {even[0]}x{even[1]}: render takes even sizes from 16 to 8192, not the session's "
                       f"{header['size'][0]}x{header['size'][1]})")
            header = header | {"size": even}
    elif header["random_config"] is not None:
        from model.config import CONFIGS, get_config
        try:
            get_config(header["random_config"])
        except InputError:
            caveat += (f" (session.json's random_config {header['random_config']!r} is no config render knows: add "
                       f"--random-weights with one of {', '.join(CONFIGS)})")
            header = header | {"random_config": None}
    print("to film the same camera path: explorer render " + " ".join(render_options(header, args.out, model))
          + caveat)
    return 0


def render_options(header: dict, path, model: str | None) -> list[str]:
    """`explorer render`'s options for the world a session was played in (its level, world, seed, and `model`:
    its checkpoint where the file is now): a path alone would be rendered with seed 0 and the shipped model."""
    from model.checkpoint import default_checkpoint_path
    from explorer.session import session_level
    level = session_level(header["level"]) or header["level"]["name"]
    options = ["--level", level, "--path", str(path), "--out", "walk.mp4", "--world", header["world"]]
    if header["world"] == "generated":
        if header.get("random_config"):
            options += ["--random-weights", header["random_config"]]
        elif model and Path(model).resolve() != default_checkpoint_path().resolve():
            options += ["--checkpoint", model]
        if header["seed"]:
            options += ["--seed", str(header["seed"])]
    else:  # at the size it was played at, not render's default
        options += ["--size", "x".join(map(str, header["size"]))]
    return [shell_word(option) for option in options]


def cmd_data(args) -> int:
    from world.dataset import DataSpec, write_dataset
    spec = DataSpec(clips=args.clips, size=args.size, frames=args.frames, seed=args.seed, split=args.split,
                    clips_per_scene=args.clips_per_scene, clips_per_shard=args.clips_per_shard)
    write_dataset(args.out, spec)
    return 0


def cmd_train(args) -> int:
    from model.training.options import TrainOptions
    from model.training.train import train
    # only the options given are in args (argument_default=SUPPRESS): a resumed stage checks them against its own
    given = {("run" if k == "run_dir" else k): v for k, v in vars(args).items() if k not in ("command", "run")}
    train(TrainOptions(**given), explicit=set(given))
    return 0


def cmd_bench(args) -> int:
    from explorer.bench import main as bench_main
    return bench_main(args)


def cmd_ship(args) -> int:
    """Writes a trained checkpoint in bf16 as the shipped default model (or to --out): half the size, same
    metadata plus the source file's sha256, the VAE in a linked file beside it (OUT-vae.safetensors) unless
    --single-file. The modules load back in float32 (model/checkpoint.py)."""
    import json

    import torch

    from camera.embedding import CameraScaling
    from camera.errors import check_output_path
    from model.checkpoint import (LINKED, RESERVED, checkpoint_sha256, default_checkpoint_path, is_part,
                                  load_checkpoint, save_checkpoint, stored_format, warn_if_untrained)
    from model.training.state import FORMAT as STATE_FORMAT
    out = check_output_path(args.out if args.out else default_checkpoint_path(), (".safetensors",))
    linked = None if args.single_file else {"vae": out.with_name(f"{out.stem}-vae.safetensors")}
    writes = [out] + list((linked or {}).values())
    for path in writes[1:]:
        check_output_path(path, (".safetensors",), field="--out's linked VAE file")
    default = default_checkpoint_path()
    shipped_vae = default.with_name(f"{default.stem}-vae.safetensors")  # what the shipped model links to
    if out.resolve() != default.resolve() and any(path.resolve() == shipped_vae.resolve() for path in writes):
        raise InputError(out, "--out", f"would write over {shipped_vae}, the VAE file the shipped model links to "
                         "(it would no longer load); choose another --out")
    loaded = load_checkpoint(args.checkpoint)
    CameraScaling.from_dict(loaded.camera_scaling, source=args.checkpoint)  # refuse what play would refuse
    if loaded.stage == "vae" and out.resolve() == default.resolve():  # as the default (by any path), play: noise
        raise InputError(args.checkpoint, "stage", "is from the vae stage, whose generator is untrained; ship a "
                         "checkpoint from a later stage as the default (or write this one elsewhere with --out)")
    warn_if_untrained(args.checkpoint, loaded.stage)
    source = Path(args.checkpoint)
    links = json.loads(loaded.metadata.get(LINKED, "{}"))
    for path in writes:  # overwriting what is shipped would destroy it (the fp32 original, or a VAE it links to)
        refuse_overwriting(path, [("the checkpoint being shipped", source)]
                           + [("a file it links to", source.parent / entry["file"]) for entry in links.values()],
                           "--out", "choose another --out")
    if is_part(out):  # another ship's VAE part: the checkpoint linking it would no longer load
        raise InputError(out, "--out", "is the linked VAE part of a checkpoint (one that links to it would no "
                         "longer load); choose another --out")
    if stored_format(out) == STATE_FORMAT:
        raise InputError(out, "--out", "is a training stage's state (its run could no longer be resumed); choose "
                         "another --out")
    for path in writes[1:]:  # OUT-vae.safetensors: an earlier ship's VAE part may go, anything else stays
        if path.exists() and not is_part(path):
            raise InputError(out, "--out", f"would overwrite {path}, which is not the VAE part of an earlier ship "
                             "(a checkpoint of its own?); choose another --out or move that file")
    replaced = shipped_description(out)  # said once the new one is in place: a model of one's own was replaced unsaid
    extra = {k: v for k, v in loaded.metadata.items() if k not in RESERVED + (LINKED,)}
    extra["source_sha256"] = checkpoint_sha256(args.checkpoint)
    save_checkpoint(out, loaded.config, loaded.vae.float(), loaded.generator.float(), loaded.camera_scaling,
                    loaded.stage, extra=extra, storage_dtype=torch.bfloat16, linked=linked)
    for path in [out] + list((linked or {}).values()):
        print(f"{escape_controls(str(path))}: {path.stat().st_size / 2**20:.1f} MiB")
    print(f"{escape_controls(str(out))}: {loaded.config.name} ({loaded.stage}), sha256 {checkpoint_sha256(out)}"
          + (f"; replaced {replaced}" if replaced else ""))
    return 0


def shipped_description(path) -> str | None:
    """'mini (long), sha256 …' of the checkpoint at `path`, from its header; None where there is none."""
    from model.checkpoint import FORMAT, checkpoint_sha256, stored_config_name, stored_metadata
    metadata = stored_metadata(path)
    if metadata.get("format") != FORMAT:
        return None
    name = stored_config_name(path) or "?"
    return f"{escape_controls(name)} ({escape_controls(metadata.get('stage', '?'))}), sha256 {checkpoint_sha256(path)}"


def cmd_eval(args) -> int:
    from explorer.eval import main as eval_main
    return eval_main(args)


# --- parser --------------------------------------------------------------------------------------

DEVICE_HELP = "where the model runs (default auto: the GPU when CUDA has one, else the CPU)"


def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="explorer", description="Walk through a world that a neural network invents frame by frame.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("levels", help="list the shipped levels")
    p.set_defaults(run=cmd_levels)

    p = sub.add_parser("play", help="walk through a level in a window (WASD + mouse; Esc for the menu)",
                       description="Walk through a level. WASD / arrows move, the mouse looks, Space / C up and "
                       "down, Shift faster, Q / E roll; a gamepad's left stick moves and right stick looks. "
                       "Esc: menu (resume, restart, switch world, quit). F1 HUD, F11 fullscreen, F12 screenshot, "
                       "R rewind 2 s, Tab split view (the world played and the other, side by side). Every session is "
                       "logged for replay.")
    p.add_argument("--level", default="meadow", help="a shipped level's name or a level .toml (default: meadow)")
    p.add_argument("--world", choices=["reference", "generated"], default=None,
                   help="the procedural reference scene, or the neural generator (default: generated when a "
                   "trained model ships, --checkpoint or --random-weights is given, or the level has only an image; "
                   "else reference)")
    p.add_argument("--checkpoint", default=None, help="generated world: a .safetensors checkpoint (default: shipped)")
    p.add_argument("--random-weights", metavar="CONFIG", default=None,
                   help="the generated world (played, in split view or switched to) is an untrained model of this "
                   "config (mini, tiny, ...) instead of a checkpoint: for tests and benchmarks; the screen says so")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=seed_int, default=0, help="generated world: the noise seed (default 0)")
    p.add_argument("--size", type=parse_frame_size, default=None,
                   help="reference world only (--world reference): the frames' WIDTHxHEIGHT, even numbers (default "
                   "256x144); they are upscaled to the window. The generated world renders at its model's size "
                   "(128x72 for mini)")
    p.add_argument("--window", type=parse_size, default=(1280, 720), help="window WIDTHxHEIGHT (default 1280x720)")
    p.add_argument("--fullscreen", action="store_true", help="start in fullscreen (F11 toggles)")
    p.add_argument("--mouse-sensitivity", metavar="DEG", type=number_in(0.001, 10.0),
                   default=ControlSettings.mouse_sensitivity,
                   help="degrees the camera turns per pixel of mouse motion, from 0.001 to 10 (default "
                   f"{ControlSettings.mouse_sensitivity})")
    p.add_argument("--invert-y", action="store_true", help="mouse / right stick down looks up")
    p.add_argument("--no-reproject", dest="reproject", action="store_false",
                   help="show the world's frames as they are: by default the picture turns with the mouse at once "
                   "(the frame on screen re-projected), before the world's frames for the turn come")
    p.add_argument("--seconds", type=positive_float, default=None,
                   help="quit by itself this many seconds after the first frame, time in the menu and the "
                   "sessions after Restart or Switch world included (demos, tests)")
    p.add_argument("--sessions-dir", type=folder, default="sessions",
                   help="where session logs go, one folder per session (default: ./sessions)")
    p.set_defaults(run=cmd_play)

    p = sub.add_parser("replay", help="replay a recorded session; --check compares every frame",
                       description="Drive the session's world again with its recorded poses and seed.")
    p.add_argument("session", help="a session folder (sessions/TIME-LEVEL)")
    p.add_argument("--check", action="store_true",
                   help="compare every frame's hash with the recording; exit 1 at the first difference, naming it")
    p.add_argument("--out", default=None, help="write the replayed frames to this video (.mp4, native size; with "
                   "--check, up to a frame that differs, where it replaces no video there before)")
    p.add_argument("--checkpoint", default=None,
                   help="the model the session was played with, where the file it recorded is gone (default: that "
                   "file, else the shipped model if it is the same one)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help=DEVICE_HELP)
    p.set_defaults(run=cmd_replay)

    p = sub.add_parser("path", help="camera path tools")
    path_sub = p.add_subparsers(dest="path_command", required=True, metavar="TOOL")
    q = path_sub.add_parser("from-session", help="turn a played session into an editable camera path (.toml)",
                            description="Reduce a session's poses to keyframes. Guarantee: the path, played back at "
                            "the session's fps, is within --tolerance-m metres of every recorded position and "
                            "within --tolerance-deg degrees of every recorded orientation and fov.")
    q.add_argument("session", help="a session folder")
    q.add_argument("--out", required=True, help="the camera path to write (.toml)")
    q.add_argument("--tolerance-m", type=number_in(1e-6, 1e3), default=0.05, help="position tolerance (default 0.05 m)")
    q.add_argument("--tolerance-deg", type=number_in(1e-6, 180.0), default=0.5,
                   help="orientation and fov tolerance (default 0.5 degrees)")
    q.set_defaults(run=cmd_path_from_session)

    p = sub.add_parser("render", help="render a scripted camera path to an .mp4, headless",
                       description="Film a camera path (keyframes, or a RealEstate10K camera file) through a level, "
                       "without a window: the reference world (the procedural scene), the generated world (the "
                       "model, from the reference's first frame), or both side by side. The same command gives the "
                       "same frames; an existing --out is replaced only once the new video is whole.")
    p.add_argument("--level", required=True, help="a shipped level's name or a path to a level .toml")
    p.add_argument("--path", required=True, help="a camera path (.toml keyframes or a RealEstate10K .txt)")
    p.add_argument("--out", required=True, help="the video to write (.mp4, H.264)")
    p.add_argument("--world", choices=["reference", "generated", "compare"], default=None,
                   help="the procedural reference scene, the neural generator, or compare: the generator (left) "
                   "next to the reference (right) on the same poses (default: reference; generated for a level "
                   "with only a start image, or when --checkpoint, --random-weights or --seed names a model)")
    p.add_argument("--size", type=parse_frame_size, default=None,
                   help="output WIDTHxHEIGHT, even numbers, per panel with compare (default: 640x360 for reference, "
                   "the model's native size for generated and compare; larger sizes are upscaled)")
    p.add_argument("--checkpoint", default=None, help="generated world: a .safetensors checkpoint (default: shipped)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help=DEVICE_HELP)
    p.add_argument("--seed", type=seed_int, default=None, help="generated world: the noise seed (default 0)")
    p.add_argument("--random-weights", metavar="CONFIG", default=None,
                   help="generated world: an untrained model of this config (tiny, mini, apt2-8b) instead of a "
                   "checkpoint, to try the machinery")
    p.set_defaults(run=cmd_render)

    p = sub.add_parser("data", help="render training clips from random procedural scenes into shards",
                       description="Render training clips: random scenes from the whole scene vocabulary, a camera "
                       "walked through each as a person plays. Clips go in shards of .npy arrays (frames, poses, "
                       "intrinsics, scene seeds) with a manifest; the same command resumes an interrupted run and "
                       "renders damaged shards again. Scene seeds 0-9999 are held out for eval (--split heldout).")
    p.add_argument("--out", type=folder, required=True,
                   help="the dataset folder (resumes if it already holds part of this dataset)")
    p.add_argument("--clips", type=positive_int, required=True,
                   help="how many clips in total (on a folder that holds some: more adds to them; fewer is refused)")
    p.add_argument("--size", type=parse_size, default=(128, 72), help="WIDTHxHEIGHT (default 128x72, mini's native size)")
    p.add_argument("--frames", type=positive_int, default=33,
                   help="frames per clip, 1 + 4k: 5, 9, 13, ... (default 33: the first frame and 8 latent steps)")
    p.add_argument("--seed", type=seed_int, default=0, help="the dataset's seed (default 0)")
    p.add_argument("--split", choices=["train", "heldout"], default="train",
                   help="train scenes, or the held-out scene seeds kept for evaluation (default train)")
    p.add_argument("--clips-per-scene", type=positive_int, default=8,
                   help="clips walked in each random scene before the next is drawn (default 8)")
    p.add_argument("--clips-per-shard", type=positive_int, default=64,
                   help="clips per shard folder: the unit of resuming, held in memory while rendered (default 64)")
    p.set_defaults(run=cmd_data)
    p = sub.add_parser("bench", help="steady-state speed of the generated world, with baselines in the same run",
                       description="Time the generated world's steady-state stream (fps, step p50/p99, decode, "
                       "memory) and, in the same run, the no-KV-cache and 4-step AR-diffusion baselines (on a GPU "
                       "also the step without CUDA graphs); docs/benchmarks.md records the numbers.")
    p.add_argument("--config", default=None, help="model config: tiny, mini, apt2-8b (default: --checkpoint's, "
                   "else mini)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help=DEVICE_HELP)
    p.add_argument("--seconds", type=number_in(0.1, 86400.0), default=60.0,
                   help="seconds of video to stream (default 60)")
    p.add_argument("--checkpoint", default=None,
                   help="weights to time (default: the shipped checkpoint if it is of --config, else random weights)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    # (more than a few per core only fight over it: 1024 on two cores ran for minutes per step)
    p.add_argument("--threads", type=number_in(1, 4 * (os.cpu_count() or 1), int), default=None,
                   help="torch intra-op threads on the CPU, at most 4 per core (default: one per core)")
    p.add_argument("--window", type=number_in(1, 1024, int), default=None,
                   help="override the generator's window, for timing with random weights (e.g. 30 for mini); "
                        "the window is filled before --seconds are timed, so a long one adds its steps to the run")
    p.add_argument("--baseline-steps", type=positive_int, default=24,
                   help="timed steps of each baseline (default 24; fewer for a large model on a short lease)")
    p.set_defaults(run=cmd_bench)

    p = sub.add_parser("train", help="one stage of the APT2 training recipe (resumable; docs/training.md)",
                       description="Train one stage into runs/RUN/STAGE/: model.safetensors (a checkpoint play, "
                       "render and eval load), state.safetensors (for --resume), metrics.jsonl, loss.png, samples/. "
                       "Each stage starts from the previous stage's model unless --init is given. Under torchrun "
                       "the stage runs on every process with FSDP2.", argument_default=argparse.SUPPRESS)
    p.add_argument("stage", metavar="STAGE", choices=list(STAGES), help="vae, pretrain, diffusion, consistency, "
                   "adversarial or long, in that order; decoder (the VAE's decoder against a frame discriminator, "
                   "the latents unchanged) after vae or on a finished model (--init); gate (the warp gate alone, "
                   "on a finished model)")
    p.add_argument("--data", required=True, help="a dataset folder made by `explorer data` at the config's size")
    p.add_argument("--run", type=folder, required=True, dest="run_dir", metavar="RUN",
                   help="the run folder (e.g. runs/mini)")
    p.add_argument("--config", help="model config: tiny, mini, apt2-8b (default: the one the run trains, else mini)")
    p.add_argument("--steps", type=positive_int, help="the stage's total optimiser steps (default per stage)")
    p.add_argument("--batch", type=positive_int, help="clips per step over all processes (default per stage)")
    p.add_argument("--lr", type=positive_float, help="learning rate (default per stage)")
    p.add_argument("--resume", action="store_true", help="continue the stage from its last save")
    p.add_argument("--init", help="start from this checkpoint instead of the previous stage's model")
    p.add_argument("--diffusion", help="consistency, adversarial, long: the diffusion model (teacher, discriminator "
                   "init); default: the run's diffusion stage")
    p.add_argument("--seed", type=seed_int, help="seed of the initialisation, data order and noise (default 0)")
    p.add_argument("--warmup", type=int, help="learning-rate warm-up steps (default per stage)")
    p.add_argument("--grad-clip", type=weight, help="max gradient norm, 0 for none (default per stage)")
    p.add_argument("--precision", choices=["bf16", "fp32"],
                   help="autocast dtype (default bf16; vae and decoder fp32: docs/training.md says why)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], help=DEVICE_HELP)
    p.add_argument("--val-clips", type=positive_int, help="hold out the scenes of the last N clips (default 32)")
    p.add_argument("--log-every", type=positive_int, help="steps between metric lines (default 10)")
    p.add_argument("--save-every", type=positive_int,
                   help="steps between saves, validation and sample videos (default per stage: about 30 min)")
    p.add_argument("--vae-frames", type=positive_int,
                   help="vae, decoder: frames per training window, 1 + 4k (default 9)")
    p.add_argument("--kl-weight", type=weight, help="vae: KL weight (default 1e-4)")
    p.add_argument("--grad-weight", type=weight, help="vae, decoder: image-gradient loss weight (default 1)")
    p.add_argument("--colour-weight", type=weight, help="vae, decoder: weight of the MSE of 8x8 patch colours "
                   "(default 0)")
    p.add_argument("--adv-weight", type=weight, help="decoder: the adversarial term's pull on the decoded pixels, "
                   "relative to the reconstruction terms' (default 0.5)")
    p.add_argument("--shift", type=positive_float,
                   help="pretrain, diffusion, consistency: time shift s (default: the paper's 24 scaled to the latent "
                   "size; 4.2 for mini)")
    p.add_argument("--cd-steps", type=positive_int, help="consistency: fixed distillation steps (default 32)")
    p.add_argument("--history-noise", type=weight, help="diffusion, consistency: noise the recycled latents with a "
                   "std drawn from U(0, this) per clip, against drift at play (default 0, the paper's teacher forcing)")
    p.add_argument("--sample-steps", type=positive_int,
                   help="pretrain, diffusion: Euler steps of the sample videos (default 8)")
    p.add_argument("--r1-lambda", type=weight,
                   help="adversarial, long, decoder: lambda of approximated R1/R2 (default 1000; decoder 100)")
    p.add_argument("--r1-sigma", type=positive_float,
                   help="adversarial, long, decoder: sigma of R1/R2 (default 0.1; decoder 0.01)")
    p.add_argument("--disc-lr-scale", type=positive_float, help="adversarial, long, decoder: the discriminator's "
                   "learning rate over --lr (default 10; decoder 4; the paper shares one rate)")
    p.add_argument("--warp-gate", action="store_true", help="generator stages: give the generator a warp gate "
                   "(grown at zero from a model without one; docs/design.md); the gate stage always has one")
    p.add_argument("--grad-checkpointing", action="store_true", help="pretrain, diffusion, consistency: recompute "
                   "each block's activations in the backward pass instead of keeping them (less memory for large "
                   "configs, more compute; the same weights; may change on --resume)")
    p.add_argument("--gate-only", action="store_true", help="adversarial, long: train the warp gate alone "
                   "against the discriminator, the rest of the generator frozen (implies --warp-gate)")
    p.add_argument("--segments", type=positive_int, help="long: windows per rollout (default 3)")
    p.add_argument("--overlap", type=int, help="long: latent steps shared by consecutive windows (default 2)")
    p.set_defaults(run=cmd_train)

    p = sub.add_parser("ship", help="write a trained checkpoint, in bf16, as the default model of "
                       "play/render/eval/bench",
                       description="Stores CHECKPOINT's weights in bfloat16 (half the size) at --out, by default "
                       "model/checkpoints/mini.safetensors inside the package: the model play, render, eval and "
                       "bench use when no --checkpoint is given.")
    p.add_argument("checkpoint", help="a model checkpoint, e.g. runs/mini/long/model.safetensors")
    p.add_argument("--out", default=None, help="where to write it (default: the shipped default's path)")
    p.add_argument("--single-file", action="store_true",
                   help="keep the VAE in the same file (default: in OUT-vae.safetensors beside it, so that a new "
                   "generator on the same VAE adds only its own bytes to the repository)")
    p.set_defaults(run=cmd_ship)

    p = sub.add_parser("eval", help="score the generated world against the reference world on held-out scenes",
                       description="Run the generated world and the reference world from the same first frame "
                       "along the same camera trajectories (held-out scenes, plus any levels and paths given) and "
                       "report fidelity (PSNR, SSIM), camera adherence, sharpness and long-horizon drift, with the "
                       "hold-the-first-frame and multi-step diffusion baselines measured in the same run.")
    p.add_argument("--checkpoint", default=None, help="the .safetensors checkpoint to score (default: shipped)")
    p.add_argument("--levels", nargs="+", default=[], metavar="LEVEL",
                   help="also walk these levels (shipped names or .toml files) from their start poses")
    p.add_argument("--paths", nargs="+", default=[], metavar="PATH",
                   help="camera paths to walk on each of --levels (default: a random walk on each)")
    p.add_argument("--seconds", type=number_in(0.0, 3600.0), default=60.0,
                   help="seconds of video per stream (default 60; at least one step, 1/6 s, and at most 3600)")
    p.add_argument("--scenes", type=number_in(1, len(HELD_OUT_SEEDS), int), default=4,
                   help=f"held-out scenes to walk (default 4, at most the {len(HELD_OUT_SEEDS)} held out; at least "
                        "1 with --levels too: the camera checks turn and walk from their starts)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto", help=DEVICE_HELP)
    # each step keeps a KV cache of its own (about 30 MB for mini): 100000 steps took the machine's memory
    p.add_argument("--baseline-steps", type=number_in(1, 64, int), default=4,
                   help="Euler steps of the autoregressive diffusion baseline (default 4, at most 64)")
    p.add_argument("--baseline-checkpoint", default=None,
                   help="the diffusion baseline's checkpoint, e.g. the diffusion stage's (default: --checkpoint)")
    p.add_argument("--json", action="store_true", help="print one JSON object on stdout")
    p.add_argument("--plot", default=None, metavar="PNG", help="draw PSNR/SSIM over time and the per-window "
                   "Fréchet distances to this PNG")
    p.set_defaults(run=cmd_eval)
    return parser


def _terminated(signum, frame):
    # SIGTERM (kill, a CI timeout) or SIGHUP (the terminal closed) unwinds like Ctrl-C: a half-written video is
    # removed, a session is closed, worker processes are stopped. By default Python would just die.
    raise SystemExit(128 + signum)


def main(argv=None) -> int:
    for stream in (sys.stdout, sys.stderr):  # a name the terminal's encoding lacks is escaped, not a traceback after
        if hasattr(stream, "reconfigure"):  # the work (PYTHONIOENCODING=ascii, a C locale's pipe)
            stream.reconfigure(errors="backslashreplace")
    args = build_parser().parse_args(argv)
    previous = handle_stop_signals(_terminated, TERMINATING_SIGNALS)
    try:
        code = args.run(args)
        sys.stdout.flush()  # here, where a reader that has gone is told apart (below), not as the interpreter exits
        return code
    except InputError as error:
        if os.environ.get("EXPLORER_DEBUG"):
            raise
        _tell(f"explorer: error: {error}")
        return 2
    except OSError as error:
        gone = _output_gone()
        if gone is not None:
            return gone
        # The file system refused (a folder that cannot be made or written, a full disk): the file and the reason,
        # which is all a user can act on.
        if os.environ.get("EXPLORER_DEBUG") or error.filename is None:
            raise
        _tell(f"explorer: error: {InputError(error.filename, None, error.strerror or str(error))}")
        return 2  # (written as our own errors are: a 5000-letter name, "File name too long", is cut to one line)
    except KeyboardInterrupt:
        _tell("explorer: interrupted")
        return 130
    except Exception as error:
        if not caused_by_interrupt(error):
            raise
        _tell("explorer: interrupted")
        return 130
    finally:
        restore_handlers(previous)


def _tell(line: str) -> None:
    """`line` on standard error, unless it can no longer be written (its terminal was closed)."""
    try:
        print(line, file=sys.stderr)
    except OSError:
        if _output_gone() is None:
            raise


def _output_gone() -> int | None:
    """If standard output or error can no longer be written, because the pipe's reader has gone (`explorer levels |
    head -1`) or the terminal was closed, the exit code a shell reports for a process that the signal for it ended
    (SIGPIPE's 141, SIGHUP's 129), and that stream now writes to /dev/null, so that the interpreter's own last
    flush stays quiet too. None while both can be written."""
    gone = None
    for stream in (sys.stdout, sys.stderr):
        try:
            fd = stream.fileno()
        except (AttributeError, OSError, ValueError):  # not a file (a test's capture), or closed
            continue
        poll = select.poll()
        poll.register(fd, select.POLLOUT)
        events = poll.poll(0)[0][1] if fd >= 0 else 0
        if events & (select.POLLERR | select.POLLHUP):
            os.dup2(os.open(os.devnull, os.O_WRONLY), fd)
            gone = gone or 128 + (signal.SIGHUP if events & select.POLLHUP else signal.SIGPIPE)
    return gone


if __name__ == "__main__":  # `python -m explorer.cli`, as before `python -m explorer` (explorer/__main__.py)
    from explorer.launch import end_process, exit_code
    sys.exit(end_process(exit_code(main)))
