"""The causal 3D VAE: shapes, causality, streaming decode against the full decode, constant cache, sizes."""
import numpy as np
import pytest
import torch

from model.config import CONFIGS, get_config
from model.vae import VAE, from_uint8, sample_latent, to_uint8

CFG = get_config("tiny")  # 64x32 frames -> 8x4 latents with 4 channels


@pytest.fixture(scope="module")
def vae():
    torch.manual_seed(0)
    return VAE(CFG.vae).eval()


def clip(frames: int, batch: int = 2, seed: int = 1) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, CFG.height, CFG.width, generator=g) * 2 - 1


def latents(frames: int, batch: int = 2, seed: int = 2) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed)
    w, h = CFG.latent_size()
    return torch.randn(batch, CFG.vae.latent_channels, frames, h, w, generator=g)


@pytest.mark.parametrize("k", [0, 1, 3])
def test_shapes_one_plus_4k_frames_to_one_plus_k_latents(vae, k):
    w, h = CFG.latent_size()
    with torch.no_grad():
        mean, logvar = vae.encode(clip(1 + 4 * k))
        assert mean.shape == logvar.shape == (2, CFG.vae.latent_channels, 1 + k, h, w)
        video = vae.decode(mean)
    assert video.shape == (2, 3, 1 + 4 * k, CFG.height, CFG.width)


def test_clip_lengths_other_than_one_plus_4k_are_refused(vae):
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        vae.encode(clip(4))


def test_encoder_is_causal_and_encodes_the_first_frame_alone(vae):
    x = clip(13)
    y = x.clone()
    y[:, :, 5] = -y[:, :, 5]  # frame 5 belongs to latent 2 (frames 5..8)
    with torch.no_grad():
        a, b = vae.encode(x)[0], vae.encode(y)[0]
        first = vae.encode_first(x[:, :, 0])
    assert torch.allclose(a[:, :, :2], b[:, :, :2], atol=1e-6)
    assert not torch.allclose(a[:, :, 2], b[:, :, 2], atol=1e-3)
    assert torch.allclose(first, a[:, :, :1], atol=1e-5)


def test_decoder_is_causal(vae):
    z = latents(4)
    z2 = z.clone()
    z2[:, :, 2] += 1.0  # latent 2 decodes to frames 5..8
    with torch.no_grad():
        a, b = vae.decode(z), vae.decode(z2)
    assert torch.allclose(a[:, :, :5], b[:, :, :5], atol=1e-6)
    assert not torch.allclose(a[:, :, 5:9], b[:, :, 5:9], atol=1e-3)


def test_streaming_decode_equals_full_decode(vae):
    z = latents(5)  # k = 4
    with torch.no_grad():
        full = vae.decode(z)
        cache = vae.decoder_cache()
        parts = [vae.decode_step(z[:, :, i:i + 1], cache) for i in range(z.shape[2])]
    assert [p.shape[2] for p in parts] == [1, 4, 4, 4, 4]
    assert (torch.cat(parts, dim=2) - full).abs().max().item() <= 1e-4


def test_decoder_cache_memory_is_constant(vae):
    z = latents(8, batch=1)
    cache = vae.decoder_cache()
    sizes = []
    with torch.no_grad():
        for i in range(z.shape[2]):
            vae.decode_step(z[:, :, i:i + 1], cache)
            sizes.append(cache.nbytes())
            # every cached tensor owns exactly its own bytes: no view keeping a whole activation alive
            assert cache.nbytes() == sum(t.numel() * t.element_size() for t in cache.frames.values())
    assert sizes[0] > 0 and len(set(sizes)) == 1


def test_cache_clone_branches_identically(vae):
    z = latents(4, batch=1)
    with torch.no_grad():
        cache = vae.decoder_cache()
        for i in range(2):
            vae.decode_step(z[:, :, i:i + 1], cache)
        branch = cache.clone()
        a = vae.decode_step(z[:, :, 2:3], cache)
        b = vae.decode_step(z[:, :, 2:3], branch)
    assert torch.equal(a, b)


def test_decode_is_deterministic(vae):
    z = latents(3)
    with torch.no_grad():
        assert torch.equal(vae.decode(z), vae.decode(z))


def test_bfloat16_streaming_stays_close_to_float32(vae):
    z = latents(3, batch=1)
    low = VAE(CFG.vae).eval()
    low.load_state_dict(vae.state_dict())
    low = low.to(torch.bfloat16)
    with torch.no_grad():
        ref = vae.decode(z)
        cache = low.decoder_cache()
        out = torch.cat([low.decode_step(z[:, :, i:i + 1], cache) for i in range(3)], dim=2)
    assert out.dtype == torch.bfloat16
    assert (out.float() - ref).abs().max().item() < 0.1 * ref.abs().max().item()


@pytest.mark.parametrize("name", list(CONFIGS))
def test_decoder_is_lighter_than_encoder(name):
    with torch.device("meta"):  # shapes only: the apt2-8b VAE is not allocated
        model = VAE(get_config(name).vae)
    enc = sum(p.numel() for p in model.encoder.parameters())
    dec = sum(p.numel() for p in model.decoder.parameters())
    assert dec < enc


def test_apt2_8b_vae_is_seaweed_sized():
    with torch.device("meta"):
        model = VAE(get_config("apt2-8b").vae)
    params = sum(p.numel() for p in model.parameters())
    assert 150e6 < params < 350e6  # Seaweed's 48x VAE: 250.6M


def test_uint8_round_trip():
    frames = np.random.default_rng(0).integers(0, 256, size=(5, 8, 16, 3), dtype=np.uint8)
    x = from_uint8(frames)
    assert x.shape == (3, 5, 8, 16) and x.dtype == torch.float32
    assert x.min() >= -1 and x.max() <= 1
    assert np.array_equal(to_uint8(x), frames)
    assert np.array_equal(to_uint8(from_uint8(frames[None])), frames[None])  # batched (B, T, H, W, 3)


def test_to_uint8_clips_out_of_range_values():
    x = torch.tensor([-3.0, -1.0, 0.0, 1.0, 3.0]).reshape(1, 1, 1, 5).expand(3, 1, 1, 5)
    assert to_uint8(x)[0, 0, :, 0].tolist() == [0, 0, 128, 255, 255]


def test_sample_latent_is_reparameterised():
    mean = torch.full((4, 64, 64), 2.0, requires_grad=True)
    logvar = torch.full((4, 64, 64), np.log(0.25), requires_grad=True)
    z = sample_latent(mean, logvar, torch.randn(mean.shape, generator=torch.Generator().manual_seed(0)))
    assert abs(z.mean().item() - 2.0) < 0.02 and abs(z.std().item() - 0.5) < 0.02
    z.sum().backward()
    assert mean.grad is not None and logvar.grad is not None
    assert torch.allclose(mean.grad, torch.ones_like(mean))
    assert torch.allclose(logvar.grad, 0.5 * (z.detach() - 2.0), atol=1e-5)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="no CUDA device: streaming decode on GPU not checked")
def test_streaming_decode_equals_full_decode_on_cuda(vae):
    gpu = VAE(CFG.vae).eval().cuda()
    gpu.load_state_dict(vae.state_dict())
    z = latents(4).cuda()
    with torch.no_grad():
        full = gpu.decode(z)
        cache = gpu.decoder_cache()
        parts = [gpu.decode_step(z[:, :, i:i + 1], cache) for i in range(4)]
    assert (torch.cat(parts, dim=2) - full).abs().max().item() <= 1e-4
