"""CUDA paths: the flash-attn backend against SDPA, and bf16 streaming against fp32 (skipped without a GPU)."""
import dataclasses

import pytest
import torch

if not torch.cuda.is_available():
    pytest.skip("no CUDA device: the flash-attn and bf16 GPU checks need one", allow_module_level=True)

from model import attention as attention_module  # noqa: E402
from model.attention import attention  # noqa: E402
from model.generator import GENERATOR_PRESETS, Generator  # noqa: E402


def test_flash_equals_sdpa_in_bf16():
    if attention_module.flash_attn_func is None:
        pytest.skip("flash_attn is not installed")
    g = torch.Generator(device="cuda").manual_seed(0)
    q, k, v = (torch.randn(2, 4, 300, 64, device="cuda", dtype=torch.bfloat16, generator=g) for _ in range(3))
    k = k[:, :, :250]  # queries and keys of different lengths, as in the streaming step
    v = v[:, :, :250]
    flash, sdpa = attention(q, k, v, backend="flash"), attention(q, k, v, backend="sdpa")
    assert (flash.float() - sdpa.float()).abs().max() <= 2e-2


@torch.no_grad()
def test_bf16_streaming_on_cuda_matches_fp32():
    torch.manual_seed(0)
    cfg = dataclasses.replace(GENERATOR_PRESETS["tiny"], dim=128, heads=2, depth=3, window=3)
    gen = Generator(cfg).cuda().eval()
    torch.nn.init.normal_(gen.head.linear.weight, std=0.2)
    w, h = cfg.latent_size
    frames = 8
    noisy, prev = (torch.randn(1, cfg.latent_channels, frames, h, w, device="cuda") for _ in range(2))
    cam = torch.randn(1, cfg.camera_inputs(), frames, h, w, device="cuda")
    t = torch.ones(1, device="cuda")

    def stream(model, dtype):
        cache = model.new_cache(1, device="cuda", dtype=dtype)
        return torch.cat([model.step(noisy[:, :, i:i + 1], prev[:, :, i:i + 1], cam[:, :, i:i + 1], t, cache)
                          for i in range(frames)], dim=2).float()

    reference = stream(gen, torch.float32)
    assert (reference - gen(noisy, prev, cam, t)).abs().max() <= 1e-3  # fp32 streaming = masked forward on CUDA
    half = stream(gen.to(torch.bfloat16), torch.bfloat16)
    assert (half - reference).abs().max() <= 0.05 * reference.abs().max()


@torch.no_grad()
def test_cuda_graph_steps_equal_eager_steps_through_the_ring_and_a_rewind():
    """world/cuda_graphs.py: once the cache is full, GeneratedWorld replays one graph per ring slot and one for the
    decode; the frames must be those of the eager step, through two turns of the ring and after a rewind."""
    import numpy as np

    from camera.trajectories import random_trajectory
    from model.config import get_config
    from world.generated import GeneratedWorld
    from world.level import list_levels

    level = list_levels()[0]
    poses = random_trajectory(np.random.default_rng(2), 1 + 4 * 12, level.start)
    first = np.random.default_rng(3).integers(0, 256, (32, 64, 3), dtype=np.uint8)  # tiny's 64x32 frame
    chunks = [poses[1 + 4 * i: 5 + 4 * i] for i in range(12)]  # tiny's window is 3: 4 ring slots, graphs from step 4

    def stream(graphs: bool):
        world = GeneratedWorld.random(get_config("tiny"), torch.device("cuda"))
        torch.nn.init.normal_(world.generator.head.linear.weight, std=0.05)  # random init outputs v = 0 exactly
        if not graphs:
            world.graphs = None
        world.reset_from_frame(first, poses[0], seed=5)  # not reset(level): the GPU machine may lack moderngl
        frames = [world.step(c) for c in chunks[:8]]
        snapshot = world.state()
        frames += [world.step(c) for c in chunks[8:]]
        world.restore(snapshot)
        frames += [world.step(c) for c in chunks[8:]]
        return world, np.stack(frames).astype(int)

    graphed, with_graphs = stream(True)
    _, eager = stream(False)
    assert len(graphed.graphs.step_graphs) == 4 and graphed.graphs.decode_graph is not None
    assert np.abs(with_graphs - eager).max() <= 1
    assert np.array_equal(with_graphs[8:12], with_graphs[12:])  # the rewind replays the same frames
