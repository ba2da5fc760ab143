"""Where a steady-state streaming step's time goes: torch.profiler over eager steps of a generated world.

    python scripts/profile_step.py --config apt2-8b --device cuda     (random weights, as the bench uses them)

Eager on purpose (no CUDA graphs): the profiler names each kernel. Prints the step's own timing and the operators
sorted by device time (CPU time on the CPU).
"""
import argparse
import sys
from pathlib import Path

import numpy as np
import torch
from torch.profiler import ProfilerActivity, profile

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from explorer.bench import trajectory  # noqa: E402
from model.config import get_config  # noqa: E402
from world.base import FRAMES_PER_STEP  # noqa: E402
from world.generated import GeneratedWorld  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--config", default="mini")
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--steps", type=int, default=2, help="profiled steps, after the window has filled")
    args = parser.parse_args()
    device = torch.device(args.device)
    world = GeneratedWorld.random(get_config(args.config), device)
    world.graphs = None
    fill = world.config.generator.window + 4
    poses = trajectory(fill + args.steps)
    first = np.random.default_rng(0).integers(0, 256, (world.size[1], world.size[0], 3), dtype=np.uint8)
    world.reset_from_frame(first, poses[0], seed=0)
    chunk = lambda i: poses[1 + i * FRAMES_PER_STEP: 1 + (i + 1) * FRAMES_PER_STEP]  # noqa: E731
    for i in range(fill):
        world.step(chunk(i))
    activities = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if device.type == "cuda" else [])
    with profile(activities=activities) as prof:
        for i in range(fill, fill + args.steps):
            world.step(chunk(i))
    print(world.last_timing)
    key = "cuda_time_total" if device.type == "cuda" else "cpu_time_total"
    print(prof.key_averages().table(sort_by=key, row_limit=30, max_name_column_width=60))


if __name__ == "__main__":
    main()
