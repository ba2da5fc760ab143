"""The options of `explorer train STAGE`, with each stage's defaults.

The defaults are for the `mini` config on this 2-core CPU (docs/training.md gives the measured speeds behind them);
a GPU run raises --batch and --steps. A resumed stage keeps the options it was started with: only --steps, --data,
--device and --grad-checkpointing may change. An option for other stages than the one run is refused (OPTION_STAGES).
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, fields, replace

from camera.errors import InputError

STAGES = ("vae", "decoder", "pretrain", "diffusion", "consistency", "adversarial", "long", "gate")
SOURCE = {"decoder": "vae", "pretrain": "vae", "diffusion": "pretrain", "consistency": "diffusion",
          "adversarial": "consistency", "long": "adversarial", "gate": "adversarial"}
# The stage whose model.safetensors a stage starts from when --init is not given. `decoder` changes only the VAE's
# decoder (the latents stay the same), so the generator stages need not wait for it: it runs on the finished model
# (--init) as well as on the VAE.
ADVERSARIAL = ("adversarial", "long")


@dataclass
class TrainOptions:
    stage: str
    data: str
    run: str
    config: str = "mini"
    steps: int | None = None        # the stage's total optimiser steps (a resumed stage runs up to this)
    batch: int | None = None        # clips per step, over all processes
    lr: float | None = None
    init: str | None = None         # a model checkpoint to start from instead of the previous stage's
    diffusion: str | None = None    # the diffusion model (consistency teacher, discriminator init); default: the run's
    resume: bool = False
    seed: int = 0
    warmup: int | None = None       # steps of linear learning-rate warm-up
    grad_clip: float | None = None  # max gradient norm (0: none)
    precision: str | None = None    # autocast dtype of the forward passes: bf16 or fp32 (master weights stay fp32)
    device: str = "auto"
    val_clips: int = 32             # the scenes of the dataset's last val_clips clips are held out
    log_every: int = 10
    save_every: int | None = None   # steps between saves (also validation and a sample video); about 30 min
    # vae
    vae_frames: int = 9             # frames per training window (1 + 4k)
    kl_weight: float = 1e-4
    grad_weight: float = 1.0        # the multi-scale image-gradient (structure) term
    colour_weight: float = 0.0      # vae, decoder: MSE of 8x8 patch colours (losses.colour_loss)
    # flow matching and distillation
    shift: float | None = None      # time shift s; default: 24 scaled to the latent size (losses.default_shift)
    cd_steps: int = 32              # consistency distillation's fixed steps
    history_noise: float = 0.0      # diffusion, consistency: the recycled latents get noise of std U(0, this)
                                    # per clip, so the model learns to take imperfect history (0: the paper's)
    sample_steps: int = 8           # Euler steps of the diffusion stages' sample videos
    # adversarial (and decoder)
    r1_lambda: float | None = None  # lambda of the approximated R1 and R2 (per stage: the paper's for video, APT's
    r1_sigma: float | None = None   # for images in the decoder's pixel space)
    adv_weight: float | None = None  # decoder: the adversarial term's pull on the pixels over the reconstruction's
    disc_lr_scale: float | None = None  # the discriminator's learning rate over --lr (adversarial, long, decoder)
    segments: int = 3               # long: windows judged per rollout
    overlap: int = 2                # long: latent steps shared by consecutive windows
    warp_gate: bool = False         # generator stages: the generator with a warp gate (GeneratorConfig.warp_gate),
                                    # grown at zero from a model without one; the gate stage always has it
    gate_only: bool = False         # adversarial, long: only the warp gate learns (implies warp_gate); the gate
                                    # stage's regression replaced by the discriminator's judgement
    grad_checkpointing: bool = False  # pretrain, diffusion, consistency: recompute each block in the backward
                                      # pass (memory, for large configs)

    def check(self) -> None:
        where = "command line"
        if self.stage not in STAGES:
            raise InputError(where, "STAGE", f"must be one of {', '.join(STAGES)}, got {self.stage!r}")
        if self.precision not in (None, "bf16", "fp32"):
            raise InputError(where, "--precision", f"must be bf16 or fp32, got {self.precision!r}")
        if (self.vae_frames - 1) % 4 or self.vae_frames < 5:
            raise InputError(where, "--vae-frames", f"must be 1 + 4k with k >= 1, got {self.vae_frames}")
        for name in ("steps", "batch", "val_clips", "log_every", "save_every", "cd_steps", "sample_steps",
                     "segments"):
            value = getattr(self, name)
            if value is not None and value < 1:
                raise InputError(where, f"--{name.replace('_', '-')}", f"must be at least 1, got {value}")
        for name in ("lr", "r1_sigma", "disc_lr_scale"):
            value = getattr(self, name)
            if value is not None and not value > 0:
                raise InputError(where, f"--{name.replace('_', '-')}", f"must be positive, got {value}")
        for name, top in (("lr", 1.0), ("disc_lr_scale", 1000.0)):  # (1e300 overflowed the optimiser: a traceback)
            value = getattr(self, name)
            if value is not None and value > top:
                raise InputError(where, f"--{name.replace('_', '-')}", f"must be at most {top:g}, got {value}")
        if self.gate_only and self.stage not in ADVERSARIAL:
            raise InputError(where, "--gate-only", f"is for the {' and '.join(ADVERSARIAL)} stages (the gate stage "
                             f"trains the gate alone already), not {self.stage}")
        if self.shift is not None and not self.shift > 0:
            raise InputError(where, "--shift", f"must be positive, got {self.shift}")
        for name in ("warmup", "grad_clip", "kl_weight", "grad_weight", "r1_lambda", "overlap", "adv_weight",
                     "history_noise", "colour_weight"):
            value = getattr(self, name)
            if value is not None and not value >= 0:
                raise InputError(where, f"--{name.replace('_', '-')}", f"must be 0 or more, got {value}")

    def check_scope(self, explicit: set[str]) -> None:
        """An option given for a stage it does nothing in is refused: `train vae --warp-gate` wrote a VAE-stage
        model with a gate, which every later stage of the run then refused unless given --warp-gate too."""
        for name in sorted(explicit & OPTION_STAGES.keys()):
            stages = OPTION_STAGES[name]
            if self.stage not in stages:
                raise InputError("command line", f"--{name.replace('_', '-')}", f"is for the {', '.join(stages)} "
                                 f"stage{'s' * (len(stages) > 1)}, not {self.stage}")

    def with_defaults(self) -> "TrainOptions":
        """Fills what was not given from the stage's defaults."""
        given = {k: v for k, v in STAGE_DEFAULTS[self.stage].items() if getattr(self, k) is None}
        return replace(self, **given)

    def to_json(self) -> str:
        return json.dumps(asdict(self), sort_keys=True)

    @staticmethod
    def from_json(text: str) -> "TrainOptions":
        d = json.loads(text)
        return TrainOptions(**{f.name: d[f.name] for f in fields(TrainOptions) if f.name in d})


# Per stage: optimiser steps, clips per step, learning rate, warm-up, clipping, save interval, precision. AdamW
# (weight decay 0.01) except the adversarial stages (RMSProp, alpha 0.9, no clipping, as APT). Learning rates are
# higher than the paper's 1e-5 and 3e-6: those fine-tune an 8B model; ours start small models from scratch. Steps and
# batches are sized for about a day of the 2-core CPU in all (docs/training.md has the measured seconds per step).
# The VAE stages train in fp32: on the CPU, oneDNN's bf16 weight gradient of a 3D convolution (torch 2.13) now and
# then comes back as garbage of norm ~1e5 where fp32 gives ~1 (docs/training.md, "bf16 convolution gradients"); the
# generator's bf16 gradients were checked equal to fp32's. The discriminators learn faster than their generator: at
# the paper's shared rate, batch 4 on this CPU, the video discriminator fell behind within 45 steps and the rollout
# collapsed (docs/training.md, run 2); at 10x it stayed ahead and the rollout improved.
STAGE_DEFAULTS = {
    "vae": dict(steps=2000, batch=4, lr=2e-4, warmup=100, grad_clip=1.0, save_every=150, precision="fp32"),
    "decoder": dict(steps=1500, batch=4, lr=5e-5, warmup=50, grad_clip=1.0, save_every=100, precision="fp32",
                    r1_lambda=100.0, r1_sigma=0.01, adv_weight=0.5, disc_lr_scale=4.0),
    "pretrain": dict(steps=3000, batch=16, lr=3e-4, warmup=200, grad_clip=1.0, save_every=300, precision="bf16"),
    "diffusion": dict(steps=3000, batch=16, lr=1e-4, warmup=100, grad_clip=1.0, save_every=300, precision="bf16"),
    "consistency": dict(steps=1000, batch=16, lr=3e-5, warmup=50, grad_clip=1.0, save_every=150, precision="bf16"),
    "adversarial": dict(steps=600, batch=8, lr=1e-5, warmup=0, grad_clip=0.0, save_every=60, precision="bf16",
                        r1_lambda=1000.0, r1_sigma=0.1, disc_lr_scale=10.0),
    "long": dict(steps=300, batch=4, lr=1e-5, warmup=0, grad_clip=0.0, save_every=50, precision="bf16",
                 r1_lambda=1000.0, r1_sigma=0.1, disc_lr_scale=10.0),
    # gate: one linear layer on a frozen model, hence the high rate
    "gate": dict(steps=300, batch=8, lr=1e-3, warmup=10, grad_clip=1.0, save_every=50, precision="bf16"),
}


GENERATOR_STAGES = ("pretrain", "diffusion", "consistency", "adversarial", "long", "gate")
# The stages each stage-specific option acts in (the ones above that name no stage act in all)
OPTION_STAGES = {
    "vae_frames": ("vae", "decoder"), "kl_weight": ("vae",), "grad_weight": ("vae", "decoder"),
    "colour_weight": ("vae", "decoder"),
    "shift": ("pretrain", "diffusion", "consistency"), "warp_gate": GENERATOR_STAGES,
    "history_noise": ("diffusion", "consistency"), "sample_steps": ("pretrain", "diffusion"),
    "cd_steps": ("consistency",), "diffusion": ("consistency", "adversarial", "long"),
    "r1_lambda": ("decoder", *ADVERSARIAL), "r1_sigma": ("decoder", *ADVERSARIAL),
    "disc_lr_scale": ("decoder", *ADVERSARIAL), "adv_weight": ("decoder",),
    "segments": ("long",), "overlap": ("long",), "gate_only": ADVERSARIAL,
    "grad_checkpointing": ("pretrain", "diffusion", "consistency"),  # (the others step with the cache: no forward)
}
# What a resumed stage may be given anew: where the data lie, how far to go, and how to compute it (the same math)
RESUME_MAY_CHANGE = {"steps", "resume", "stage", "run", "data", "device", "grad_checkpointing"}


def merge_resumed(stored: "TrainOptions", given: "TrainOptions", explicit: set[str], source: str) -> "TrainOptions":
    """The options of a resumed stage: the stored ones, with --steps (and --data, --device, --grad-checkpointing)
    from the command line if given. Any other option given explicitly must agree with the stored one (changing it
    would break the identical-resume promise)."""
    for name in sorted(explicit - RESUME_MAY_CHANGE):
        if getattr(given, name) != getattr(stored, name):
            raise InputError(source, f"options.{name}", f"this stage was started with {getattr(stored, name)!r}; "
                             f"resume with the same value or start another --run")
    steps = given.steps if "steps" in explicit else stored.steps
    # options added since the state was saved take the stage's defaults
    return replace(stored, steps=steps, resume=True, data=given.data, device=given.device,
                   grad_checkpointing=given.grad_checkpointing).with_defaults()
