"""The training state of a stage, in one safetensors file (never pickle): enough to continue bit for bit.

Tensors: `module.NAME.KEY` for every module of the stage (trained and frozen ones, so a resume needs no other file),
`optim.NAME.PARAM.KEY` for every optimiser's per-parameter state. Metadata: `format`, `stage`, `step`, the
stage's options as JSON, and each optimiser's param_groups (learning rates, betas, ...) as JSON.

There are no random-generator states to keep: every random draw of step n comes from generators seeded by
(seed, n) (data.SampleRNG), so the step counter is the whole of it.
"""
from __future__ import annotations

import json
from pathlib import Path

import torch
import torch.nn as nn

from camera.errors import InputError
from model.checkpoint import read_safetensors, write_safetensors
from model.training import distributed
from model.training.distributed import Dist

FORMAT = "explorer-train-state/1"


def save_state(path: Path, d: Dist, step: int, stage: str, options_json: str, modules: dict[str, nn.Module],
               optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]]) -> None:
    """Every process calls it (gathering sharded tensors is collective); the main process writes."""
    tensors, metadata = {}, {"format": FORMAT, "stage": stage, "step": str(step), "options": options_json}
    for name, module in modules.items():
        tensors.update({f"module.{name}.{k}": t for k, t in distributed.full_state(module).items()})
    for name, (module, optimizer) in optimizers.items():
        state = distributed.full_optimizer_state(module, optimizer)
        if not d.main:  # the full state is gathered on the main process only
            continue
        for param, values in state["state"].items():
            for key, value in values.items():
                tensors[f"optim.{name}.{param}.{key}"] = torch.as_tensor(value)
        metadata[f"optim.{name}.param_groups"] = json.dumps(state["param_groups"])
    if d.main:
        write_safetensors(path, tensors, metadata)
    d.barrier()


def read_state(path: Path, prefix: str | None = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The state's tensors whose names start with `prefix` (all by default; None: none) and its metadata, checked."""
    tensors, metadata = read_safetensors(path, prefix=prefix)
    if metadata.get("format") != FORMAT:
        raise InputError(path, "format", f"expected {FORMAT!r}, found {metadata.get('format')!r}")
    for key in ("stage", "step", "options"):
        if key not in metadata:
            raise InputError(path, key, "missing from the metadata")
    return tensors, metadata


def module_tensors(tensors: dict[str, torch.Tensor], name: str) -> dict[str, torch.Tensor]:
    prefix = f"module.{name}."
    return {k[len(prefix):]: t for k, t in tensors.items() if k.startswith(prefix)}


def read_module(path: Path, name: str) -> dict[str, torch.Tensor]:
    """One module's tensors from a state file, the rest of it left unread."""
    return module_tensors(read_state(path, prefix=f"module.{name}.")[0], name)


def load_state(path: Path, modules: dict[str, nn.Module],
               optimizers: dict[str, tuple[nn.Module, torch.optim.Optimizer]]) -> int:
    """Fills the modules and optimisers from the file; returns the step it was saved at."""
    tensors, metadata = read_state(path)
    for name, module in modules.items():
        own = module_tensors(tensors, name)
        if not own:
            raise InputError(path, f"module.{name}", "missing: the file was written by another stage")
        try:
            distributed.load_full_state(module, own)
        except RuntimeError as e:
            raise InputError(path, f"module.{name}", f"does not fit the model ({str(e).splitlines()[0]})") from None
    for name, (module, optimizer) in optimizers.items():
        groups_key = f"optim.{name}.param_groups"
        if groups_key not in metadata:
            raise InputError(path, groups_key, "missing from the metadata")
        prefix, state = f"optim.{name}.", {}
        for key, value in tensors.items():
            if key.startswith(prefix):
                param, field = key[len(prefix):].rsplit(".", 1)
                state.setdefault(param, {})[field] = value
        distributed.load_full_optimizer_state(module, optimizer,
                                              {"state": state, "param_groups": json.loads(metadata[groups_key])})
    return int(metadata["step"])
