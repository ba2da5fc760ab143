"""`explorer train STAGE`: resolve the options, open the run and the data, build the stage, run it.

The same entry serves one process and a torchrun launch (model/training/distributed.py).
"""
from __future__ import annotations

from dataclasses import replace

from camera.errors import InputError, first_missing
from model.config import ModelConfig, get_config
from model.training import distributed
from model.training.adversarial import AdversarialStage
from model.training.consistency import ConsistencyStage
from model.training.data import Clips
from model.training.decoder import DecoderStage
from model.training.distributed import Dist
from model.training.diffusion import DiffusionStage
from model.training.gate import GateStage
from model.training.options import TrainOptions, merge_resumed
from model.training.run import RunFolder, fit
from model.training.stage import Stage
from model.training.state import read_state
from model.training.vae import VAEStage

STAGE_CLASSES = {"vae": VAEStage, "decoder": DecoderStage, "pretrain": DiffusionStage, "diffusion": DiffusionStage,
                 "consistency": ConsistencyStage, "adversarial": AdversarialStage, "long": AdversarialStage,
                 "gate": GateStage}


def resolve(opts: TrainOptions, explicit: set[str], run: RunFolder) -> TrainOptions:
    """The options to run with: a resumed stage's stored ones (see options.merge_resumed), or the given ones with
    the stage's defaults. Refuses to start a stage over one that already has a state."""
    opts.check()
    opts.check_scope(explicit)
    state = run.state_path(opts.stage)
    if opts.resume:
        if not state.exists():
            raise InputError(state, None, f"nothing to resume: the {opts.stage} stage of this run has not saved yet")
        metadata = read_state(state, prefix=None)[1]  # its tensors are read once, by load_state
        if metadata["stage"] != opts.stage:  # another stage's file, copied here: it ran that stage, in its folder
            raise InputError(state, "stage", f"this is the {metadata['stage']} stage's state, not the {opts.stage} "
                             "stage's")
        merged = merge_resumed(TrainOptions.from_json(metadata["options"]), opts, explicit, str(state))
        if merged.steps <= int(metadata["step"]):  # it ran nothing and said nothing
            raise InputError("command line", "--steps", f"the {opts.stage} stage is at step {metadata['step']} "
                             f"already of its {merged.steps}: give --steps above {metadata['step']} to train on")
        return merged
    if state.exists():
        raise InputError(state, None, f"the {opts.stage} stage of this run has already started: pass --resume to "
                         f"continue it, or use another --run")
    return opts.with_defaults()


def with_warp_gate(config: ModelConfig) -> ModelConfig:
    """The config with the generator's warp gate: a model without one grows it at zero (checkpoint.GROWABLE)."""
    if not config.generator.warp:
        raise InputError("command line", "--warp-gate", f"the {config.name!r} generator has no warp input to gate")
    return replace(config, generator=replace(config.generator, warp_gate=True))


def build_stage(opts: TrainOptions, run: RunFolder, d: Dist) -> Stage:
    """The stage's modules, optimisers and data, from resolved options (before any resume)."""
    if opts.batch % d.world:
        raise InputError("command line", "--batch", f"{opts.batch} clips do not split over {d.world} processes")
    config = get_config(opts.config, source="command line: --config")
    if opts.warp_gate or opts.gate_only or opts.stage == "gate":
        config = with_warp_gate(config)
    clips = Clips.open(opts.data, config, opts.val_clips)
    if opts.batch > len(clips.train):  # each step would repeat clips, and a large one runs out of memory unsaid
        raise InputError("command line", "--batch", f"{opts.batch} clips per step, but the data have "
                         f"{len(clips.train)} to train on: use a smaller --batch or make more clips")
    fresh = not (run.root / "run.json").exists()
    made = first_missing(run.root)
    scaling = run.open(config, clips, d)
    try:
        return STAGE_CLASSES[opts.stage](opts, d, run, config, clips, scaling)
    except InputError:  # an option the stage refuses (--vae-frames longer than the clips): no run was started
        if fresh and d.main:
            run.remove_unstarted(made)
        raise


def train(opts: TrainOptions, explicit: set[str] = frozenset()) -> None:
    """explicit: the option names given on the command line (a resumed stage checks them against its stored ones)."""
    run = RunFolder(opts.run)
    if "config" not in explicit and run.recorded_config():  # a run trains one config: its next stage, too
        opts = replace(opts, config=run.recorded_config())
    opts = resolve(opts, set(explicit), run)
    d = distributed.setup(opts.device)
    try:
        fit(build_stage(opts, run, d), run, d)
    finally:
        distributed.teardown(d)
