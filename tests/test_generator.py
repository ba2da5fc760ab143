"""The block-causal generator: streaming with the KV cache equals the masked forward; the sink and the window."""
import dataclasses
import json

import pytest
import torch

from model.attention import attention
from model.generator import GENERATOR_PRESETS, Generator, GeneratorConfig, block_causal_mask, warp_latent


def make_generator(depth=2, window=3, seed=0) -> Generator:
    """A tiny fp32 generator whose output layer is random (it starts at zero, which would hide every difference)."""
    torch.manual_seed(seed)
    cfg = dataclasses.replace(GENERATOR_PRESETS["tiny"], depth=depth, window=window, disc_layers=(), warp_gate=True)
    gen = Generator(cfg).eval()
    torch.nn.init.normal_(gen.head.linear.weight, std=0.2)
    torch.nn.init.normal_(gen.gate.weight, std=0.2)
    return gen


def make_inputs(cfg: GeneratorConfig, batch: int, frames: int, seed=1):
    g = torch.Generator().manual_seed(seed)
    w, h = cfg.latent_size
    latent = lambda: torch.randn(batch, cfg.latent_channels, frames, h, w, generator=g)
    cam = torch.randn(batch, cfg.camera_inputs(), frames, h, w, generator=g)
    return latent(), latent(), cam, torch.rand(batch, generator=g)


def stream(gen, noisy, prev, cam, t, cache=None):
    """Step frame by frame; returns v (B, C, T, h, w) and the cache."""
    cache = cache or gen.new_cache(noisy.shape[0])
    out = [gen.step(noisy[:, :, i:i + 1], prev[:, :, i:i + 1], cam[:, :, i:i + 1], t, cache)
           for i in range(noisy.shape[2])]
    return torch.cat(out, dim=2), cache


@torch.no_grad()
def test_streaming_equals_block_causal_forward():
    gen = make_generator(depth=2, window=3)
    inputs = make_inputs(gen.config, batch=2, frames=8)
    full = gen(*inputs)
    streamed, _ = stream(gen, *inputs)
    assert full.abs().mean() > 0.1
    assert (streamed - full).abs().max() <= 1e-4


@torch.no_grad()
def test_window_recomputed_at_absolute_positions_matches_stream():
    """The no-cache baseline: sink + last N + current frame through forward(positions=...) gives the stream's
    last frame (exactly the receptive field for one block)."""
    gen = make_generator(depth=1, window=3)
    noisy, prev, cam, t = make_inputs(gen.config, batch=1, frames=9)
    streamed, _ = stream(gen, noisy, prev, cam, t)
    keep = [0, 5, 6, 7, 8]
    recomputed = gen(noisy[:, :, keep], prev[:, :, keep], cam[:, :, keep], t, positions=keep)
    assert (recomputed[:, :, -1] - streamed[:, :, -1]).abs().max() <= 1e-4


@torch.no_grad()
def test_cache_memory_is_constant_past_the_window():
    gen = make_generator(window=3)
    inputs = make_inputs(gen.config, batch=1, frames=3 * 3 + 2)
    cache = gen.new_cache(1)
    pointers = [b.data_ptr() for b in cache.k + cache.v]
    nbytes = cache.nbytes()
    stream(gen, *inputs, cache=cache)
    assert cache.steps == 11
    assert [b.data_ptr() for b in cache.k + cache.v] == pointers
    # slots: the sink, the window and the frame being stepped
    assert cache.nbytes() == nbytes == 2 * 2 * (2 + 3) * gen.config.tokens_per_frame() * gen.config.dim * 4


@pytest.mark.parametrize("depth", [1, 2])
@torch.no_grad()
def test_sink_is_always_seen_and_the_window_ends(depth):
    """Frame f sees the sink and, through `depth` blocks of an N-frame window, frames f - depth * N .. f."""
    window, frames = 3, 10
    gen = make_generator(depth=depth, window=window)
    noisy, prev, cam, t = make_inputs(gen.config, batch=1, frames=frames)
    last = frames - 1
    edge = last - depth * window  # the earliest frame `last` still depends on (besides the sink)
    base, _ = stream(gen, noisy, prev, cam, t)

    def last_output_after_changing(frame):
        changed = noisy.clone()
        changed[:, :, frame] += 1.0
        return stream(gen, changed, prev, cam, t)[0][:, :, last]

    assert (last_output_after_changing(0) - base[:, :, last]).abs().max() > 1e-3  # the sink
    # every other value on the way is computed bit for bit alike, so any difference is a real dependence
    # (a weak one through two blocks)
    assert (last_output_after_changing(edge) - base[:, :, last]).abs().max() > 0
    assert torch.equal(last_output_after_changing(edge - 1), base[:, :, last])  # out of reach


@torch.no_grad()
def test_full_attention_lets_later_frames_change_earlier_ones():
    gen = make_generator()
    noisy, prev, cam, t = make_inputs(gen.config, batch=1, frames=4)
    changed = noisy.clone()
    changed[:, :, -1] += 1.0
    causal = gen(noisy, prev, cam, t), gen(changed, prev, cam, t)
    full = gen(noisy, prev, cam, t, attention="full"), gen(changed, prev, cam, t, attention="full")
    assert torch.equal(causal[0][:, :, 0], causal[1][:, :, 0])
    assert (full[0][:, :, 0] - full[1][:, :, 0]).abs().max() > 1e-3


def test_apt2_8b_on_meta_device_has_8b_parameters():
    cfg = GENERATOR_PRESETS["apt2-8b"]
    with torch.device("meta"):
        gen = Generator(cfg)
    params = sum(p.numel() for p in gen.parameters())
    assert 7.2e9 <= params <= 8.8e9
    assert cfg.tokens_per_frame() == 1196 and cfg.depth == 36 and cfg.window == 30
    assert cfg.head_dim() == 128
    assert all(p.is_meta for p in gen.parameters())


@torch.no_grad()
def test_output_starts_at_zero_and_camera_projection_does_not():
    torch.manual_seed(0)
    gen = Generator(GENERATOR_PRESETS["tiny"])
    assert not gen.head.linear.weight.any() and not gen.head.linear.bias.any()
    assert gen.backbone.camera_in.weight.std() > 0
    assert not gen(*make_inputs(gen.config, batch=1, frames=2)).any()


@torch.no_grad()
def test_warp_gate_mixes_the_models_frame_with_the_warped_one_in_proportion_to_t():
    gen = make_generator()
    noisy, prev, cam, t = make_inputs(gen.config, batch=2, frames=3)
    rays = gen.config.camera_channels
    cam[:, rays], cam[:, rays + 1] = 0.4, 0.0  # a turn: everything moves 0.4 latent pixels, every source inside
    warped = warp_latent(prev, cam[:, rays:])
    torch.nn.init.zeros_(gen.gate.weight)

    def x0(gate: float, camera=cam, time=t):
        """The clean frame the model implies with the gate's output fixed at `gate` (before its clamp)."""
        torch.nn.init.constant_(gen.gate.bias, gate)
        return noisy - time.view(-1, 1, 1, 1, 1) * gen(noisy, prev, camera, time)

    own, one = x0(0.0), torch.ones(2)
    assert (own - noisy).abs().mean() > 0.1
    assert torch.allclose(x0(1.0, time=one), warped, atol=1e-5)  # t = 1, a = 1: the warped frame itself
    assert torch.allclose(x0(1.0), own + t.view(-1, 1, 1, 1, 1) * (warped - own), atol=1e-5)
    assert torch.allclose(x0(3.0, time=one), warped, atol=1e-5)  # clamped to 1: never past the warped frame
    assert torch.allclose(x0(-3.0), own, atol=1e-5)             # clamped to 0: never away from it
    revealed, still = cam.clone(), cam.clone()
    revealed[:, rays] = 100.0  # every source outside the previous picture
    still[:, rays:] = 0.0      # a camera that does not turn
    for shut in (revealed, still):
        assert torch.allclose(x0(1.0, shut), x0(0.0, shut), atol=1e-6)
    with pytest.raises(ValueError, match="warp_gate needs warp"):
        dataclasses.replace(gen.config, warp=False)


@torch.no_grad()
def test_commit_false_leaves_the_committed_frames_unchanged():
    gen = make_generator(window=3)
    noisy, prev, cam, t = make_inputs(gen.config, batch=1, frames=6)
    _, cache = stream(gen, noisy[:, :, :5], prev[:, :, :5], cam[:, :, :5], t)
    before = cache.clone()
    trial = gen.step(noisy[:, :, 5:], prev[:, :, 5:], cam[:, :, 5:], t, cache, commit=False)
    assert cache.steps == before.steps == 5
    scratch = slice(cache.slot() * cache.tokens, (cache.slot() + 1) * cache.tokens)  # the next frame's slot
    kept = lambda b: torch.cat([b[:, :, :scratch.start], b[:, :, scratch.stop:]], dim=2)  # noqa: E731
    assert all(torch.equal(kept(a), kept(b)) for a, b in zip(cache.k + cache.v, before.k + before.v))
    assert not torch.equal(cache.k[0][:, :, scratch], before.k[0][:, :, scratch])  # frame 1, evicted for frame 5
    committed = gen.step(noisy[:, :, 5:], prev[:, :, 5:], cam[:, :, 5:], t, cache)
    assert torch.equal(trial, committed) and cache.steps == 6


@torch.no_grad()
def test_load_restores_a_snapshot_in_place_and_the_device_count_follows():
    gen = make_generator(window=3)
    noisy, prev, cam, t = make_inputs(gen.config, batch=1, frames=7)
    _, cache = stream(gen, noisy[:, :, :5], prev[:, :, :5], cam[:, :, :5], t)
    assert cache.full() and cache.frame.item() == cache.steps == 5 and cache.slot() == 1 + 4 % 4
    snapshot = cache.clone()
    step = lambda c, i: gen.step(noisy[:, :, i:i + 1], prev[:, :, i:i + 1], cam[:, :, i:i + 1], t, c)
    first = step(cache, 5)
    step(cache, 6)
    pointers = [b.data_ptr() for b in cache.k + cache.v]
    cache.load_(snapshot)  # a rewind: the buffers keep their addresses (CUDA graphs are bound to them)
    assert [b.data_ptr() for b in cache.k + cache.v] == pointers
    assert cache.steps == 5 and cache.frame.item() == 5
    assert torch.equal(step(cache, 5), first)
    with pytest.raises(ValueError, match="same shape"):
        cache.load_(make_generator(window=2).new_cache(1))


@torch.no_grad()
def test_clone_restores_a_snapshot():
    gen = make_generator(window=3)
    noisy, prev, cam, t = make_inputs(gen.config, batch=1, frames=7)
    _, cache = stream(gen, noisy[:, :, :5], prev[:, :, :5], cam[:, :, :5], t)
    snapshot = cache.clone()
    step = lambda c, i: gen.step(noisy[:, :, i:i + 1], prev[:, :, i:i + 1], cam[:, :, i:i + 1], t, c)
    first = step(cache, 5)
    step(cache, 6)  # the original moves on; the snapshot must not
    assert torch.equal(step(snapshot.clone(), 5), first)
    assert torch.equal(step(snapshot, 5), first)


def test_gradients_flow_through_the_cache_and_detach_cuts_them():
    """Student forcing: the loss on step 2 reaches step 1's input and step 1's use of the weights via the cache."""
    gen = make_generator(depth=2, window=3)
    noisy, prev, cam, t = make_inputs(gen.config, batch=1, frames=2)
    qkv = gen.backbone.blocks[0].attn.qkv.weight

    def rollout(detach: bool):
        gen.zero_grad()
        first = noisy[:, :, :1].clone().requires_grad_()
        cache = gen.new_cache(1)
        gen.step(first, prev[:, :, :1], cam[:, :, :1], t, cache)
        if detach:
            cache = cache.detach()
        gen.step(noisy[:, :, 1:], prev[:, :, 1:], cam[:, :, 1:], t, cache).square().sum().backward()
        return first.grad, qkv.grad.clone()

    through_cache, qkv_grad = rollout(detach=False)
    assert through_cache is not None and through_cache.abs().max() > 0
    cut, qkv_grad_cut = rollout(detach=True)
    assert cut is None
    assert (qkv_grad - qkv_grad_cut).abs().max() > 0  # step 1's keys contributed to the weight gradient


def test_gradient_checkpointing_gives_the_same_gradients():
    gen = make_generator(depth=2, window=3)
    inputs = make_inputs(gen.config, batch=1, frames=4)
    grads = []
    for checkpointing in (False, True):
        gen.zero_grad()
        gen.backbone.grad_checkpointing = checkpointing
        gen(*inputs).square().mean().backward()
        grads.append([p.grad.clone() for p in gen.parameters()])
    assert all(torch.allclose(a, b, atol=1e-6) for a, b in zip(*grads))
    assert grads[0][0].abs().max() > 0


def test_config_round_trips_through_json():
    cfg = GENERATOR_PRESETS["tiny"]
    again = GeneratorConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg and isinstance(again.latent_size, tuple) and isinstance(again.disc_layers, tuple)


def test_mask_is_built_once_and_sees_sink_and_window():
    mask = block_causal_mask(tuple(range(6)), 2, 3, torch.device("cpu"))
    assert mask is block_causal_mask(tuple(range(6)), 2, 3, torch.device("cpu"))
    frames = mask[::2, ::2]  # (6, 6) frame-level visibility
    assert frames[5].tolist() == [True, False, True, True, True, True]
    assert frames[1].tolist() == [True, True, False, False, False, False]


def test_flash_backend_refuses_cpu_and_auto_falls_back():
    q, k, v = (torch.randn(1, 2, 5, 8) for _ in range(3))
    with pytest.raises(RuntimeError):
        attention(q, k, v, backend="flash")
    assert torch.equal(attention(q, k, v, backend="auto"), attention(q, k, v, backend="sdpa"))
