"""`explorer render`: a scripted camera path through a level, to an H.264 video, headless."""
from __future__ import annotations

import sys

import numpy as np
import torch
from tqdm import tqdm

from camera.paths import load_path, placed_poses
from explorer.video import VideoWriter
from world.base import stream_poses
from world.level import load_level
from world.make import WorldOpener


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size[1], size[0], 3) uint8, bicubic with antialiasing (identity if the size matches).
    A frame at a time: the float intermediates of a large size (8192x8192: 0.8 GB a frame) are then held once."""
    if frames.shape[2:0:-1] == tuple(size):
        return frames
    out = np.empty((len(frames), size[1], size[0], 3), np.uint8)
    for i, frame in enumerate(frames):
        x = torch.from_numpy(frame).permute(2, 0, 1)[None].float()
        x = torch.nn.functional.interpolate(x, size=(size[1], size[0]), mode="bicubic", antialias=True,
                                            align_corners=False)
        out[i] = x[0].round_().clamp_(0, 255).to(torch.uint8).permute(1, 2, 0).numpy()
    return out


def warn_below_ground(level, poses, path, fps: float) -> None:
    """A path may fly anywhere, but one that goes under the terrain sees through it (sky above, haze below), which
    looks like a bug of the renderer: say where, once."""
    if level.scene is None:
        return
    from world.scene import height_at
    position = np.array([pose.position for pose in poses])
    ground = height_at(level.scene, position[:, 0], position[:, 2])
    below = np.flatnonzero(position[:, 1] < ground)
    if below.size:
        i = int(below[0])
        y, ground = (round(float(v), 2) + 0.0 for v in (position[i, 1], ground[i]))  # no "-0.00"
        print(f"explorer: warning: {path}: the camera goes below the ground at {i / fps:.2f} s (frame {i}: y = "
              f"{y:.2f}, the ground at {ground:.2f}), where the terrain is seen through", file=sys.stderr)


def render_path(level, path, out, world_kind: str = "reference", size=None, checkpoint=None, device: str = "auto",
                seed: int = 0, random_config: str | None = None) -> int:
    """Renders the path and returns the number of frames written. world_kind "compare": the generated world on the
    left and the reference world on the right, from the same start along the same poses, each at `size`."""
    level = load_level(level)
    camera_path = load_path(path)
    poses = placed_poses(camera_path, level.start, path)
    warn_below_ground(level, poses, path, camera_path.fps)
    opener = WorldOpener(checkpoint, device, level, random_config)
    worlds = []
    try:
        if world_kind == "reference":
            worlds.append(opener("reference", size))
        else:
            worlds.append(opener("generated", None))
            if world_kind == "compare":  # the reference at the model's size: both panels equally sharp
                worlds.append(opener("reference", worlds[0].size))
        panel = size or worlds[0].size
        streams = [stream_poses(world, level, seed, poses) for world in worlds]
        with VideoWriter(out, (panel[0] * len(worlds), panel[1]), fps=camera_path.fps) as writer, \
                tqdm(total=len(poses), unit="frame", desc=f"render {level.name}") as bar:
            for parts in zip(*streams):
                writer.write(np.concatenate([resize_frames(frames, panel) for frames in parts], axis=2))
                bar.update(len(parts[0]))
    finally:
        for world in worlds:
            if hasattr(world, "close"):
                world.close()
    return writer.frames
