"""Image and video metrics for `explorer eval` (DESIGN section 8), all on numpy arrays of uint8 frames.

Frames are (..., H, W, 3) uint8 (or any real dtype on the same 0..255 scale); per-image functions return one value
per leading index: a float for a single image, an array for a batch.

- Fidelity: `mse`, `psnr`, `ssim` (Wang et al. 2004: Gaussian window sigma 1.5, K1 = 0.01, K2 = 0.03, per channel).
- Camera adherence: `estimate_shift` (normalised cross-correlation over every integer shift, computed at once with
  FFTs, refined to sub-pixel) and `estimate_zoom` (the same score over a grid of zoom factors about the centre).
  Phase correlation is not used: it loses the peak once shifts reach 40 px or so on small frames.
- Sharpness: `sharpness`, the variance of the Laplacian of the luminance (a blurry average has little of it).
- Distribution distance: `image_statistics` (cheap per-image features) and `frechet_distance` between feature sets.
"""
from __future__ import annotations

import numpy as np
from scipy import linalg, ndimage, signal

PEAK = 255.0
LUMA = np.array([0.299, 0.587, 0.114])  # Rec. 601 weights


def _float(x) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


def _per_image(values: np.ndarray):
    return float(values) if values.ndim == 0 else values


def luminance(frames) -> np.ndarray:
    """(..., H, W, 3) -> (..., H, W) float64 on the same scale."""
    return _float(frames) @ LUMA


def _plane(image) -> np.ndarray:
    """An (H, W, 3) picture's luminance, or an (H, W) plane as it is: what the motion estimators search."""
    return luminance(image) if np.ndim(image) == 3 else _float(image)


# --- fidelity ----------------------------------------------------------------------------------

def mse(a, b):
    """Mean squared error per image, over pixels and channels."""
    return _per_image(np.mean((_float(a) - _float(b)) ** 2, axis=(-3, -2, -1)))


def psnr_from_mse(error, peak: float = PEAK):
    """10 log10(peak^2 / mse) in dB; inf where the error is 0. Aggregate over frames by averaging the MSE first, so
    one identical frame (a camera at rest) does not make a mean infinite."""
    error = _float(error)
    with np.errstate(divide="ignore"):
        return _per_image(np.where(error > 0, 10.0 * np.log10(peak ** 2 / np.maximum(error, 1e-300)), np.inf))


def psnr(a, b, peak: float = PEAK):
    """Peak signal-to-noise ratio per image in dB (inf for identical images)."""
    return psnr_from_mse(mse(a, b), peak)


def ssim(a, b, peak: float = PEAK, sigma: float = 1.5):
    """Structural similarity per image, the mean of the SSIM map over pixels and channels; 1 for identical images.

    Local statistics come from a Gaussian window (radius 5 at sigma 1.5, reflected at the borders), so frames as small
    as 64x32 get a full map.
    """
    a, b = _float(a), _float(b)
    blur_sigma = [0.0] * (a.ndim - 3) + [sigma, sigma, 0.0]  # blur H and W only, never across frames or channels

    def blur(x):
        return ndimage.gaussian_filter(x, blur_sigma, truncate=3.5, mode="reflect")

    c1, c2 = (0.01 * peak) ** 2, (0.03 * peak) ** 2
    mu_a, mu_b = blur(a), blur(b)
    var_a = blur(a * a) - mu_a ** 2
    var_b = blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    ssim_map = ((2 * mu_a * mu_b + c1) * (2 * cov + c2)) / ((mu_a ** 2 + mu_b ** 2 + c1) * (var_a + var_b + c2))
    return _per_image(ssim_map.mean(axis=(-3, -2, -1)))


def colour_shift(a, b):
    """Distance between the mean colours (RGB, 0..255) of two images, per image: a picture can score a fair PSNR
    with the wrong palette (grass drawn grey), and this names that error alone."""
    return _per_image(np.linalg.norm(_float(a).mean(axis=(-3, -2)) - _float(b).mean(axis=(-3, -2)), axis=-1))


# --- sharpness ---------------------------------------------------------------------------------

LAPLACIAN = np.array([[0.0, 1.0, 0.0], [1.0, -4.0, 1.0], [0.0, 1.0, 0.0]])


def sharpness(frames):
    """Variance of the 4-neighbour Laplacian of the luminance, per image (0..255 scale)."""
    y = luminance(frames)
    kernel = LAPLACIAN.reshape((1,) * (y.ndim - 2) + (3, 3))  # no mixing across leading axes
    return _per_image(ndimage.convolve(y, kernel, mode="reflect").var(axis=(-2, -1)))


# --- camera adherence --------------------------------------------------------------------------

def _parabola_offset(left: float, centre: float, right: float) -> float:
    """Sub-sample position of the maximum of a parabola through three equally spaced samples, in [-0.5, 0.5]."""
    curvature = left - 2.0 * centre + right
    if curvature >= 0:  # not a strict maximum (flat or a plateau): keep the integer position
        return 0.0
    return float(np.clip(0.5 * (left - right) / curvature, -0.5, 0.5))


def _refine(score: np.ndarray, index: tuple[int, ...]) -> list[float]:
    """The peak `index` of an n-d score array, refined along each axis that has neighbours on both sides."""
    refined = []
    for axis, i in enumerate(index):
        if 0 < i < score.shape[axis] - 1:
            at = list(index)
            samples = []
            for j in (i - 1, i, i + 1):
                at[axis] = j
                samples.append(score[tuple(at)])
            refined.append(i + _parabola_offset(*samples))
        else:
            refined.append(float(i))
    return refined


def ncc(a: np.ndarray, b: np.ndarray) -> float:
    """Normalised cross-correlation of two arrays of the same shape, in [-1, 1]; 0 if either is flat."""
    a, b = _float(a) - np.mean(a), _float(b) - np.mean(b)
    scale = np.sqrt(np.sum(a * a) * np.sum(b * b))
    return float(np.sum(a * b) / scale) if scale > 0 else 0.0


def ncc_map(image: np.ndarray, template: np.ndarray) -> np.ndarray:
    """`ncc` of a 2-d template with every window of a 2-d image that holds it wholly: (H - h + 1, W - w + 1), entry
    [i, j] for image[i:i + h, j:j + w]; 0 where either side is flat. The sums over all windows come from FFT
    correlations, so a search over every integer shift costs a few FFTs."""
    t = template - template.mean()
    t_energy = float(np.sum(t * t))
    if t_energy <= 1e-12 * t.size:
        return np.zeros((image.shape[0] - t.shape[0] + 1, image.shape[1] - t.shape[1] + 1))
    ones = np.ones_like(t)
    numerator = signal.correlate(image, t, mode="valid", method="fft")  # sum(t * window): sum(t) = 0 drops its mean
    window_sum = signal.correlate(image, ones, mode="valid", method="fft")
    window_sq = signal.correlate(image * image, ones, mode="valid", method="fft")
    window_energy = window_sq - window_sum ** 2 / t.size  # sum((window - its mean)^2)
    flat = window_energy <= 1e-9 * np.maximum(window_sq, 1e-12)  # at the level of the FFTs' round-off
    return np.where(flat, 0.0, numerator / np.sqrt(np.where(flat, 1.0, window_energy) * t_energy))


def estimate_shift(a, b, max_shift: tuple[int, int]) -> tuple[float, float]:
    """How far the picture moved from image a to image b: (dx, dy) in pixels, +x right, +y down, sub-pixel.

    a, b: (H, W, 3) or (H, W). max_shift: (mx, my), the search range, each below half the size. The centre of b, inset
    by (mx, my) on each side, is searched for in a at every integer offset within the range by normalised
    cross-correlation; the best offset is refined by a parabola through its neighbours. Matching b's centre makes the
    answer the motion at the image centre, where a camera yaw of d moves the picture by exactly f tan(d) (towards a
    wide view's edges the same yaw moves it up to sec^2 as much). A flat template (nothing to match) gives (0, 0).
    """
    a, b = _plane(a), _plane(b)
    mx, my = (int(v) for v in max_shift)
    H, W = a.shape
    if not (0 <= mx < W / 2 and 0 <= my < H / 2):
        raise ValueError(f"max_shift {max_shift} must be below half the image size {W}x{H}")
    score = ncc_map(a, b[my:H - my, mx:W - mx])  # (2 my + 1, 2 mx + 1); [my, mx] = no motion
    if not score.any():
        return 0.0, 0.0
    i, j = _refine(score, np.unravel_index(int(np.argmax(score)), score.shape))
    return float(mx - j), float(my - i)  # template found at window (i, j): b's content sits (mx - j, my - i) from where it was in a


def vertical_edges(image, sigma: float) -> np.ndarray:
    """(H, W, 3) or (H, W) -> (H, W): the horizontal derivative of the luminance smoothed by a Gaussian of `sigma`
    pixels. What a horizontal shift moves and nothing else: flat fields of colour (sky, ground), whose brightness a
    decoder shifts, drop out, and so does pixel-scale texture (the reference's aliasing), which a VAE does not carry.
    Matching two pictures of unlike sharpness by `estimate_shift` on this instead of on their luminance keeps the
    search on the edges both share."""
    lum = _plane(image)
    return ndimage.gaussian_filter(lum, sigma, order=(0, 1))


def band_pass(image, fine: float, coarse: float) -> np.ndarray:
    """(H, W, 3) or (H, W) -> (H, W): the luminance smoothed by a Gaussian of `fine` pixels minus the same smoothed
    by one of `coarse` pixels. Keeps the blobs and edges between the two scales, in every direction (what an
    expansion moves), and drops both pixel-scale texture, which a VAE does not carry, and the broad shading, whose
    brightness a decoder shifts; `estimate_zoom` on this matches pictures of unlike sharpness."""
    lum = _plane(image)
    return ndimage.gaussian_filter(lum, fine) - ndimage.gaussian_filter(lum, coarse)


def zoom_grid(smallest: float = 0.8, largest: float = 2.5, step: float = 0.01) -> np.ndarray:
    """Zoom factors evenly spaced in log(zoom), `step` apart."""
    return np.exp(np.arange(np.log(smallest), np.log(largest) + step / 2, step))


def estimate_zoom(a, b, zooms: np.ndarray | None = None, inset: float = 0.125) -> float:
    """By what factor the picture expanded about the image centre from a to b (> 1: the camera moved forward).

    The centre of b (inset by `inset` of the size on each side) is compared, by normalised cross-correlation, with a
    zoomed by each candidate factor (bilinear resampling about the centre); the best factor is refined by a parabola
    in log(zoom). The candidates must not zoom out below 1 - 2 inset, so the resampled template stays inside a.
    Forward motion is not a pure zoom (near things grow faster than far ones); compare a world's zoom with the
    reference world's for the same poses, measured by this same function.
    """
    zooms = zoom_grid() if zooms is None else np.asarray(zooms, dtype=np.float64)
    a, b = _plane(a), _plane(b)
    H, W = a.shape
    if zooms.min() < 1.0 - 2.0 * inset:
        raise ValueError(f"zooms below {1 - 2 * inset} would sample outside the image")
    top, left = round(inset * H), round(inset * W)
    template = b[top:H - top, left:W - left]
    centre = np.array([(H - 1) / 2.0, (W - 1) / 2.0])
    rows, cols = np.mgrid[top:H - top, left:W - left].astype(np.float64)
    offsets = np.stack([rows - centre[0], cols - centre[1]])  # (2, h, w) from the centre, in pixels
    scores = np.array([ncc(ndimage.map_coordinates(a, centre[:, None, None] + offsets / z, order=1), template)
                       for z in zooms])
    if not scores.any():
        return 1.0
    (k,) = _refine(scores, (int(np.argmax(scores)),))
    return float(np.exp(np.interp(k, np.arange(len(zooms)), np.log(zooms))))


# --- features and the Fréchet distance ---------------------------------------------------------

HISTOGRAM_BINS = 2  # per channel: a 2 x 2 x 2 joint colour histogram (dark/bright in each of R, G, B)


def image_statistics(frames) -> np.ndarray:
    """Cheap per-image features (N, 15) of (N, H, W, 3) frames, in [0, 1] units: colour means (3) and standard
    deviations (3), the gradient energy of the luminance as an RMS (1), and a coarse joint colour histogram (8)."""
    x = _float(frames) / PEAK
    means, stds = x.mean(axis=(1, 2)), x.std(axis=(1, 2))
    y = x @ LUMA
    gradient = np.sqrt((np.diff(y, axis=1) ** 2).mean(axis=(1, 2)) + (np.diff(y, axis=2) ** 2).mean(axis=(1, 2)))
    levels = np.minimum((x * HISTOGRAM_BINS).astype(np.int64), HISTOGRAM_BINS - 1)  # (N, H, W, 3) bin per channel
    joint = (levels[..., 0] * HISTOGRAM_BINS + levels[..., 1]) * HISTOGRAM_BINS + levels[..., 2]
    histogram = np.stack([np.bincount(j.ravel(), minlength=HISTOGRAM_BINS ** 3) for j in joint]) / joint[0].size
    return np.concatenate([means, stds, gradient[:, None], histogram], axis=1)


def frechet_distance(x, y) -> float:
    """Fréchet distance between Gaussians fitted to two feature sets (N, D) and (M, D):
    |mu_x - mu_y|^2 + tr(S_x + S_y - 2 (S_x S_y)^(1/2)); 0 for identical sets, grows with any difference.

    tr((S_x S_y)^(1/2)) is computed as the sum of square roots of the eigenvalues of the symmetric S_x^(1/2) S_y
    S_x^(1/2) (the same eigenvalues), which stays real and exact for the singular covariances of small samples.
    """
    x, y = np.atleast_2d(_float(x)), np.atleast_2d(_float(y))
    s_x, s_y = _covariance(x), _covariance(y)
    w, v = linalg.eigh(s_x)
    root_x = (v * np.sqrt(np.clip(w, 0.0, None))) @ v.T
    cross = np.sqrt(np.clip(linalg.eigvalsh(root_x @ s_y @ root_x), 0.0, None)).sum()
    distance = np.sum((x.mean(axis=0) - y.mean(axis=0)) ** 2) + np.trace(s_x) + np.trace(s_y) - 2.0 * cross
    return float(max(distance, 0.0))


def _covariance(x: np.ndarray) -> np.ndarray:
    """(N, D) -> (D, D) sample covariance; zeros for a single sample."""
    if len(x) < 2:
        return np.zeros((x.shape[1], x.shape[1]))
    return np.atleast_2d(np.cov(x, rowvar=False))
