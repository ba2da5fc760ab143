"""`explorer bench`: steady-state streaming speed of the generated world, with two baselines in the same run.

DESIGN section 7. The main measurement streams `seconds` of video (6 latent steps per second) through
GeneratedWorld.step, exactly the client's per-step work: camera embedding, one generator forward with the KV cache,
one streaming decode. The baselines run the same generator and decoder on the same inputs:
- no_kv_cache: no cache; every step recomputes the sink and the whole window with the block-causal forward;
- ar_diffusion_4step: a 4-step sampler (four denoising passes that read the cache without writing it, then a
  cache-refresh pass on the clean frame), as Self-Forcing and CausVid do.
Baselines are measured once their window is full, so all three are steady-state numbers.
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import deque

import numpy as np
import torch
from tqdm import tqdm

from camera.pose import Pose
from camera.trajectories import random_trajectory
from world.base import FPS, FRAMES_PER_STEP
from world.generated import GeneratedWorld, pick_device

STEPS_PER_SECOND = FPS // FRAMES_PER_STEP


def rss_mb() -> float:
    """Resident memory of this process, from /proc (Linux) or getrusage's peak elsewhere."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmRSS:"):
                    return int(line.split()[1]) / 1024
    except OSError:
        pass
    import resource
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def open_world(config: str, device: str, checkpoint) -> tuple[GeneratedWorld, str]:
    """The shipped (or given) checkpoint when it is of `config`, else random weights; says which."""
    from model.checkpoint import default_checkpoint_path, load_checkpoint  # noqa: F401
    path = checkpoint or default_checkpoint_path()
    if checkpoint is not None or os.path.exists(path):
        world = GeneratedWorld.open(checkpoint=path, device=device)
        if world.config.name == config or checkpoint is not None:
            return world, str(path)
    return GeneratedWorld.open(device=device, random_config=config), "random"


def trajectory(steps: int) -> list[Pose]:
    """A person-like walk, so the camera input is realistic (the cost does not depend on it)."""
    return random_trajectory(np.random.default_rng(0), 1 + steps * FRAMES_PER_STEP, Pose((0.0, 1.7, 0.0)))


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def measure_stream(world: GeneratedWorld, steps: int, warmup: int) -> dict:
    poses = trajectory(warmup + steps)
    first = np.random.default_rng(0).integers(0, 256, (world.size[1], world.size[0], 3), dtype=np.uint8)
    world.reset_from_frame(first, poses[0], seed=0)
    total, gen, dec = [], [], []
    rss_start = None
    for i in tqdm(range(warmup + steps), desc=f"bench {world.config.name}", unit="step", file=sys.stderr):
        if i == warmup:
            rss_start = rss_mb()
        start = time.perf_counter()
        world.step(poses[1 + i * FRAMES_PER_STEP: 1 + (i + 1) * FRAMES_PER_STEP])
        elapsed = (time.perf_counter() - start) * 1e3
        if i >= warmup:
            total.append(elapsed)
            gen.append(world.last_timing["generator_ms"])
            dec.append(world.last_timing["decode_ms"])
    return {"total": total, "generator": gen, "decode": dec, "rss_start": rss_start, "rss_end": rss_mb()}


@torch.inference_mode()
def measure_baseline(world: GeneratedWorld, kind: str, steps: int) -> dict:
    """Per-step ms of a baseline over `steps` steady-state steps (after the window has filled)."""
    g, vae = world.generator, world.vae
    cfg = g.config
    dev, dt = world.device, world.dtype
    C, (w, h) = cfg.latent_channels, world.latent_size
    gen = torch.Generator(device="cpu").manual_seed(0)
    rand = lambda *shape: torch.randn(shape, generator=gen).to(dev, dt)  # noqa: E731
    prev, decoder = rand(1, C, 1, h, w), vae.decoder_cache()
    vae.decode_step(prev, decoder)
    cache = g.new_cache(1, dev, dt)
    history = deque(maxlen=cfg.window)  # (noisy, prev, cam, position) of the window's frames; the sink kept apart
    sink = None
    times = []
    for i in tqdm(range(cfg.window + 1 + steps), desc=f"baseline {kind}", unit="step", file=sys.stderr):
        noise, cam = rand(1, C, 1, h, w), rand(1, cfg.camera_channels, 1, h, w)
        start = world._clock()
        if kind == "no_kv_cache":
            frames = ([sink] if sink is not None else []) + list(history) + [(noise, prev, cam, i)]
            noisy_all, prev_all, cam_all = (torch.cat([f[j] for f in frames], dim=2) for j in range(3))
            t = torch.ones(1, device=dev, dtype=dt)
            v = g(noisy_all, prev_all, cam_all, t, positions=[f[3] for f in frames])[:, :, -1:]
            latent = noise - v
        else:  # ar_diffusion_4step: Euler from t = 1 to 0 in four passes, then a clean pass refreshes the cache
            latent = noise
            for t0, t1 in ((1.0, 0.75), (0.75, 0.5), (0.5, 0.25), (0.25, 0.0)):
                t = torch.full((1,), t0, device=dev, dtype=dt)
                latent = latent + (t1 - t0) * g.step(latent, prev, cam, t, cache, commit=False)
            g.step(latent, prev, cam, torch.zeros(1, device=dev, dtype=dt), cache, commit=True)
        vae.decode_step(latent, decoder)
        elapsed = (world._clock() - start) * 1e3
        if sink is None:
            sink = (noise, prev, cam, i)
        else:
            history.append((noise, prev, cam, i))
        prev = latent
        if i > cfg.window:
            times.append(elapsed)
    return {"fps": FRAMES_PER_STEP * 1e3 / float(np.mean(times)), "step_ms_p50": percentile(times, 50)}


def run_bench(config: str = "mini", device: str = "auto", seconds: float = 60.0, checkpoint=None,
              baseline_steps: int = 24, warmup: int = 6) -> dict:
    dev = pick_device(device)
    world, weights = open_world(config, device, checkpoint)
    steps = max(1, round(seconds * STEPS_PER_SECOND))
    stream = measure_stream(world, steps, warmup)
    result = {
        "config": world.config.name, "device": describe_device(dev), "dtype": str(world.dtype).removeprefix("torch."),
        "size": list(world.size), "weights": weights, "seconds": seconds, "threads": torch.get_num_threads(),
        "fps": FRAMES_PER_STEP * 1e3 / float(np.mean(stream["total"])),
        "step_ms_p50": percentile(stream["total"], 50), "step_ms_p99": percentile(stream["total"], 99),
        "generator_ms_p50": percentile(stream["generator"], 50),
        "generator_ms_p99": percentile(stream["generator"], 99),
        "decode_ms_p50": percentile(stream["decode"], 50), "decode_ms_p99": percentile(stream["decode"], 99),
        "rss_mb_start": round(stream["rss_start"], 1), "rss_mb_end": round(stream["rss_end"], 1),
        "baselines": {kind: measure_baseline(world, kind, baseline_steps)
                      for kind in ("no_kv_cache", "ar_diffusion_4step")},
    }
    for kind, b in result["baselines"].items():
        b["speedup"] = result["fps"] / b["fps"]
    return result


def describe_device(device: torch.device) -> str:
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def print_report(r: dict) -> None:
    print(f"{r['config']} on {r['device']}, {r['dtype']}, {r['size'][0]}x{r['size'][1]}, weights: {r['weights']}")
    print(f"  stream: {r['fps']:.1f} fps; step p50 {r['step_ms_p50']:.1f} ms, p99 {r['step_ms_p99']:.1f} ms "
          f"(generator p50 {r['generator_ms_p50']:.1f}, decode p50 {r['decode_ms_p50']:.1f})")
    print(f"  memory: {r['rss_mb_start']:.0f} MB at the start, {r['rss_mb_end']:.0f} MB at the end")
    for kind, b in r["baselines"].items():
        print(f"  {kind}: {b['fps']:.1f} fps, step p50 {b['step_ms_p50']:.1f} ms "
              f"(one-forward step is {b['speedup']:.1f}x faster)")


def main(args) -> int:
    result = run_bench(args.config, args.device, args.seconds, args.checkpoint)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0
