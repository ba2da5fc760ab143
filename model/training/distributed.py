"""Several processes: torchrun, one process per GPU (or several on a CPU with gloo), FSDP2 `fully_shard`.

Every process builds the full model, loads the same weights, then shards it: each transformer block (or VAE
residual block) is one unit whose parameters are gathered for its forward and backward and scattered again, and the
rest of the module is the root unit. Gradients are averaged over processes as they are reduce-scattered, so with
each process averaging its loss over its share of the batch, a step equals one process's step on the whole batch.

State dicts go through torch.distributed.checkpoint.state_dict as full (unsharded) tensors on the CPU, which works
the same for a sharded and a plain module: checkpoints do not depend on how many processes wrote them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass

import torch
import torch.distributed as dist
import torch.nn as nn
from torch.distributed.checkpoint.state_dict import (StateDictOptions, get_model_state_dict,
                                                     get_optimizer_state_dict, set_model_state_dict,
                                                     set_optimizer_state_dict)
from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

from camera.errors import InputError

FULL = StateDictOptions(full_state_dict=True, cpu_offload=True)


@dataclass(frozen=True)
class Dist:
    rank: int = 0
    world: int = 1
    device: torch.device = torch.device("cpu")

    @property
    def main(self) -> bool:
        return self.rank == 0

    def positions(self, batch: int) -> range:
        """This process's positions in a global batch of `batch` clips."""
        if batch % self.world:
            raise ValueError(f"a batch of {batch} does not split over {self.world} processes")
        share = batch // self.world
        return range(self.rank * share, (self.rank + 1) * share)

    def barrier(self) -> None:
        if self.world > 1:
            dist.barrier()

    def mean(self, value: float) -> float:
        """The average of a number over the processes (for logging)."""
        if self.world == 1:
            return value
        t = torch.tensor([value], dtype=torch.float64, device=self.device)
        dist.all_reduce(t)
        return float(t) / self.world


def setup(device: str = "auto") -> Dist:
    """One process, or this process of a torchrun launch (RANK, WORLD_SIZE, LOCAL_RANK in the environment): nccl
    between GPUs, gloo between CPU processes."""
    cuda = torch.cuda.is_available() if device == "auto" else device == "cuda"
    if cuda and not torch.cuda.is_available():  # torch's own assertion was a traceback, after run.json was written
        raise InputError("command line", "--device", "cuda was asked for but no CUDA GPU is available")
    world = int(os.environ.get("WORLD_SIZE", "1"))
    if world == 1:
        return Dist(device=torch.device("cuda" if cuda else "cpu"))
    rank, local = int(os.environ["RANK"]), int(os.environ.get("LOCAL_RANK", "0"))
    if cuda:
        torch.cuda.set_device(local)
    if not dist.is_initialized():
        dist.init_process_group("nccl" if cuda else "gloo")
    return Dist(rank, world, torch.device("cuda", local) if cuda else torch.device("cpu"))


def teardown(d: Dist) -> None:
    if d.world > 1 and dist.is_initialized():
        dist.destroy_process_group()


def shard(module: nn.Module, units, d: Dist, forward_methods: tuple[str, ...] = (),
          reshard_after_forward: bool = True) -> nn.Module:
    """fully_shard each of `units` (submodules that are called, so their hooks fire), then the module itself.

    forward_methods: other entry points than forward (the generator's `step`) that must gather the root's parameters.
    reshard_after_forward=False keeps gathered parameters until the backward (ZeRO-2: what APT2 uses for the
    generator during student forcing, whose many small steps would otherwise gather the same weights again and again).
    """
    if d.world == 1:
        return module
    for unit in units:
        fully_shard(unit, reshard_after_forward=reshard_after_forward)
    fully_shard(module, reshard_after_forward=reshard_after_forward)
    for name in forward_methods:
        register_fsdp_forward_method(module, name)
    return module


def full_state(module: nn.Module) -> dict[str, torch.Tensor]:
    """The module's whole state dict on the CPU (a collective when sharded: every process calls it)."""
    return get_model_state_dict(module, options=FULL)


def load_full_state(module: nn.Module, state: dict[str, torch.Tensor]) -> None:
    set_model_state_dict(module, state, options=StateDictOptions(full_state_dict=True, strict=True))


def full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer) -> dict:
    """{'state': {param name: {key: tensor}}, 'param_groups': [...]}: keyed by names, so it fits any sharding."""
    return get_optimizer_state_dict(module, optimizer, options=FULL)


def load_full_optimizer_state(module: nn.Module, optimizer: torch.optim.Optimizer, state: dict) -> None:
    set_optimizer_state_dict(module, optimizer, state, options=StateDictOptions(full_state_dict=True))
