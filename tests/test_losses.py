"""The training losses on small inputs whose values can be worked out by hand."""
import math

import pytest
import torch

from model.training.losses import (approximate_r_penalty, colour_loss, consistency_target, consistency_times,
                                   default_shift, discriminator_loss, flow_matching_loss, generator_loss,
                                   gradient_loss, kl_loss, noised, psnr, shift_time, x0_from_v)


def full(value, shape=(1, 1, 2, 2, 2)):
    return torch.full(shape, float(value))


def test_shift_function():
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    assert torch.allclose(shift_time(t, 1.0), t)                        # s = 1 changes nothing
    # s = 3: 3t / (1 + 2t) -> 0, 0.5, 0.75, 1
    assert torch.allclose(shift_time(t, 3.0), torch.tensor([0.0, 0.5, 0.75, 1.0]))
    assert torch.allclose(shift_time(torch.tensor([0.5]), 24.0), torch.tensor([24 / 25]))
    assert default_shift((92, 52)) == pytest.approx(24.0)
    assert default_shift((32, 18)) == pytest.approx(24 * math.sqrt(576 / 4784))


def test_flow_matching_interpolation_and_target():
    x0, eps = full(2.0), full(-2.0)
    t = torch.tensor([0.25])
    assert torch.allclose(noised(x0, eps, t), full(0.75 * 2 - 0.25 * 2))  # (1 - t) x0 + t eps = 1.0
    assert torch.equal(noised(x0, eps, torch.tensor([0.0])), x0)
    assert torch.equal(noised(x0, eps, torch.tensor([1.0])), eps)
    assert flow_matching_loss(eps - x0, x0, eps).item() == 0.0          # the target is eps - x0 ...
    assert flow_matching_loss(torch.zeros_like(x0), x0, eps).item() == pytest.approx(16.0)  # (-4)^2
    assert flow_matching_loss(x0 - eps, x0, eps).item() == pytest.approx(64.0)  # ... not x0 - eps
    # one t per clip: clip 0 at t = 0 is clean, clip 1 at t = 1 is all noise
    two = noised(torch.ones(2, 1, 1, 1, 1), torch.zeros(2, 1, 1, 1, 1), torch.tensor([0.0, 1.0]))
    assert two.flatten().tolist() == [1.0, 0.0]
    # following v from x_t for time t lands on x0
    x_t = noised(x0, eps, t)
    assert torch.allclose(x0_from_v(x_t, eps - x0, t), x0)


def test_consistency_grid_and_target():
    assert torch.allclose(consistency_times(4, 1.0), torch.tensor([0.0, 0.25, 0.5, 0.75, 1.0]))
    grid = consistency_times(32, 8.0)
    assert len(grid) == 33 and grid[0] == 0 and grid[-1] == 1 and (grid.diff() > 0).all()
    assert grid[16] == pytest.approx(8 * 0.5 / (1 + 7 * 0.5))
    # teacher: x_t = 1 at t = 0.5, v = 2 -> Euler step to t' = 0.25 gives 1 - 0.25 * 2 = 0.5;
    # student there predicts v = 4x = 2 -> its x0 = 0.5 - 0.25 * 2 = 0
    t, t_next = torch.tensor([0.5]), torch.tensor([0.25])
    student = lambda x, tt: 4 * x  # noqa: E731
    target = consistency_target(full(1.0), t, t_next, full(2.0), student)
    assert torch.allclose(target, full(0.0))
    # at t' = 0 the stepped sample is its own target, whatever the student says
    target = consistency_target(full(1.0), t, torch.tensor([0.0]), full(2.0), student)
    assert torch.allclose(target, full(0.0))  # 1 - 0.5 * 2
    target = consistency_target(full(1.0), t, torch.tensor([0.0]), full(1.0), student)
    assert torch.allclose(target, full(0.5))


def test_relativistic_losses_signs_and_values():
    real, fake = torch.tensor([[1.0]]), torch.tensor([[-1.0]])  # the discriminator is right
    assert discriminator_loss(real, fake).item() == pytest.approx(math.log1p(math.exp(-2)))  # 0.127: small
    assert generator_loss(real, fake).item() == pytest.approx(math.log1p(math.exp(2)))       # 2.127: large
    equal = torch.zeros(1, 3)
    assert discriminator_loss(equal, equal).item() == pytest.approx(math.log(2))
    # as maximised objectives: f_D(x) = -log(1 + e^x), f_G(x) = -log(1 + e^-x) of x = D(fake) - D(real)
    x = (fake - real).item()
    assert -discriminator_loss(real, fake).item() == pytest.approx(-math.log1p(math.exp(x)))
    assert -generator_loss(real, fake).item() == pytest.approx(-math.log1p(math.exp(-x)))
    # descending the D loss raises the real logit and lowers the fake one; the G loss raises the fake one
    r, f = torch.zeros(1, 1, requires_grad=True), torch.zeros(1, 1, requires_grad=True)
    discriminator_loss(r, f).backward()
    assert r.grad.item() == pytest.approx(-0.5) and f.grad.item() == pytest.approx(0.5)
    r.grad, f.grad = None, None
    generator_loss(r, f).backward()
    assert f.grad.item() == pytest.approx(-0.5)
    # only the difference counts: a shared offset changes nothing
    assert discriminator_loss(real + 5, fake + 5).item() == pytest.approx(discriminator_loss(real, fake).item())


def test_approximate_r1():
    assert approximate_r_penalty(torch.tensor([[1.0, 2.0]]), torch.tensor([[1.5, 2.0]])).item() == pytest.approx(0.125)
    # for a linear D(x) = w . x it estimates sigma^2 |w|^2, the R1 gradient penalty
    g = torch.Generator().manual_seed(0)
    w, x, sigma = torch.randn(16, generator=g), torch.randn(16, generator=g), 0.1
    n = torch.randn(20000, 16, generator=g)
    logits, perturbed = (x @ w).expand(20000, 1), ((x + sigma * n) @ w)[:, None]
    expected = sigma ** 2 * w.pow(2).sum().item()
    assert approximate_r_penalty(logits, perturbed).item() == pytest.approx(expected, rel=0.05)


def test_vae_terms():
    ramp = (0.1 * torch.arange(8.0)).expand(1, 3, 1, 8, 8)  # +0.1 per column
    flat = torch.zeros_like(ramp)
    assert gradient_loss(ramp, ramp).item() == 0.0
    # horizontal differences 0.1, then 0.2 and 0.4 after each 2x pooling; vertical ones 0
    assert gradient_loss(ramp, flat).item() == pytest.approx((0.1 + 0.2 + 0.4) / 3)
    assert gradient_loss(ramp + 0.5, ramp).item() == pytest.approx(0.0, abs=1e-6)  # an offset has no structure
    # patch colours: the ramp's 8x8 mean is 0.35, so against flat the squared error is 0.35^2; an offset counts fully
    assert colour_loss(ramp, flat).item() == pytest.approx(0.35 ** 2)
    assert colour_loss(ramp + 0.5, ramp).item() == pytest.approx(0.25)
    checker = 0.3 * (-1.0) ** (torch.arange(8.0)[:, None] + torch.arange(8.0))  # texture with a zero patch mean
    assert colour_loss(flat + checker, flat).item() == pytest.approx(0.0, abs=1e-12)
    assert kl_loss(torch.zeros(4), torch.zeros(4)).item() == 0.0
    assert kl_loss(torch.ones(4), torch.zeros(4)).item() == pytest.approx(0.5)
    assert kl_loss(torch.zeros(4), torch.full((4,), math.log(4))).item() == pytest.approx(0.5 * (4 - 1 - math.log(4)))
    a, b = torch.zeros(2, 3, 4), torch.full((2, 3, 4), 0.2)
    assert psnr(a, b).tolist() == pytest.approx([20.0, 20.0])  # 10 log10(2^2 / 0.04)
