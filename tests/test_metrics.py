"""explorer.metrics on hand-made images and feature sets, where the right answer is known."""
import numpy as np
import pytest
from scipy import linalg, ndimage

from explorer import metrics


def texture(shape=(200, 260), seed=0) -> np.ndarray:
    """A smooth random colour texture, (H, W, 3) uint8 spanning 0..255."""
    noise = ndimage.gaussian_filter(np.random.default_rng(seed).normal(size=(*shape, 3)), (2, 2, 0))
    return np.round((noise - noise.min()) / (noise.max() - noise.min()) * 255).astype(np.uint8)


def test_psnr_is_infinite_for_identical_images_and_matches_a_known_mse():
    a = texture((32, 48))
    assert metrics.psnr(a, a) == np.inf
    b = a.astype(np.int64)
    b[:16] = np.where(b[:16] < 128, b[:16] + 20, b[:16] - 20)  # half the image off by 20: MSE 200
    assert metrics.mse(a, b) == pytest.approx(200.0)
    assert metrics.psnr(a, b) == pytest.approx(10 * np.log10(255 ** 2 / 200))
    batch = metrics.psnr(np.stack([a, a]), np.stack([a, b]))  # one value per frame
    assert batch.shape == (2,) and batch[0] == np.inf and batch[1] == pytest.approx(metrics.psnr(a, b))


def test_psnr_of_a_mean_error_stays_finite_when_one_frame_is_identical():
    assert metrics.psnr_from_mse(np.mean([0.0, 100.0])) == pytest.approx(10 * np.log10(255 ** 2 / 50))


def test_ssim_is_one_for_identical_images_and_the_luminance_term_for_flat_ones():
    a = texture((40, 64))
    assert metrics.ssim(a, a) == pytest.approx(1.0, abs=1e-12)
    # Two flat images: no contrast or structure, so SSIM is the luminance term alone.
    c1 = (0.01 * 255) ** 2
    flat = metrics.ssim(np.full((24, 24, 3), 100.0), np.full((24, 24, 3), 150.0))
    assert flat == pytest.approx((2 * 100 * 150 + c1) / (100 ** 2 + 150 ** 2 + c1))


def test_ssim_falls_as_noise_grows():
    a = texture((40, 64)).astype(np.float64)
    rng = np.random.default_rng(1)
    values = [metrics.ssim(a, np.clip(a + rng.normal(0, s, a.shape), 0, 255)) for s in (2, 10, 40)]
    assert 1 > values[0] > values[1] > values[2]


@pytest.mark.parametrize("dx, dy", [(0, 0), (3, -2), (45, 0), (-60, 7), (5, 41), (-48, -44)])
def test_shift_estimator_finds_known_integer_shifts_including_large_ones(dx, dy):
    big = texture((300, 400))
    a = big[100:244, 100:356]                  # 256x144
    b = big[100 - dy:244 - dy, 100 - dx:356 - dx]  # the picture moved by (dx, dy)
    found = metrics.estimate_shift(a, b, (96, 48))
    assert found == pytest.approx((dx, dy), abs=0.1)


def test_shift_estimator_sees_no_motion_in_a_flat_picture_and_checks_its_range():
    flat = np.full((32, 64, 3), 90, np.uint8)
    assert metrics.estimate_shift(flat, texture((32, 64)), (8, 4)) == (0.0, 0.0)
    with pytest.raises(ValueError):
        metrics.estimate_shift(flat, flat, (32, 4))


@pytest.mark.parametrize("zoom", [1.0, 1.08, 1.5, 2.2])
def test_zoom_estimator_finds_a_known_expansion_about_the_centre(zoom):
    a = texture((144, 256)).astype(np.float64)
    H, W = a.shape[:2]
    rows, cols = np.mgrid[0:H, 0:W].astype(np.float64)
    cy, cx = (H - 1) / 2, (W - 1) / 2
    b = np.stack([ndimage.map_coordinates(a[..., c], [cy + (rows - cy) / zoom, cx + (cols - cx) / zoom], order=3)
                  for c in range(3)], axis=-1)
    assert metrics.estimate_zoom(a, b) == pytest.approx(zoom, rel=0.01)


def test_band_pass_drops_flat_shading_and_pixel_noise_and_keeps_blobs_between_its_scales():
    assert np.allclose(metrics.band_pass(np.full((72, 128), 90.0), 2, 8), 0)
    rows, cols = np.mgrid[0:72, 0:128]
    blob = 100.0 * np.exp(-((rows - 36) ** 2 + (cols - 64) ** 2) / (2 * 4.0 ** 2))  # a 4 px blob
    noise = np.random.default_rng(0).normal(0, 20, (72, 128))                      # pixel-scale texture
    band = metrics.band_pass(blob, 2, 8)
    assert band[36, 64] > 30 and np.allclose(metrics.band_pass(blob + 50.0, 2, 8), band)  # brightness drops out
    assert metrics.band_pass(noise, 2, 8).std() < 0.15 * noise.std()
    a = np.stack([blob] * 3, axis=-1).astype(np.uint8)
    assert np.allclose(metrics.band_pass(a, 2, 8), metrics.band_pass(metrics.luminance(a), 2, 8))


def test_sharpness_is_lower_for_a_blurred_image_and_zero_for_a_flat_one():
    a = texture((72, 128), seed=3)
    blurred = ndimage.gaussian_filter(a, sigma=(1.5, 1.5, 0))
    assert metrics.sharpness(blurred) < 0.5 * metrics.sharpness(a)
    assert metrics.sharpness(np.full((16, 16, 3), 7, np.uint8)) == 0.0
    assert metrics.sharpness(np.stack([a, blurred])).shape == (2,)


def test_colour_shift_is_the_distance_of_mean_colours_and_blind_to_texture():
    a = texture((72, 128), seed=3)
    assert metrics.colour_shift(a, a) == 0.0
    assert metrics.colour_shift(a, a[:, ::-1]) == pytest.approx(0.0, abs=1e-9)  # same colours, other places
    grey = np.full((8, 8, 3), 100, np.uint8)
    assert metrics.colour_shift(grey, grey + np.uint8([3, 4, 0])) == pytest.approx(5.0)
    assert metrics.colour_shift(np.stack([a, a]), np.stack([a, a])).shape == (2,)


def test_frechet_distance_is_zero_for_identical_sets_and_grows_with_a_mean_shift():
    x = np.random.default_rng(0).normal(size=(400, 6))
    assert metrics.frechet_distance(x, x) == pytest.approx(0.0, abs=1e-9)
    shifts = [metrics.frechet_distance(x, x + d) for d in (0.1, 0.5, 1.0)]
    # the same covariance: the distance is exactly the squared mean shift, 6 d^2
    assert shifts == pytest.approx([6 * 0.01, 6 * 0.25, 6 * 1.0], rel=1e-6)


def test_frechet_distance_matches_the_matrix_square_root_formula():
    rng = np.random.default_rng(2)
    x, y = rng.normal(size=(300, 5)), rng.normal(size=(250, 5)) @ rng.normal(size=(5, 5)) + 0.3
    s_x, s_y = np.cov(x, rowvar=False), np.cov(y, rowvar=False)
    expected = (np.sum((x.mean(0) - y.mean(0)) ** 2) + np.trace(s_x) + np.trace(s_y)
                - 2 * np.trace(linalg.sqrtm(s_x @ s_y).real))
    assert metrics.frechet_distance(x, y) == pytest.approx(expected, rel=1e-9)
    # fewer samples than dimensions (singular covariances) still gives a finite, non-negative distance
    assert 0 < metrics.frechet_distance(x[:3], y[:4]) < np.inf


def test_image_statistics_of_flat_and_split_images():
    red = np.zeros((8, 8, 3), np.uint8)
    red[..., 0] = 255
    half = red.copy()
    half[:, :4] = 0  # left half black, right half red
    f = metrics.image_statistics(np.stack([red, half]))
    assert f.shape == (2, 15)
    assert f[0, :3] == pytest.approx([1, 0, 0]) and f[0, 3:6] == pytest.approx([0, 0, 0])
    assert f[0, 6] == 0.0 and f[1, 6] > 0  # gradient energy only where there is an edge
    assert f[:, 7:].sum(axis=1) == pytest.approx([1, 1])  # the histogram covers every pixel once
    assert f[1, 7 + 0b000] == pytest.approx(0.5) and f[1, 7 + 0b100] == pytest.approx(0.5)  # black and red bins
