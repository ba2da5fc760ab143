"""`explorer eval`: the generated world against the reference world from the same first frame (DESIGN section 8).

Streams. Held-out scenes (world.dataset.HELD_OUT_SEEDS, never trained on), each walked by a person-like random
trajectory of --seconds at 24 fps (started mid-motion, as the training clips are), plus every --levels level along
every --paths path (or a random walk from the level's start). A stream starts from one picture, the reference
world's render of its first pose at the model's native size; every world under test is reset to that picture and then
follows the same poses, and each of its frames is scored against the reference world's frame for the same pose.

Worlds under test, all in the same run on the same streams:
- generated: the checkpoint's one-step generator, exactly as the game runs it (GeneratedWorld);
- diffusion: the baseline, the generator sampled autoregressively in --baseline-steps Euler steps (MultiStepWorld);
- hold: the first frame repeated for ever (a model must beat it clearly at 1 s);
- vae: the reference frames themselves through the checkpoint's VAE (`Autoencoder`), what a perfect generator on
  this VAE would show: the ceiling that the VAE puts on every fidelity and sharpness score (`vae_bound`).

Scores:
- fidelity: PSNR and SSIM at 1, 5, 10 and 60 s, each over the frames within 0.25 s of the mark in all streams
  (PSNR of their mean squared error, so a frame that happens to be identical cannot make it infinite);
- camera adherence: separate 1 s streams of pure yaw and pure forward motion from the held-out scenes' starts. Yaw:
  the picture's shift between frame 0 and the last frame of each step, measured by normalised cross-correlation
  of the frames' vertical edges (explorer.metrics.estimate_shift on metrics.vertical_edges), against the f tan(yaw
  change) the camera implies. Forward: the picture's expansion about the centre (explorer.metrics.estimate_zoom
  on the frames' 2-8 px band, metrics.band_pass) against the reference world's own frames for the same poses. A
  scene where the estimator cannot follow the reference world's own yaw (too dark or bare to measure) is left out
  of both, and the reference's own yaw error is reported as the estimator's floor; the reference's frames through the VAE, which follow the camera exactly, give
  the floor for a picture as soft as this VAE draws (`vae_bound`);
- sharpness: the generated frames' mean Laplacian variance over the reference frames' (a blurry average scores well
  on PSNR; this keeps it honest);
- colour shift: the distance between a frame's mean colour and the reference frame's (RGB, 0-255), averaged over
  the frames; with PSNR, per stream as well (`per_stream`), so that one scene drawn in the wrong palette shows;
- long horizon: per 5 s window, the Fréchet distance between features of generated and reference frames (the
  checkpoint's VAE encoder's pooled latents plus simple image statistics, standardised by the reference frames'
  spread over the run) and a sharpness ratio; drift is the last window's distance over the first's.
"""
from __future__ import annotations

import json
import math
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator, Protocol, Sequence

import numpy as np
import torch
from tqdm import tqdm

from camera.embedding import camera_embedding
from camera.errors import InputError, check_output_path, refuse_overwriting, write_replacing
from camera.paths import keys_field, load_path, placed_poses
from camera.pose import Pose
from camera.trajectories import forward_trajectory, random_trajectory, yaw_trajectory
from explorer import metrics
from explorer.bench import describe_device
from model.checkpoint import default_checkpoint_path
from model.vae import VAE, from_uint8, to_uint8
from world.base import FPS, FRAMES_PER_STEP
from world.dataset import EYE_HEIGHT, HELD_OUT_SEEDS
from world.generated import GeneratedWorld, step_noise
from world.level import NO_SCENE, Level, load_level
from world.scene import SceneParams, height_at, random_scene

MARKS = (1, 5, 10, 60)            # seconds at which fidelity is reported
MARK_HALF_WIDTH = 0.25            # s: a mark averages the frames within this of it
WINDOW_SECONDS = 5                # long-horizon windows
FEATURE_STRIDE = FRAMES_PER_STEP  # one feature sample per latent step: its last frame
FEATURE_STD_FLOOR = 0.01          # features are standardised by the reference's std, floored (constant features)
CAMERA_SECONDS = 1
YAW_DEG_PER_S = 24.0              # 1 s moves the picture's centre by f tan(24°): 27 px at 128x72 (a fifth of the width)
FORWARD_M_PER_S = 2.0             # the game's walking speed
MEASURABLE_PCT = 25.0             # a scene's reference yaw error above this: the scene cannot be measured
EDGE_SIGMA_PX = 2.5               # the smoothing of the edges the yaw estimator matches, in pixels: below the VAE's
                                  # 8-pixel latent cell at every frame size (on 8 held-out scenes the reference's own
                                  # error stays under 6.5% per scene at 128x72 and 256x144 for 1.5-4 px)
ZOOM_BAND_PX = (2.0, 8.0)         # the band (fine, coarse Gaussian sigmas) the forward estimator matches: on 16
                                  # held-out scenes the reference's VAE reconstructions agree with the reference's own
                                  # zoom within 21% (on luminance: 59%), a 4x supersampled render within 5% (12%)


class Player(Protocol):
    """What eval drives: a world that starts from a given picture (GeneratedWorld, MultiStepWorld, HoldWorld)."""

    def reset_from_frame(self, frame: np.ndarray, start: Pose, seed: int) -> np.ndarray: ...

    def step(self, poses: Sequence[Pose]) -> np.ndarray: ...


class HoldWorld:
    """The baseline that shows the first frame for ever."""

    def reset_from_frame(self, frame: np.ndarray, start: Pose, seed: int) -> np.ndarray:
        self.frame = frame
        return frame

    def step(self, poses: Sequence[Pose]) -> np.ndarray:
        return np.repeat(self.frame[None], len(poses), axis=0)


class MultiStepWorld:
    """The generator sampled autoregressively in `steps` Euler steps from t = 1 to t = 0 (diffusion forcing).

    The diffusion stage trains with one t for the whole clip (DESIGN section 4), so at sampling time t_i the frame
    must see the earlier frames as they were at t_i: there is one KV cache per sampling time, and sub-step i commits
    the frame's noisy iterate to cache i. The clean latent is recycled into the next step and decoded, as in
    GeneratedWorld, and the noise of each step is the same as the generated world's (world.generated.step_noise).
    """

    def __init__(self, world: GeneratedWorld, steps: int):
        self.world, self.times = world, np.linspace(1.0, 0.0, steps + 1)

    @torch.inference_mode()
    def reset_from_frame(self, frame: np.ndarray, start: Pose, seed: int) -> np.ndarray:
        w = self.world
        image = from_uint8(frame[None]).transpose(0, 1).to(w.device, w.dtype)  # (1, 3, H, W)
        self.prev = w.vae.encode_first(image)                                  # (1, C, 1, h, w)
        self.decoder = w.vae.decoder_cache()
        w.vae.decode_step(self.prev, self.decoder)
        self.caches = [w.generator.new_cache(1, w.device, w.dtype) for _ in self.times[:-1]]
        self.pose, self.seed, self.index = start, int(seed), 0
        return frame

    @torch.inference_mode()
    def step(self, poses: Sequence[Pose]) -> np.ndarray:
        w = self.world
        cam = camera_embedding([self.pose, *poses], grid=w.latent_size, aspect=w.size[0] / w.size[1],
                               scaling=w.camera_scaling, flow=w.generator.config.warp)  # (1, 24 or 26, h, w)
        cam = torch.from_numpy(cam).to(w.device, w.dtype).transpose(0, 1)[None]  # (1, 24 or 26, 1, h, w)
        x = step_noise(self.seed, self.index, self.prev.shape, w.device, w.dtype)
        for cache, t0, t1 in zip(self.caches, self.times[:-1], self.times[1:]):
            t = torch.full((1,), float(t0), device=w.device, dtype=w.dtype)
            x = x + float(t1 - t0) * w.generator.step(x, self.prev, cam, t, cache, commit=True)
        frames = w.vae.decode_step(x, self.decoder)                            # (1, 3, 4, H, W)
        self.prev, self.pose, self.index = x, poses[-1], self.index + 1
        return to_uint8(frames[0])


class Autoencoder:
    """The reference frames through a VAE, a step at a time: each step's frames are encoded as the second latent of
    a clip that starts with the frame before (1 + 4 frames, 2 latents), decoded, and the step's frames kept. The
    causal encoder sees one frame of the past instead of the whole stream, so this slightly understates the VAE."""

    def __init__(self, vae: VAE):
        self.vae = vae
        self.dtype, self.device = next(vae.parameters()).dtype, next(vae.parameters()).device

    def reset(self, first: np.ndarray) -> None:
        self.last = first

    @torch.inference_mode()
    def __call__(self, truth: np.ndarray) -> np.ndarray:
        """(n <= 4, H, W, 3) reference frames -> the same frames encoded and decoded."""
        n = len(truth)
        padded = np.concatenate([truth, np.repeat(truth[-1:], FRAMES_PER_STEP - n, axis=0)])
        clip = from_uint8(np.concatenate([self.last[None], padded])[None]).to(self.device, self.dtype)  # (1, 3, 5, H, W)
        decoded = self.vae.decode(self.vae.encode(clip)[0])                                             # (1, 3, 5, H, W)
        self.last = truth[-1]
        return to_uint8(decoded[0])[1:1 + n]

    def video(self, truth: np.ndarray) -> np.ndarray:
        """A whole stream (n, H, W, 3) of reference frames through the VAE a step at a time; frame 0 kept as it is,
        as every player is given it."""
        self.reset(truth[0])
        rest = truth[1:]
        return np.concatenate([truth[:1]] + [self(rest[i:i + FRAMES_PER_STEP])
                                             for i in range(0, len(rest), FRAMES_PER_STEP)])


# --- streams -----------------------------------------------------------------------------------

@dataclass
class Stream:
    name: str
    scene: SceneParams
    poses: list[Pose]


def ground_of(scene: SceneParams):
    """The scene's terrain height as the camera controls' ground function (x, z) -> y."""
    return lambda x, z: float(height_at(scene, x, z))


def held_out_start(seed: int) -> tuple[SceneParams, Pose]:
    """Held-out scene `seed` and a start at eye height near its origin, looking level in a random direction."""
    scene = random_scene(np.random.default_rng(seed))
    rng = np.random.default_rng([seed, 1])
    x, z = rng.uniform(-1.0, 1.0, 2)
    return scene, Pose((x, float(height_at(scene, x, z)) + EYE_HEIGHT, z), yaw=float(rng.uniform(-180.0, 180.0)))


def held_out_streams(scenes: int, frames: int) -> list[Stream]:
    """The first `scenes` held-out scenes, each with a person-like walk of `frames` poses that follows the ground."""
    streams = []
    for seed in HELD_OUT_SEEDS[:scenes]:
        scene, start = held_out_start(seed)
        rng = np.random.default_rng([seed, 2])
        warmup = int(rng.integers(0, 2 * FPS))  # start mid-motion, as the training clips do
        poses = random_trajectory(rng, warmup + frames, start, ground=ground_of(scene))[warmup:]
        streams.append(Stream(f"held-out scene {seed}", scene, poses))
    return streams


def level_streams(levels: Sequence[Level], paths: Sequence[str], frames: int) -> list[Stream]:
    """Each level along each path (cut to `frames`), or along a random walk from its start when no path is given."""
    if paths and not levels:
        raise InputError("command line", "--paths", "needs --levels: a path is walked from each level's start")
    camera_paths = [(p, load_path(p)) for p in paths]
    for source, path in camera_paths:
        if round(path.duration * FPS) + 1 < 1 + FRAMES_PER_STEP:  # as many poses as path.poses gives
            raise InputError(source, keys_field(source), f"the path lasts {path.duration:.2f} s, shorter than one step "
                             f"({FRAMES_PER_STEP} frames after the first at {FPS} fps)")
    for source, path in camera_paths:  # a shorter path scores fewer seconds: its stream leaves the later marks
        if round(path.duration * FPS) + 1 < frames:
            print(f"explorer eval: note: {source} lasts {round(path.duration, 3):g} s, less than --seconds "
                  f"({(frames - 1) / FPS:g} s); its streams end there", file=sys.stderr)
    streams = []
    for level in levels:
        if level.scene is None:
            raise InputError(level.source, "scene", f"{NO_SCENE} (eval compares the generated world with it)")
        for source, path in camera_paths:
            poses = placed_poses(path, level.start, source, fps=FPS)[:frames]
            streams.append(Stream(f"{level.name} along {Path(source).name}", level.scene, poses))
        if not camera_paths:
            rng = np.random.default_rng([*level.name.encode(), 3])  # the same walk for the same level, every run
            poses = random_trajectory(rng, frames, level.start, ground=ground_of(level.scene))
            streams.append(Stream(f"{level.name} random walk", level.scene, poses))
    return streams


def steps(poses: Sequence[Pose]) -> Iterator[tuple[list[Pose], list[Pose]]]:
    """The poses after the first in steps of four: (the step's poses, the same padded to four with its last)."""
    rest = list(poses[1:])
    for i in range(0, len(rest), FRAMES_PER_STEP):
        chunk = rest[i:i + FRAMES_PER_STEP]
        yield chunk, chunk + [chunk[-1]] * (FRAMES_PER_STEP - len(chunk))


def drive(player: Player, first: np.ndarray, poses: Sequence[Pose], seed: int) -> np.ndarray:
    """All frames (len(poses), H, W, 3) of a player started from `first` at poses[0]."""
    player.reset_from_frame(first, poses[0], seed)
    return np.concatenate([first[None]] + [player.step(padded)[:len(chunk)] for chunk, padded in steps(poses)])


# --- per-frame scores --------------------------------------------------------------------------

@dataclass
class Track:
    """Scores of one world along one stream, per frame 1, 2, ... (frame 0 is the shared start, not scored)."""
    featured: bool = True                                    # sample frames for the Fréchet distance
    mse: list[float] = field(default_factory=list)
    ssim: list[float] = field(default_factory=list)
    colour: list[float] = field(default_factory=list)        # colour_shift against the reference frame
    sharpness: list[float] = field(default_factory=list)
    sampled: list[np.ndarray] = field(default_factory=list)  # frames FEATURE_STRIDE, 2 FEATURE_STRIDE, ...
    features: np.ndarray | None = None                       # (len(sampled), D), filled in after the stream

    def add(self, frames: np.ndarray, truth: np.ndarray | None = None) -> None:
        """The next frames (n, H, W, 3); `truth`, the reference's frames for the same poses (none for the reference)."""
        first = len(self.sharpness) + 1
        if truth is not None:
            self.mse.extend(np.atleast_1d(metrics.mse(frames, truth)))
            self.ssim.extend(np.atleast_1d(metrics.ssim(frames, truth)))
            self.colour.extend(np.atleast_1d(metrics.colour_shift(frames, truth)))
        self.sharpness.extend(np.atleast_1d(metrics.sharpness(frames)))
        if self.featured:
            self.sampled += [f for i, f in enumerate(frames, start=first) if i % FEATURE_STRIDE == 0]


@torch.inference_mode()
def frame_features(vae: VAE, frames: np.ndarray, batch: int = 16) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, C + 15): the VAE encoder's latent mean pooled over space, then image statistics."""
    dtype = next(vae.parameters()).dtype
    device = next(vae.parameters()).device
    pooled = []
    for i in range(0, len(frames), batch):
        images = from_uint8(frames[i:i + batch]).transpose(0, 1).to(device, dtype)  # (B, 3, H, W)
        pooled.append(vae.encode_first(images).float().mean(dim=(2, 3, 4)).cpu().numpy())  # (B, C)
    return np.concatenate([np.concatenate(pooled), metrics.image_statistics(frames)], axis=1)


def run_stream(stream: Stream, reference, players: dict[str, Player], vae: VAE, seed: int, bar) -> dict[str, Track]:
    """Every player, the reference and the reference through the VAE along one stream, scored frame by frame
    (frames are not kept, but for the few sampled for features)."""
    reference.set_scene(stream.scene)
    first = reference.render(stream.poses[:1])[0]
    for player in players.values():
        player.reset_from_frame(first, stream.poses[0], seed)
    autoencoder = Autoencoder(vae)
    autoencoder.reset(first)
    # The hold baseline's frames are all the first one: their feature distribution says nothing about drift.
    tracks = {name: Track(featured=name not in ("hold", "vae")) for name in [*players, "vae", "reference"]}
    for chunk, padded in steps(stream.poses):
        truth = reference.render(chunk)
        tracks["reference"].add(truth)
        tracks["vae"].add(autoencoder(truth), truth)
        for name, player in players.items():
            tracks[name].add(player.step(padded)[:len(chunk)], truth)
        bar.update(1)
    for track in tracks.values():
        if track.featured:
            track.features, track.sampled = frame_features(vae, np.stack(track.sampled)), []
    return tracks


# --- summaries ---------------------------------------------------------------------------------

def frames_in(tracks: Sequence[Track], key: str, first: int, last: int) -> np.ndarray:
    """The values of `key` for frames first..last (1-based, inclusive) of every track that reaches them."""
    return np.concatenate([np.asarray(getattr(t, key)[first - 1:last], dtype=np.float64) for t in tracks])


def at_time(tracks: Sequence[Track], t: float) -> tuple[float | None, float | None]:
    """(PSNR of the mean squared error, mean SSIM) over the frames within MARK_HALF_WIDTH of time t."""
    first, last = max(1, round((t - MARK_HALF_WIDTH) * FPS)), round((t + MARK_HALF_WIDTH) * FPS)
    errors, ssims = frames_in(tracks, "mse", first, last), frames_in(tracks, "ssim", first, last)
    if not len(errors):
        return None, None
    return float(metrics.psnr_from_mse(errors.mean())), float(ssims.mean())


def sharpness_ratio(tracks: Sequence[Track], reference: Sequence[Track], first: int, last: int) -> float | None:
    ours, truth = frames_in(tracks, "sharpness", first, last).sum(), frames_in(reference, "sharpness", first, last).sum()
    return float(ours / truth) if truth > 0 else None


def window_features(tracks: Sequence[Track], first: int, last: int) -> np.ndarray:
    """The feature samples of frames first..last of every track: (n, D)."""
    picked = []
    for t in tracks:
        frame = FEATURE_STRIDE * np.arange(1, len(t.features) + 1)
        picked.append(t.features[(frame >= first) & (frame <= last)])
    return np.concatenate(picked)


def windows_of(length: int) -> list[tuple[int, int]]:
    """(first, last) frames of the WINDOW_SECONDS windows over frames 1..length; a last window under 1 s is dropped
    (too few samples for a distribution) unless it is the only one."""
    size = WINDOW_SECONDS * FPS
    windows = [(a, a + size - 1) for a in range(1, length + 1, size)]
    if len(windows) > 1 and length - windows[-1][0] + 1 < FPS:
        windows.pop()
    return windows


def frechet_windows(tracks: Sequence[Track], reference: Sequence[Track], windows, scale) -> list[float]:
    """Per window, the Fréchet distance between the world's and the reference's features, both standardised by
    `scale` = (mean, std) of the reference's features over the whole run (so every window is in the same units)."""
    mean, std = scale
    return [metrics.frechet_distance((window_features(tracks, a, b) - mean) / std,
                                     (window_features(reference, a, b) - mean) / std) for a, b in windows]


def summarise(tracks: Sequence[Track], reference: Sequence[Track], seconds: float, scale) -> dict:
    """The fidelity, sharpness and long-horizon scores of one world over all streams."""
    marks = {f"{t}s": at_time(tracks, t) if t <= seconds else (None, None) for t in MARKS}
    length = max(len(t.sharpness) for t in reference)
    windows = windows_of(length)
    fd = frechet_windows(tracks, reference, windows, scale) if tracks[0].featured else []
    curve = [at_time(tracks, t) for t in range(1, math.floor(seconds) + 1)]
    return {
        "psnr": {k: v[0] for k, v in marks.items()}, "ssim": {k: v[1] for k, v in marks.items()},
        "fd_windows": fd, "drift": fd[-1] / fd[0] if len(fd) > 1 and fd[0] > 0 else None,  # one window: no drift to tell
        "sharpness_ratio": sharpness_ratio(tracks, reference, 1, length),
        "sharpness_windows": [sharpness_ratio(tracks, reference, a, b) for a, b in windows],
        "colour_shift": float(frames_in(tracks, "colour", 1, length).mean()),
        "curve": {"psnr": [c[0] for c in curve], "ssim": [c[1] for c in curve]},
    }


def per_stream(streams: Sequence[Stream], tracks: dict[str, list[Track]]) -> list[dict]:
    """Each stream's whole-stream PSNR, PSNR at 1 s and colour shift for every world scored against the reference:
    a total over all streams can hide one scene that a model (or its VAE) gets wrong throughout, and the 1 s mark
    over a few streams can rest on one of them."""
    return [{"name": stream.name, **{name: {"psnr": float(metrics.psnr_from_mse(np.mean(runs[i].mse))),
                                            "psnr_1s": at_time([runs[i]], 1.0)[0],
                                            "colour_shift": float(np.mean(runs[i].colour))}
                                     for name, runs in tracks.items() if name != "reference"}}
            for i, stream in enumerate(streams)]


# --- camera adherence --------------------------------------------------------------------------

CHECKS = range(FRAMES_PER_STEP, 1 + CAMERA_SECONDS * FPS, FRAMES_PER_STEP)  # each step's last frame, against frame 0


def implied_shifts(poses: Sequence[Pose], size: tuple[int, int]) -> np.ndarray:
    """(len(CHECKS),) pixels the picture's centre moves right under a pure yaw: f tan(yaw change) (left turn = +)."""
    focal = poses[0].intrinsics(*size)[1, 1]
    return focal * np.tan(np.radians([poses[k].yaw - poses[0].yaw for k in CHECKS]))


def measured_shifts(video: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(len(CHECKS),) horizontal shifts of frames CHECKS against frame 0. The search reaches 3/8 of the width each
    way, which leaves the template (the centre of the later frame) a quarter of the width. It matches the frames'
    vertical edges (metrics.vertical_edges), not their luminance: frame 0 is the reference's sharp, aliased picture
    and the later frames a decoder's, and on luminance the reference's own frames through the VAE, which follow the
    camera exactly, measured 56% off on 16 held-out scenes (the search ran to its bounds on flat skies and fields)
    against 11% on edges (docs/training.md, run 9)."""
    W, H = size
    first = metrics.vertical_edges(video[0], EDGE_SIGMA_PX)
    return np.array([metrics.estimate_shift(first, metrics.vertical_edges(video[k], EDGE_SIGMA_PX),
                                            (3 * W // 8, H // 8))[0] for k in CHECKS])


def measured_log_zooms(video: np.ndarray) -> np.ndarray:
    """(len(CHECKS),) log expansion about the centre of frames CHECKS against frame 0. It matches the frames' 2-8 px
    band (metrics.band_pass), not their luminance, for the reason `measured_shifts` matches edges: the reference's
    frames through the VAE, which follow the camera exactly, measured 59% off the reference's own zoom on luminance
    (16 held-out scenes) and 21% on the band (docs/training.md, run 11)."""
    first = metrics.band_pass(video[0], *ZOOM_BAND_PX)
    return np.log([metrics.estimate_zoom(first, metrics.band_pass(video[k], *ZOOM_BAND_PX)) for k in CHECKS])


def camera_adherence(scenes: int, reference, players: dict[str, Player], vae: VAE, size: tuple[int, int],
                     bar) -> dict:
    """Pure yaw and pure forward streams from the held-out scenes' starts: each player's yaw shift error against
    the camera's f tan(yaw) and forward expansion error against the reference world, in percent; and the same for
    the reference's own frames through the VAE ("vae"), which follow the camera exactly: what the estimators make
    of a perfect generator on this VAE, the floor under every player's error."""
    n = 1 + CAMERA_SECONDS * FPS
    implied, shifts, zooms = [], {}, {}   # per scene: (len(CHECKS),) arrays
    for i, seed in enumerate(HELD_OUT_SEEDS[:scenes]):
        scene, start = held_out_start(seed)
        reference.set_scene(scene)
        yaw = yaw_trajectory(start, n, YAW_DEG_PER_S if i % 2 == 0 else -YAW_DEG_PER_S)  # left, right, left, ...
        implied.append(implied_shifts(yaw, size))
        for kind, poses in (("yaw", yaw), ("forward", forward_trajectory(start, n, FORWARD_M_PER_S))):
            truth = reference.render(poses)
            videos = {"reference": truth, "vae": Autoencoder(vae).video(truth),
                      **{name: drive(p, truth[0], poses, seed=i) for name, p in players.items()}}
            for name, video in videos.items():
                if kind == "yaw":
                    shifts.setdefault(name, []).append(measured_shifts(video, size))
                else:
                    zooms.setdefault(name, []).append(measured_log_zooms(video))
            bar.update(len(CHECKS))
    ok = [_relative_error([s], [i], [True]) <= MEASURABLE_PCT for s, i in zip(shifts["reference"], implied)]
    result = {"yaw_deg_per_s": YAW_DEG_PER_S, "forward_m_per_s": FORWARD_M_PER_S, "seconds": CAMERA_SECONDS,
              "scenes": scenes, "scenes_measurable": int(sum(ok)),
              "reference_yaw_shift_error_pct": _relative_error(shifts["reference"], implied, ok)}
    for name in [*players, "vae"]:
        result[name] = {
            "yaw_shift_error_pct": _relative_error(shifts[name], implied, ok),
            "yaw_shift_ratio": _gain(shifts[name], implied, ok),
            "forward_error_pct": _relative_error(zooms[name], zooms["reference"], ok),
            "forward_zoom_ratio": _gain(zooms[name], zooms["reference"], ok)}
    return result


def _kept(measured, truth, keep) -> tuple[np.ndarray, np.ndarray] | None:
    """The kept scenes' values, concatenated; None if nothing is kept or the truth is all zero."""
    m = [x for x, k in zip(measured, keep) if k]
    t = [x for x, k in zip(truth, keep) if k]
    if not t or not np.any(np.concatenate(t)):
        return None
    return np.concatenate(m), np.concatenate(t)


def _relative_error(measured, truth, keep) -> float | None:
    """100 sum|measured - truth| / sum|truth| over the kept scenes (a move the wrong way counts over 100 %)."""
    if (kept := _kept(measured, truth, keep)) is None:
        return None
    m, t = kept
    return float(100 * np.abs(m - t).sum() / np.abs(t).sum())


def _gain(measured, truth, keep) -> float | None:
    """The least-squares factor g in measured = g truth: 1 when the world moves as much as it should, 0 when still."""
    if (kept := _kept(measured, truth, keep)) is None:
        return None
    m, t = kept
    return float((m * t).sum() / (t * t).sum())


# --- the command -------------------------------------------------------------------------------

@dataclass
class EvalOptions:
    checkpoint: str | None = None           # default: the shipped checkpoint
    levels: list[str] = field(default_factory=list)
    paths: list[str] = field(default_factory=list)
    seconds: float = 60.0
    scenes: int = 4
    device: str = "auto"
    baseline_steps: int = 4
    baseline_checkpoint: str | None = None  # default: the same checkpoint


def open_baseline(options: EvalOptions, world: GeneratedWorld) -> MultiStepWorld:
    if options.baseline_checkpoint is None:
        return MultiStepWorld(world, options.baseline_steps)
    other = GeneratedWorld.open(checkpoint=options.baseline_checkpoint, device=options.device)
    if other.size != world.size:
        raise InputError(options.baseline_checkpoint, "config", f"its frames are {other.size[0]}x{other.size[1]}, "
                         f"the evaluated checkpoint's {world.size[0]}x{world.size[1]}; both must be the same size")
    return MultiStepWorld(other, options.baseline_steps)


def run_eval(options: EvalOptions) -> dict:
    """Runs every stream and returns the result object that `--json` prints."""
    from world.reference import ReferenceWorld

    frames = 1 + round(options.seconds * FPS)
    if frames < 1 + FRAMES_PER_STEP:
        raise InputError("command line", "--seconds", f"must cover at least one step ({FRAMES_PER_STEP / FPS:.3f} s)")
    levels = [load_level(name) for name in options.levels]
    streams = held_out_streams(options.scenes, frames) + level_streams(levels, options.paths, frames)
    world = GeneratedWorld.open(checkpoint=options.checkpoint, device=options.device)
    players: dict[str, Player] = {"generated": world, "diffusion": open_baseline(options, world), "hold": HoldWorld()}
    reference = ReferenceWorld(world.size)
    total = sum(math.ceil((len(s.poses) - 1) / FRAMES_PER_STEP) for s in streams)
    total += 2 * options.scenes * len(CHECKS)
    try:
        with tqdm(total=total, desc="eval", unit="step", file=sys.stderr) as bar:
            tracks = {name: [] for name in [*players, "vae", "reference"]}
            for seed, stream in enumerate(streams):
                bar.set_postfix_str(stream.name)
                for name, track in run_stream(stream, reference, players, world.vae, seed, bar).items():
                    tracks[name].append(track)
            bar.set_postfix_str("camera adherence")
            movers = {name: players[name] for name in ("generated", "diffusion")}
            camera = camera_adherence(options.scenes, reference, movers, world.vae, world.size, bar)
    finally:
        reference.close()

    truth = np.concatenate([t.features for t in tracks["reference"]])
    scale = truth.mean(axis=0), np.maximum(truth.std(axis=0), FEATURE_STD_FLOOR)
    scores = {name: summarise(tracks[name], tracks["reference"], options.seconds, scale) for name in [*players, "vae"]}
    generated, diffusion, hold, vae = scores["generated"], scores["diffusion"], scores["hold"], scores["vae"]
    return clean({
        "checkpoint": str(world.checkpoint), "checkpoint_sha256": world.checkpoint_sha256, "stage": world.stage,
        "config": world.config.name, "size": list(world.size), "device": describe_device(world.device),
        "levels": [level.name for level in levels], "paths": list(options.paths),
        "scenes": list(HELD_OUT_SEEDS[:options.scenes]), "streams": len(streams), "seconds": options.seconds,
        "psnr": generated["psnr"], "ssim": generated["ssim"], "hold_psnr": hold["psnr"], "hold_ssim": hold["ssim"],
        "yaw_shift_error_pct": camera["generated"]["yaw_shift_error_pct"],
        "forward_error_pct": camera["generated"]["forward_error_pct"],
        "fd_windows": generated["fd_windows"], "drift": generated["drift"],
        "sharpness_ratio": generated["sharpness_ratio"], "sharpness_windows": generated["sharpness_windows"],
        "colour_shift": generated["colour_shift"],
        "camera": {k: v for k, v in camera.items() if k not in [*movers, "vae"]} | camera["generated"],
        "baselines": {
            "diffusion": {"steps": options.baseline_steps,
                          "checkpoint": str(players["diffusion"].world.checkpoint),
                          **{k: v for k, v in diffusion.items() if k != "curve"}, **camera["diffusion"]},
            "hold": {"psnr": hold["psnr"], "ssim": hold["ssim"], "sharpness_ratio": hold["sharpness_ratio"]},
        },
        "vae_bound": {"psnr": vae["psnr"], "ssim": vae["ssim"], "sharpness_ratio": vae["sharpness_ratio"],
                      "colour_shift": vae["colour_shift"], **camera["vae"]},
        "per_stream": per_stream(streams, tracks),
        "curves": {"t": list(range(1, math.floor(options.seconds) + 1)),
                   "psnr": {name: scores[name]["curve"]["psnr"] for name in players},
                   "ssim": {name: scores[name]["curve"]["ssim"] for name in players}},
        "fd_window_seconds": WINDOW_SECONDS,
    })


def clean(value):
    """JSON-ready: numbers rounded to 4 decimals (numpy ones made plain), non-finite ones None (JSON has no inf)."""
    if isinstance(value, dict):
        return {k: clean(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [clean(v) for v in value]
    if isinstance(value, (float, np.floating)):
        return round(float(value), 4) if math.isfinite(value) else None
    if isinstance(value, np.integer):
        return int(value)
    return value


# --- output ------------------------------------------------------------------------------------

def _num(v, form: str = ".2f") -> str:
    return "-" if v is None else format(v, form)


def print_report(r: dict) -> None:
    where = f"{len(r['scenes'])} held-out scenes" + (f" + levels {', '.join(r['levels'])}" if r["levels"] else "")
    print(f"{r['checkpoint']} ({r['config']}, stage {r['stage']}, {r['size'][0]}x{r['size'][1]}, {r['device']}): "
          f"{r['streams']} streams of {r['seconds']:g} s on {where}")
    diffusion = r["baselines"]["diffusion"]
    marks = list(r["psnr"])
    print(f"{'':<26}" + "".join(f"{m:>8}" for m in marks))
    rows = [("PSNR generated (dB)", r["psnr"]), ("PSNR hold", r["hold_psnr"]),
            (f"PSNR diffusion {diffusion['steps']}-step", diffusion["psnr"]),
            ("SSIM generated", r["ssim"]), ("SSIM hold", r["hold_ssim"]),
            (f"SSIM diffusion {diffusion['steps']}-step", diffusion["ssim"])]
    for label, values in rows:
        form = ".2f" if label.startswith("PSNR") else ".3f"
        print(f"{label:<26}" + "".join(f"{_num(values[m], form):>8}" for m in marks))
    c = r["camera"]
    print(f"camera ({c['scenes_measurable']}/{c['scenes']} scenes measurable; the estimator's own yaw error "
          f"{_num(c['reference_yaw_shift_error_pct'], '.1f')}%): yaw shift error "
          f"{_num(r['yaw_shift_error_pct'], '.1f')}% (moves {_num(c['yaw_shift_ratio'])}x the implied shift), "
          f"forward error {_num(r['forward_error_pct'], '.1f')}%; diffusion: "
          f"{_num(diffusion['yaw_shift_error_pct'], '.1f')}% / {_num(diffusion['forward_error_pct'], '.1f')}%")
    bound = r["vae_bound"]
    print(f"camera, the reference itself through the VAE (a perfect generator on this VAE): yaw shift error "
          f"{_num(bound['yaw_shift_error_pct'], '.1f')}%, forward error {_num(bound['forward_error_pct'], '.1f')}%")
    print(f"sharpness ratio {_num(r['sharpness_ratio'])} (diffusion {_num(diffusion['sharpness_ratio'])}; the "
          f"reference itself through the VAE: {_num(bound['sharpness_ratio'])} at {_num(bound['psnr'][marks[0]])} dB "
          f"PSNR, the ceiling this VAE sets)")
    for label, s in (("generated", r), ("diffusion", diffusion)):
        print(f"FD per {r['fd_window_seconds']} s window, {label}: {' '.join(_num(v) for v in s['fd_windows'])}; "
              f"drift {_num(s['drift'])}")
    print(f"colour shift (mean RGB distance, 0-255): generated {_num(r['colour_shift'], '.1f')}, diffusion "
          f"{_num(diffusion['colour_shift'], '.1f')}, the reference through the VAE "
          f"{_num(bound['colour_shift'], '.1f')}")
    print(f"{'per stream: PSNR at 1 s / whole / colour':<40}{'generated':>21}{'diffusion':>21}{'hold':>21}"
          f"{'VAE':>21}")
    for s in r["per_stream"]:
        print(f"{s['name'][:39]:<40}" + "".join(
            f"{_num(s[k]['psnr_1s']):>7}/{_num(s[k]['psnr']):>6}/{_num(s[k]['colour_shift'], '.1f'):>6}"
            for k in ("generated", "diffusion", "hold", "vae")))


def plot(r: dict, path) -> None:
    """PSNR and SSIM over time (generated, hold, diffusion) and the Fréchet distance per window, to a PNG."""
    from matplotlib.figure import Figure

    fig = Figure(figsize=(15, 4), layout="constrained")
    axes = fig.subplots(1, 3)
    styles = {"generated": ("-", "C0"), "hold": (":", "C1"), "diffusion": ("--", "C2")}
    t = r["curves"]["t"]
    for ax, key, unit in ((axes[0], "psnr", "PSNR (dB)"), (axes[1], "ssim", "SSIM")):
        for name, (line, colour) in styles.items():
            values = [np.nan if v is None else v for v in r["curves"][key][name]]
            ax.plot(t, values, line, color=colour, marker=".", label=name)
        ax.set(xlabel="time (s)", ylabel=unit, title=f"{unit.split()[0]} against the reference")
        ax.legend()
    width = r["fd_window_seconds"]
    for name, fd in (("generated", r["fd_windows"]), ("diffusion", r["baselines"]["diffusion"]["fd_windows"])):
        centres = [(width * i + min(width * (i + 1), r["seconds"])) / 2 for i in range(len(fd))]
        line, colour = styles[name]
        axes[2].plot(centres, [np.nan if v is None else v for v in fd], line, color=colour, marker="o", label=name)
    title = f"features per {width:g} s window" if r["seconds"] > width else f"features over the {r['seconds']:g} s"
    axes[2].set(xlabel="time (s)", ylabel="Fréchet distance", title=title)  # (a 1 s run has one window, of 1 s)
    axes[2].legend()
    fig.suptitle(f"{Path(r['checkpoint']).name}: {r['streams']} streams")
    write_replacing(path, lambda tmp: fig.savefig(tmp, dpi=100, format="png"), field="--plot")


def read_files(options: EvalOptions) -> Iterator[tuple[str, Path]]:
    """(what, path) for each file the evaluation reads, which its plot must not be written over."""
    for level in map(load_level, options.levels):
        yield f"the level file of {level.name}", level.source
        if level.image is not None:
            yield f"the start image of level {level.name}", level.image
    yield from (("a camera path it walks", Path(p)) for p in options.paths)
    checkpoints = [options.checkpoint or default_checkpoint_path(), options.baseline_checkpoint]
    yield from (("a checkpoint it evaluates", Path(c)) for c in checkpoints if c is not None)


def main(args) -> int:
    options = EvalOptions(checkpoint=args.checkpoint, levels=list(args.levels), paths=list(args.paths),
                          seconds=args.seconds, scenes=args.scenes, device=args.device,
                          baseline_steps=args.baseline_steps, baseline_checkpoint=args.baseline_checkpoint)
    if args.plot is not None:  # refused now, not after the evaluation's minutes
        out = check_output_path(args.plot, (".png",), field="--plot")
        refuse_overwriting(out, read_files(options), "--plot", "write the plot somewhere else")
    result = run_eval(options)
    if args.json:
        print(json.dumps(result))
    else:
        print_report(result)
    if args.plot is not None:  # after the numbers: a plot that cannot be written loses only itself
        plot(result, args.plot)
    return 0
