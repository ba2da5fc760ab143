"""The discriminator: one logit per latent frame, backbone copied from the generator, block-causal reading."""
import dataclasses

import pytest
import torch

from model.discriminator import Discriminator, tap_depths
from model.generator import GENERATOR_PRESETS, Generator


def make_inputs(cfg, batch=2, frames=5, seed=1):
    g = torch.Generator().manual_seed(seed)
    w, h = cfg.latent_size
    latent = lambda: torch.randn(batch, cfg.latent_channels, frames, h, w, generator=g)
    return latent(), latent(), torch.randn(batch, cfg.camera_inputs(), frames, h, w, generator=g), \
        torch.rand(batch, generator=g)


@pytest.fixture
def pair():
    torch.manual_seed(0)
    gen = Generator(GENERATOR_PRESETS["tiny"])
    return gen, Discriminator.from_generator(gen).eval()


@torch.no_grad()
def test_one_logit_per_latent_frame(pair):
    gen, disc = pair
    logits = disc(*make_inputs(gen.config, batch=2, frames=5))
    assert logits.shape == (2, 5) and logits.dtype == torch.float32 and torch.isfinite(logits).all()


def test_from_generator_copies_the_backbone(pair):
    gen, disc = pair
    theirs = gen.backbone.state_dict()
    mine = disc.backbone.state_dict()
    assert set(mine) <= set(theirs) and any("blocks" in k for k in mine)
    assert all(torch.equal(mine[k], theirs[k]) for k in mine)
    with torch.no_grad():
        gen.backbone.latent_in.weight.add_(1.0)  # a copy, not shared storage
    assert not torch.equal(disc.backbone.latent_in.weight, gen.backbone.latent_in.weight)


def test_backbone_stops_at_the_last_query():
    cfg = dataclasses.replace(GENERATOR_PRESETS["tiny"], depth=4, disc_layers=(1, 3))
    disc = Discriminator.from_generator(Generator(cfg))
    assert len(disc.backbone.blocks) == 3 and len(disc.heads) == 2


@torch.no_grad()
def test_logits_depend_on_their_frame_and_earlier_ones_only(pair):
    gen, disc = pair
    frames, prev, cam, t = make_inputs(gen.config, batch=1, frames=4)
    base = disc(frames, prev, cam, t)
    changed = frames.clone()
    changed[:, :, 2] += 1.0
    after = disc(changed, prev, cam, t)
    assert (after[:, 2:] - base[:, 2:]).abs().min() > 1e-4
    assert torch.equal(after[:, :2], base[:, :2])


def test_default_query_depths_are_evenly_spaced_and_checked():
    assert tap_depths(GENERATOR_PRESETS["apt2-8b"]) == (12, 24, 36)
    with pytest.raises(ValueError):
        tap_depths(dataclasses.replace(GENERATOR_PRESETS["tiny"], disc_layers=(1, 5)))
