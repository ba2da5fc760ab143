"""`explorer bench`: steady-state streaming speed of the generated world, with two baselines in the same run.

DESIGN section 7. The main measurement streams `seconds` of video (6 latent steps per second) through
GeneratedWorld.step, exactly the client's per-step work: camera embedding, one generator forward with the KV cache,
one streaming decode. The baselines run the same generator and decoder on the same inputs:
- no_kv_cache: no cache; every step recomputes the sink and the whole window with the block-causal forward (a
  speed baseline: with more than one block its frames differ slightly from the cached stream's, whose cached keys
  saw up to depth x window frames back through the earlier frames' hidden states, model/generator.py);
- ar_diffusion_4step: a 4-step sampler (four denoising passes that read the cache without writing it, then a
  cache-refresh pass on the clean frame), as Self-Forcing and CausVid do.
- no_cuda_graphs (on a GPU, where the step replays CUDA graphs: world/cuda_graphs.py): the same step run eagerly.
Baselines are measured once their window is full, so all are steady-state numbers.

Compute efficiency: `gflop_per_step` is counted with torch.utils.flop_counter.FlopCounterMode on one steady-state
step (full cache; generator + decode: the matmuls, convolutions and attention, 2 FLOPs per multiply-add);
`achieved_gflops` is that over the mean step time, and `mfu` is that over the matmul peak measured on the same
device in the same run (one large GEMM in the world's dtype; the other dtype's peak is reported beside it).
"""
from __future__ import annotations

import json
import os
import sys
import time
from collections import deque
from dataclasses import replace

import numpy as np
import torch
from torch.utils import flop_counter
from tqdm import tqdm

from camera.errors import InputError
from camera.pose import Pose
from camera.trajectories import random_trajectory
from world.base import FPS, FRAMES_PER_STEP
from model.config import get_config
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


def open_world(config: str | None, device: str, checkpoint, window: int | None = None) -> tuple[GeneratedWorld, str]:
    """The given checkpoint (of `config`, if one is named), else the shipped one when it is of `config` (default
    mini), else random weights of `config`; says which.

    `window` overrides the generator's window (random weights only): the cost of a longer or shorter history.
    """
    from model.checkpoint import default_checkpoint_path, stored_config_name
    if config is not None:
        get_config(config, source="command line: --config")  # an unknown name is refused before any work
    if window is not None:
        if checkpoint is not None:
            raise InputError("command line", "--window", "times random weights only; leave out --checkpoint")
        if window < 1:
            raise InputError("command line", "--window", f"must be at least 1, got {window}")
        cfg = get_config(config or "mini")
        cfg.generator = replace(cfg.generator, window=window)
        return GeneratedWorld.random(cfg, pick_device(device), source="command line: --config"), "random"
    path = checkpoint or default_checkpoint_path()
    if checkpoint is None and config is not None and stored_config_name(path) != config:
        # the shipped model is of another config: not loaded (and warned about) only to be put aside
        return GeneratedWorld.random(get_config(config), pick_device(device), source="command line: --config"), \
            "random"
    if checkpoint is not None or os.path.exists(path):
        world = GeneratedWorld.open(checkpoint=path, device=device)
        if checkpoint is not None and config is not None and world.config.name != config:
            raise InputError(checkpoint, "config", f"is a {world.config.name} model, not --config {config}")
        if world.config.name == (config or "mini") or checkpoint is not None:
            return world, str(path)
    return GeneratedWorld.open(device=device, random_config=config or "mini", random_source="command line: --config"), \
        "random"


def trajectory(steps: int) -> list[Pose]:
    """A person-like walk, so the camera input is realistic (the cost does not depend on it)."""
    return random_trajectory(np.random.default_rng(0), 1 + steps * FRAMES_PER_STEP, Pose((0.0, 1.7, 0.0)))


def percentile(values, q) -> float:
    return float(np.percentile(np.asarray(values), q)) if len(values) else float("nan")


def gpu_mb(device: torch.device) -> float | None:
    """Memory the CUDA caching allocator has handed out on `device` (None off CUDA): flat across a stream, or not."""
    return torch.cuda.memory_allocated(device) / 2**20 if device.type == "cuda" else None


def measure_stream(world: GeneratedWorld, steps: int, warmup: int) -> dict:
    poses = trajectory(warmup + steps)
    first = np.random.default_rng(0).integers(0, 256, (world.size[1], world.size[0], 3), dtype=np.uint8)
    world.reset_from_frame(first, poses[0], seed=0)
    total, gen, dec = [], [], []
    rss_start = gpu_start = None
    for i in tqdm(range(warmup + steps), desc=f"bench {world.config.name}", unit="step", file=sys.stderr):
        if i == warmup:
            rss_start, gpu_start = rss_mb(), gpu_mb(world.device)
        start = time.perf_counter()
        world.step(poses[1 + i * FRAMES_PER_STEP: 1 + (i + 1) * FRAMES_PER_STEP])
        elapsed = (time.perf_counter() - start) * 1e3
        if i >= warmup:
            total.append(elapsed)
            gen.append(world.last_timing["generator_ms"])
            dec.append(world.last_timing["decode_ms"])
    return {"total": total, "generator": gen, "decode": dec, "rss_start": rss_start, "rss_end": rss_mb(),
            "gpu_start": gpu_start, "gpu_end": gpu_mb(world.device)}


def _sdpa_cpu_flops(query_shape, key_shape, value_shape, *args, out_shape=None, **kwargs) -> int:
    # FlopCounterMode counts the CUDA SDPA kernels but not the fused CPU one; same formula (QK^T and PV)
    return flop_counter.sdpa_flop_count(query_shape, key_shape, value_shape)


@torch.inference_mode()
def count_step_flops(world: GeneratedWorld, poses: list[Pose]) -> int:
    """FLOPs of one world step (generator forward + streaming decode) from the world's current state, counted by
    FlopCounterMode on a real step; the state is restored afterwards, so the stream is left as it was."""
    state, backend, graphs = world.state(), world.generator.config.attention_backend, world.graphs
    world.generator.set_attention_backend("sdpa")  # flash_attn's kernel is invisible to the counter; same FLOPs
    world.graphs = None  # and so is a CUDA graph's replay
    mapping = {torch.ops.aten._scaled_dot_product_flash_attention_for_cpu: _sdpa_cpu_flops}
    try:
        with flop_counter.FlopCounterMode(display=False, custom_mapping=mapping) as counter:
            world.step(poses)
    finally:
        world.generator.set_attention_backend(backend)
        world.graphs = graphs
        world.restore(state)
    return counter.get_total_flops()


def matmul_peak_gflops(device: torch.device, dtype: torch.dtype, repeats: int = 5) -> float:
    """The best rate of an n x n GEMM, large enough to saturate the device (n = 2048 on a CPU, 8192 on a GPU)."""
    n = 8192 if device.type == "cuda" else 2048
    g = torch.Generator(device="cpu").manual_seed(0)
    a, b = (torch.randn(n, n, generator=g).to(device, dtype) for _ in range(2))
    best = float("inf")
    for _ in range(repeats + 1):  # the first call warms up (allocation, kernel choice)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        torch.mm(a, b)
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        best = min(best, time.perf_counter() - start)
    return 2 * n ** 3 / best / 1e9


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
    # steps 0..window fill the window; step window + 1, the first of the full shape, warms up (kernel choice)
    for i in tqdm(range(cfg.window + 2 + steps), desc=f"baseline {kind}", unit="step", file=sys.stderr):
        noise, cam = rand(1, C, 1, h, w), rand(1, cfg.camera_inputs(), 1, h, w)
        start = world._clock()
        if kind == "no_kv_cache" and i <= cfg.window:
            latent = noise  # filling the window, untimed: a step's cost does not depend on what its frames hold
        elif kind == "no_kv_cache":
            frames = [sink] + list(history) + [(noise, prev, cam, i)]
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
        if i > cfg.window + 1:
            times.append(elapsed)
    return {"fps": FRAMES_PER_STEP * 1e3 / float(np.mean(times)), "step_ms_p50": percentile(times, 50)}


def run_bench(config: str | None = "mini", device: str = "auto", seconds: float = 60.0, checkpoint=None,
              baseline_steps: int = 24, warmup: int = 6, threads: int | None = None,
              window: int | None = None) -> dict:
    """`threads`: torch's intra-op threads (CPU), process-wide; default: torch's choice (one per core)."""
    dev = pick_device(device)
    if threads is not None:
        if threads < 1:
            raise InputError("command line", "--threads", f"must be at least 1, got {threads}")
        torch.set_num_threads(threads)
    world, weights = open_world(config, device, checkpoint, window)
    world.hold_at_rest = False  # the walk's stops would be timed as no work at all: time the model itself
    steps = max(1, round(seconds * STEPS_PER_SECOND))
    # Past the steps that fill the KV cache's window (attention's buffers grow with the history until it is full:
    # memory measured from step 6 rose 14 MB and then stayed flat), and on a GPU those that capture a graph per
    # ring slot: the start and end memory then compare the steady state.
    window = world.config.generator.window
    warmup = max(warmup, 2 * window + 2 if world.graphs is not None else window + 3)
    stream = measure_stream(world, steps, warmup)
    fps = FRAMES_PER_STEP * 1e3 / float(np.mean(stream["total"]))
    gflop = count_step_flops(world, trajectory(1)[1:]) / 1e9
    achieved = gflop * 1e3 / float(np.mean(stream["total"]))
    peaks = {str(dt).removeprefix("torch."): matmul_peak_gflops(dev, dt) for dt in (torch.bfloat16, torch.float32)}
    dtype = str(world.dtype).removeprefix("torch.")
    result = {
        "config": world.config.name, "device": describe_device(dev), "dtype": dtype,
        "size": list(world.size), "weights": weights, "seconds": seconds, "threads": torch.get_num_threads(),
        "window": world.config.generator.window, "baseline_steps": baseline_steps,
        "fps": fps,
        "step_ms_p50": percentile(stream["total"], 50), "step_ms_p99": percentile(stream["total"], 99),
        "generator_ms_p50": percentile(stream["generator"], 50),
        "generator_ms_p99": percentile(stream["generator"], 99),
        "decode_ms_p50": percentile(stream["decode"], 50), "decode_ms_p99": percentile(stream["decode"], 99),
        "rss_mb_start": round(stream["rss_start"], 1), "rss_mb_end": round(stream["rss_end"], 1),
        "gflop_per_step": gflop, "achieved_gflops": achieved,
        "peak_gflops": peaks, "mfu": achieved / peaks[dtype],
        "baselines": {kind: measure_baseline_or_oom(world, kind, baseline_steps)
                      for kind in ("no_kv_cache", "ar_diffusion_4step")},
    }
    if dev.type == "cuda":
        result.update(gpu_mb_start=round(stream["gpu_start"], 1), gpu_mb_end=round(stream["gpu_end"], 1),
                      gpu_mb_peak=round(torch.cuda.max_memory_allocated(dev) / 2**20, 1))
    result["cuda_graphs"] = world.graphs is not None
    if world.graphs is not None:  # the same stream stepped eagerly: what the graphs gain
        graphs, world.graphs = world.graphs, None
        eager = measure_stream(world, baseline_steps, warmup=world.config.generator.window + 1)["total"]
        world.graphs = graphs
        result["baselines"]["no_cuda_graphs"] = {"fps": FRAMES_PER_STEP * 1e3 / float(np.mean(eager)),
                                                 "step_ms_p50": percentile(eager, 50)}
    for kind, b in result["baselines"].items():
        if "fps" in b:
            b["speedup"] = result["fps"] / b["fps"]
    return result


def measure_baseline_or_oom(world: GeneratedWorld, kind: str, steps: int) -> dict:
    """A baseline that runs out of memory (the no-cache forward over a long window of a large model) is reported
    as such, and the rest of the run's numbers still come out."""
    try:
        return measure_baseline(world, kind, steps)
    except torch.OutOfMemoryError as error:
        torch.cuda.empty_cache()
        return {"error": f"out of memory: {str(error).splitlines()[0]}"}


def describe_device(device: torch.device) -> str:
    """The device in bench's and eval's JSON: a GPU's name, or the CPU with its cores and torch's threads."""
    if device.type == "cuda":
        return torch.cuda.get_device_name(device)
    return f"cpu ({os.cpu_count()} cores, {torch.get_num_threads()} threads)"


def print_report(r: dict) -> None:
    print(f"{r['config']} on {r['device']}, {r['dtype']}, {r['size'][0]}x{r['size'][1]}, window {r['window']}, "
          f"weights: {r['weights']}")
    print(f"  stream: {r['fps']:.1f} fps; step p50 {r['step_ms_p50']:.1f} ms, p99 {r['step_ms_p99']:.1f} ms "
          f"(generator p50 {r['generator_ms_p50']:.1f}, decode p50 {r['decode_ms_p50']:.1f})")
    print(f"  memory: {r['rss_mb_start']:.0f} MB at the start, {r['rss_mb_end']:.0f} MB at the end")
    if "gpu_mb_start" in r:
        print(f"  GPU memory: {r['gpu_mb_start']:.0f} MB at the start, {r['gpu_mb_end']:.0f} MB at the end, "
              f"{r['gpu_mb_peak']:.0f} MB at the peak")
    peaks = ", ".join(f"{dt} {g:.0f}" for dt, g in r["peak_gflops"].items())
    print(f"  compute: {r['gflop_per_step']:.2f} GFLOP per step, {r['achieved_gflops']:.1f} GFLOP/s achieved; "
          f"matmul peak {peaks} GFLOP/s; MFU {100 * r['mfu']:.1f}%")
    for kind, b in r["baselines"].items():
        if "error" in b:
            print(f"  {kind}: {b['error']}")
            continue
        print(f"  {kind}: {b['fps']:.1f} fps, step p50 {b['step_ms_p50']:.1f} ms "
              f"(one-forward step is {b['speedup']:.1f}x faster)")


def main(args) -> int:
    result = run_bench(args.config, args.device, args.seconds, args.checkpoint, threads=args.threads,
                       window=args.window, baseline_steps=args.baseline_steps)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    return 0
