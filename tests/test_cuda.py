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
