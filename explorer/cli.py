"""The `explorer` command line (DESIGN section 6).

Each subcommand's handler imports what it needs when it runs, so `explorer --help` stays instant and a command that
does not touch the model never imports torch. Bad input raises camera.errors.InputError anywhere below; it is printed
here as one line and the process exits with code 2 (set EXPLORER_DEBUG=1 for the traceback).
"""
from __future__ import annotations

import argparse
import os
import sys

from camera.errors import InputError


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
        raise argparse.ArgumentTypeError(f"expected WIDTHxHEIGHT such as 256x144, got {text!r}") from None
    if not (16 <= w <= 8192 and 16 <= h <= 8192):
        raise argparse.ArgumentTypeError(f"width and height must be between 16 and 8192, got {text!r}")
    return w, h


def positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a whole number, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"must be at least 1, got {value}")
    return value


# --- handlers ------------------------------------------------------------------------------------

def cmd_levels(args) -> int:
    from world.level import list_levels
    for level in list_levels():
        scene = level.scene
        what = (f"{scene.sky.preset} sky, {scene.ground.material} ground, {scene.terrain.kind} terrain"
                if scene is not None else "start image only")
        print(f"{level.name:<12} {level.title:<28} {what}")
    return 0


def cmd_render(args) -> int:
    from explorer.render import render_path
    render_path(level=args.level, path=args.path, out=args.out, world_kind=args.world, size=args.size,
                checkpoint=args.checkpoint, device=args.device, seed=args.seed)
    return 0


def cmd_data(args) -> int:
    from world.dataset import DataSpec, write_dataset
    spec = DataSpec(clips=args.clips, size=args.size, frames=args.frames, seed=args.seed, split=args.split,
                    clips_per_scene=args.clips_per_scene, clips_per_shard=args.clips_per_shard)
    write_dataset(args.out, spec)
    return 0


# --- parser --------------------------------------------------------------------------------------

def build_parser() -> argparse.ArgumentParser:
    parser = Parser(
        prog="explorer", description="Walk through a world that a neural network invents frame by frame.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("levels", help="list the shipped levels")
    p.set_defaults(run=cmd_levels)

    p = sub.add_parser("render", help="render a scripted camera path to an .mp4, headless")
    p.add_argument("--level", required=True, help="a shipped level's name or a path to a level .toml")
    p.add_argument("--path", required=True, help="a camera path (.toml keyframes or a RealEstate10K .txt)")
    p.add_argument("--out", required=True, help="the video to write (.mp4, H.264)")
    p.add_argument("--world", choices=["reference", "generated"], default="reference",
                   help="the procedural reference scene, or the neural generator (default: reference)")
    p.add_argument("--size", type=parse_size, default=None,
                   help="output WIDTHxHEIGHT (default: 640x360 for reference, the model's native size for generated)")
    p.add_argument("--checkpoint", default=None, help="generated world: a .safetensors checkpoint (default: shipped)")
    p.add_argument("--device", choices=["auto", "cpu", "cuda"], default="auto")
    p.add_argument("--seed", type=int, default=0, help="generated world: the noise seed (default 0)")
    p.set_defaults(run=cmd_render)

    p = sub.add_parser("data", help="render training clips from random procedural scenes into shards")
    p.add_argument("--out", required=True, help="the dataset folder (resumes if it already holds part of this dataset)")
    p.add_argument("--clips", type=positive_int, required=True, help="how many clips in total")
    p.add_argument("--size", type=parse_size, default=(256, 144), help="WIDTHxHEIGHT (default 256x144)")
    p.add_argument("--frames", type=positive_int, default=33,
                   help="frames per clip, 1 + 4k (default 33: the first frame and 8 latent steps)")
    p.add_argument("--seed", type=int, default=0, help="the dataset's seed (default 0)")
    p.add_argument("--split", choices=["train", "heldout"], default="train",
                   help="train scenes, or the held-out scene seeds kept for evaluation (default train)")
    p.add_argument("--clips-per-scene", type=positive_int, default=8)
    p.add_argument("--clips-per-shard", type=positive_int, default=64)
    p.set_defaults(run=cmd_data)
    return parser


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return args.run(args)
    except InputError as error:
        if os.environ.get("EXPLORER_DEBUG"):
            raise
        print(f"explorer: error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("explorer: interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":
    sys.exit(main())
