"""`explorer bench`: the JSON fields, the compute-efficiency numbers, --threads and --window (tiny config)."""
import json

import pytest
import torch

from camera.errors import InputError
from explorer.cli import build_parser
from explorer.bench import count_step_flops, main, matmul_peak_gflops, run_bench, trajectory
from world.generated import GeneratedWorld


@pytest.fixture(scope="module")
def tiny_result():
    threads = torch.get_num_threads()
    try:
        yield run_bench("tiny", "cpu", seconds=1.0, baseline_steps=2, warmup=2, threads=1)
    finally:
        torch.set_num_threads(threads)


def test_reports_the_old_and_the_new_fields_with_sane_values(tiny_result):
    r = tiny_result
    for field in ("config", "device", "dtype", "size", "fps", "step_ms_p50", "step_ms_p99", "decode_ms_p50",
                  "rss_mb_start", "rss_mb_end", "baselines", "gflop_per_step", "achieved_gflops", "mfu",
                  "peak_gflops", "threads", "window"):
        assert field in r, field
    assert r["config"] == "tiny" and r["size"] == [64, 32] and r["window"] == 3
    assert r["threads"] == 1 and "1 threads" in r["device"]
    assert set(r["baselines"]) == {"no_kv_cache", "ar_diffusion_4step"}
    assert 0 < r["gflop_per_step"] < 10
    # achieved = FLOPs over the mean step time, and the step is slower than the pure GEMM peak
    assert r["achieved_gflops"] == pytest.approx(r["gflop_per_step"] * r["fps"] / 4, rel=1e-6)
    assert set(r["peak_gflops"]) == {"bfloat16", "float32"} and all(v > 0 for v in r["peak_gflops"].values())
    assert 0 < r["mfu"] < 1
    assert r["mfu"] == pytest.approx(r["achieved_gflops"] / r["peak_gflops"][r["dtype"]])
    json.dumps(r)  # one JSON object


def test_flop_count_includes_attention_and_grows_with_the_window():
    """The CPU attention kernel is counted: a longer window (more keys per query) means more FLOPs per step."""
    flops = []
    for window in (1, 3):  # tiny: 64x32, patch 1, 48 tokens per latent frame
        world = GeneratedWorld.random(_tiny_with_window(window), torch.device("cpu"))
        poses = trajectory(window + 2)
        world.reset_from_frame(torch.zeros(32, 64, 3, dtype=torch.uint8).numpy(), poses[0], seed=0)
        for i in range(window + 1):  # fill the window (sink + window frames)
            world.step(poses[1 + 4 * i: 5 + 4 * i])
        flops.append(count_step_flops(world, poses[-4:]))
    assert flops[1] > flops[0] > 0


def test_counting_leaves_the_stream_unchanged():
    world = GeneratedWorld.random(_tiny_with_window(3), torch.device("cpu"))
    poses = trajectory(4)
    world.reset_from_frame(torch.zeros(32, 64, 3, dtype=torch.uint8).numpy(), poses[0], seed=0)
    world.step(poses[1:5])
    state = world.state()
    expected = world.step(poses[5:9])
    world.restore(state)
    count_step_flops(world, poses[5:9])
    assert (world.step(poses[5:9]) == expected).all()


def test_threads_window_and_baseline_steps_options_reach_the_run(capsys):
    args = build_parser().parse_args(["bench", "--config", "tiny", "--device", "cpu", "--seconds", "0.5",
                                      "--threads", "1", "--window", "2", "--baseline-steps", "3", "--json"])
    threads = torch.get_num_threads()
    try:
        assert main(args) == 0
    finally:
        torch.set_num_threads(threads)
    r = json.loads(capsys.readouterr().out)
    assert r["threads"] == 1 and r["window"] == 2 and r["baseline_steps"] == 3


@pytest.mark.parametrize("kwargs, field", [({"threads": 0}, "--threads"), ({"window": 0}, "--window"),
                                           ({"window": 5, "checkpoint": "x.safetensors"}, "--window")])
def test_bad_options_are_input_errors(kwargs, field):
    with pytest.raises(InputError, match=field):
        run_bench("tiny", "cpu", seconds=0.5, **kwargs)


def test_a_checkpoint_of_another_config_than_named_is_refused(tmp_path):
    from camera.embedding import CameraScaling
    from model.checkpoint import save_checkpoint
    world = GeneratedWorld.open(device="cpu", random_config="tiny")
    path = tmp_path / "tiny.safetensors"
    save_checkpoint(path, world.config, world.vae, world.generator, CameraScaling().to_dict(), "diffusion")
    with pytest.raises(InputError, match=r"tiny\.safetensors: config: is a tiny model, not --config mini"):
        run_bench("mini", "cpu", seconds=0.5, checkpoint=str(path))


def test_a_config_other_than_the_shipped_models_does_not_load_it(monkeypatch):
    # bench --config tiny read the whole shipped mini (27 MiB, and its warnings) only to put it aside
    from explorer.bench import open_world
    from model.checkpoint import default_checkpoint_path, stored_config_name
    assert stored_config_name(default_checkpoint_path()) == "mini"

    def refuse(*args, **kwargs):
        raise AssertionError("the shipped model was opened")
    monkeypatch.setattr(GeneratedWorld, "open", refuse)
    world, weights = open_world("tiny", "cpu", None)
    assert weights == "random" and world.config.name == "tiny"


def test_matmul_peak_is_positive_on_the_cpu():
    assert matmul_peak_gflops(torch.device("cpu"), torch.float32, repeats=1) > 0


def test_bench_on_cuda_reports_the_gpu_peak():
    if not torch.cuda.is_available():
        print("skipped: no CUDA device")
        pytest.skip("no CUDA device: the GPU bench needs one")
    r = run_bench("tiny", "cuda", seconds=1.0, baseline_steps=2, warmup=2)
    assert r["dtype"] == "bfloat16" and 0 < r["mfu"] < 1 and r["gflop_per_step"] > 0
    assert 0 < r["gpu_mb_start"] <= r["gpu_mb_peak"] and r["gpu_mb_end"] <= r["gpu_mb_peak"]


def _tiny_with_window(window: int):
    from dataclasses import replace

    from model.config import get_config
    cfg = get_config("tiny")
    cfg.generator = replace(cfg.generator, window=window)
    return cfg


def test_a_baseline_out_of_memory_is_reported_and_the_rest_still_measured(monkeypatch):
    import explorer.bench as bench
    measure = bench.measure_baseline

    def no_memory_for_no_cache(world, kind, steps):
        if kind == "no_kv_cache":
            raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 80.00 GiB\nmore detail")
        return measure(world, kind, steps)

    monkeypatch.setattr(bench, "measure_baseline", no_memory_for_no_cache)
    r = run_bench("tiny", "cpu", seconds=0.5, baseline_steps=2, warmup=2)
    assert r["baselines"]["no_kv_cache"] == {"error": "out of memory: CUDA out of memory. Tried to allocate 80.00 GiB"}
    assert r["baselines"]["ar_diffusion_4step"]["speedup"] > 0 and r["fps"] > 0


def test_the_memory_at_the_start_is_taken_once_the_window_is_full(monkeypatch):
    """Attention's buffers grow with the history until the KV cache's window is full: memory taken before then
    reads as growth (14 MB on the shipped model from step 6) where the steady state is flat."""
    from explorer import bench
    from model.config import get_config
    measure, warmups = bench.measure_stream, []

    def recorded(world, steps, warmup):
        warmups.append(warmup)
        return measure(world, steps, warmup)

    monkeypatch.setattr(bench, "measure_stream", recorded)
    run_bench("tiny", "cpu", seconds=0.5, baseline_steps=2, warmup=2)
    assert warmups[0] > get_config("tiny").generator.window + 1
