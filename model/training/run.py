"""The run folder and the training loop every stage shares: progress bar, metrics, plots, samples, checkpoints.

    runs/RUN/
      run.json                   the model config's name, the dataset, the camera scaling measured on it
      latents/DIGEST/00000.npy   cached VAE latents, one file per dataset shard (data.py)
      STAGE/                     vae, pretrain, diffusion, consistency, adversarial, long
        model.safetensors        the model (explorer-checkpoint/1): GeneratedWorld.open(checkpoint=...) loads it
        state.safetensors        the training state (state.py): --resume continues from it bit for bit
        metrics.jsonl            one JSON object per line: training means every --log-every steps, validation at
                                 every save
        loss.png                 every metric against the step
        samples/step_NNNNNN.mp4  a held-out clip: reference | generated, at every save

Saving (every --save-every steps, at the end, and on Ctrl-C) writes the state first and the model second, both
atomically; a crash in between leaves a model one save older than the state, which the next save replaces.
"""
from __future__ import annotations

import json
import math
import os
import signal
import time
from collections import defaultdict
from pathlib import Path

import numpy as np
from tqdm import tqdm

from camera.embedding import CameraScaling
from camera.errors import InputError, parse_json, read_text, remove_empty_folders, write_replacing
from explorer.interrupts import handle_stop_signals, restore_handlers
from model.config import ModelConfig
from model.training.data import Clips, measure_camera_scaling
from model.training.distributed import Dist
from model.training.state import load_state, save_state

RUN_FORMAT = "explorer-run/1"


class RunFolder:
    def __init__(self, root):
        self.root = Path(root)

    def stage(self, name: str) -> Path:
        return self.root / name

    def model_path(self, stage: str) -> Path:
        return self.root / stage / "model.safetensors"

    def state_path(self, stage: str) -> Path:
        return self.root / stage / "state.safetensors"

    def remove_unstarted(self, made: Path | None = None) -> None:
        """Take back what `open` and a stage that then refused its options made: run.json and empty folders, up to
        `made` (the first folder of the run's path that did not exist before); a file that anything else put there
        stays, and so does its folder."""
        (self.root / "run.json").unlink(missing_ok=True)
        for folder, _, _ in sorted(os.walk(self.root), key=lambda entry: -len(entry[0])):  # deepest first
            if not os.listdir(folder):
                os.rmdir(folder)
        if made is not None and made in self.root.parents:  # the parents the run's path made, while empty
            remove_empty_folders(self.root.parent, made)

    def recorded_config(self) -> str | None:
        """The config name run.json records, or None (no run yet; a damaged run.json is named by `open`)."""
        try:
            info = json.loads((self.root / "run.json").read_text())
        except (OSError, ValueError):
            return None
        return info.get("config") if isinstance(info, dict) and isinstance(info.get("config"), str) else None

    def open(self, config: ModelConfig, clips: Clips, d: Dist) -> CameraScaling:
        """Creates run.json on first use (measuring the camera scaling on the data) and checks it later; returns the
        run's camera scaling, which every checkpoint of the run carries."""
        path = self.root / "run.json"
        if not path.exists() and d.main:
            scaling = measure_camera_scaling(clips, config)
            run = {"format": RUN_FORMAT, "config": config.name, "data": str(clips.folder),
                   "camera_scaling": scaling.to_dict()}
            write_replacing(path, lambda tmp: tmp.write_text(json.dumps(run, indent=1)), field=None)
        d.barrier()
        info = parse_json(read_text(path), path, None)
        if not isinstance(info, dict):
            raise InputError(path, None, "must be a JSON object (the run's description)")
        if info.get("format") != RUN_FORMAT:
            raise InputError(path, "format", f"expected {RUN_FORMAT!r}, found {info.get('format')!r}")
        if info.get("config") != config.name:
            raise InputError(path, "config", f"this run trains the {info.get('config')!r} config, not "
                             f"{config.name!r} (pass --config {info.get('config')} or use another --run)")
        return CameraScaling.from_dict(info.get("camera_scaling"), source=str(path))


class Metrics:
    """metrics.jsonl of a stage, and its plot."""

    def __init__(self, folder: Path):
        self.path = folder / "metrics.jsonl"
        self.plot_path = folder / "loss.png"

    def records(self) -> list[dict]:
        """The log's records: JSON objects with a whole `step`. A torn last line, or any line that is not one of
        ours (edited, damaged), is left out rather than stopping a run over its log."""
        if not self.path.exists():
            return []
        records = []
        for line in self.path.read_text(errors="replace").splitlines():
            try:
                record = json.loads(line)
            except (json.JSONDecodeError, RecursionError):
                continue
            if isinstance(record, dict) and isinstance(record.get("step"), int):
                records.append(record)
        return records

    def truncate(self, step: int) -> None:
        """Drops lines past `step` (logged after the state being resumed was saved) and those `records` leaves out;
        written beside it and renamed into place, so a full disk or a kill leaves the log as it was (not empty)."""
        if self.path.exists():
            kept = "".join(json.dumps(r) + "\n" for r in self.records() if r["step"] <= step)
            write_replacing(self.path, lambda tmp: tmp.write_text(kept), field=None)

    def write(self, record: dict) -> None:
        with open(self.path, "a") as f:
            f.write(json.dumps(record) + "\n")

    def plot(self) -> None:
        import matplotlib
        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        series = defaultdict(list)
        for record in self.records():
            for key, value in record.items():
                if key not in ("step", "time") and isinstance(value, (int, float)) and math.isfinite(value):
                    series[key].append((record["step"], value))
        if not series:
            return
        keys = sorted(series)
        cols = min(3, len(keys))
        rows = -(-len(keys) // cols)
        fig, axes = plt.subplots(rows, cols, figsize=(4.5 * cols, 3 * rows), squeeze=False)
        for ax, key in zip(axes.flat, keys):
            steps, values = zip(*series[key])
            ax.plot(steps, values, marker="." if len(steps) < 50 else None)
            if "loss" in key and min(values) > 0:
                ax.set_yscale("log")
            ax.set_title(key)
            ax.set_xlabel("step")
            ax.grid(alpha=0.3)
        for ax in list(axes.flat)[len(keys):]:
            ax.axis("off")
        fig.tight_layout()
        try:
            write_replacing(self.plot_path, lambda tmp: fig.savefig(tmp, dpi=80, format="png"), field="loss plot")
        finally:
            plt.close(fig)


def learning_rate(base: float, warmup: int, step: int) -> float:
    """Linear warm-up over the first `warmup` steps, then constant: a function of the step, so nothing to save."""
    return base * min(1.0, (step + 1) / warmup) if warmup else base


class StopRequest:
    """Ctrl-C (or a SIGTERM, e.g. from a session that ends, or the terminal closed) asks the loop to stop after the
    current step: a step cut in half could leave the weights half updated. A second signal stops at once."""

    def __enter__(self):
        self.requested, self.signum = False, None
        self.previous = handle_stop_signals(self._handle)
        return self

    def _handle(self, signum, frame):
        if self.requested:
            raise KeyboardInterrupt
        self.requested, self.signum = True, signum

    def __exit__(self, *exc):
        restore_handlers(self.previous)


def fit(stage, run: RunFolder, d: Dist) -> None:
    """Runs `stage` (a model.training.stage.Stage) from its saved step, or 0, up to its options' steps."""
    opts = stage.opts
    folder = run.stage(opts.stage)
    (folder / "samples").mkdir(parents=True, exist_ok=True)
    metrics = Metrics(folder)
    start = 0
    if opts.resume:
        start = load_state(run.state_path(opts.stage), stage.modules, stage.optimizers)
        if d.main:
            metrics.truncate(start)

    def save(step: int) -> None:
        save_state(run.state_path(opts.stage), d, step, opts.stage, opts.to_json(), stage.modules, stage.optimizers)
        stage.export(run.model_path(opts.stage), step)
        record = {"step": step, "time": time.time(), **stage.validate()}
        stage.write_sample(folder / "samples" / f"step_{step:06d}.mp4")
        if d.main:
            metrics.write(record)
            metrics.plot()

    bar = tqdm(total=opts.steps, initial=start, desc=opts.stage, unit="step", disable=not d.main,
               dynamic_ncols=True)
    window, clock = defaultdict(list), time.perf_counter()
    with StopRequest() as stop, bar:
        for step in range(start, opts.steps):
            for key, value in stage.train_step(step).items():
                window[key].append(value)
            done = step + 1
            bar.update(1)
            bar.set_postfix(loss=f"{window['loss'][-1]:.4g}")
            if done % opts.log_every == 0 or done == opts.steps:
                now = time.perf_counter()
                record = {k: d.mean(float(np.mean(v))) for k, v in sorted(window.items())}
                record.update(step=done, time=time.time(), lr=learning_rate(opts.lr, opts.warmup, step),
                              it_s=len(window["loss"]) / (now - clock))
                if d.main:
                    metrics.write(record)
                window, clock = defaultdict(list), now
            stopping = d.mean(float(stop.requested)) > 0  # every process stops at the same step
            if done % opts.save_every == 0 or done == opts.steps or stopping:
                save(done)
                clock = time.perf_counter()  # the next it/s measures training alone
            if stopping:
                bar.write(f"stopped at step {done}, saved (continue with --resume)")
                if stop.signum != signal.SIGINT:  # the shell reports 143 for a SIGTERM (130 is Ctrl-C's), as play
                    raise SystemExit(128 + stop.signum)  # exits
                raise KeyboardInterrupt
