"""`explorer render`: a scripted camera path through a level, to an H.264 video, headless."""
from __future__ import annotations

import numpy as np
import torch
from tqdm import tqdm

from camera.paths import load_path
from explorer.video import VideoWriter
from world.base import stream_poses
from world.level import load_level
from world.make import make_world


def resize_frames(frames: np.ndarray, size: tuple[int, int]) -> np.ndarray:
    """(N, H, W, 3) uint8 -> (N, size[1], size[0], 3) uint8, bicubic with antialiasing (identity if the size matches)."""
    if frames.shape[2:0:-1] == tuple(size):
        return frames
    x = torch.from_numpy(frames).permute(0, 3, 1, 2).float()
    x = torch.nn.functional.interpolate(x, size=(size[1], size[0]), mode="bicubic", antialias=True,
                                        align_corners=False)
    return x.round().clamp(0, 255).to(torch.uint8).permute(0, 2, 3, 1).contiguous().numpy()


def render_path(level, path, out, world_kind: str = "reference", size=None, checkpoint=None, device: str = "auto",
                seed: int = 0, random_config: str | None = None) -> int:
    """Renders the path and returns the number of frames written."""
    level = load_level(level)
    camera_path = load_path(path)
    poses = camera_path.poses(start=level.start)
    world = make_world(world_kind, size=size if world_kind == "reference" else None, checkpoint=checkpoint,
                       device=device, level=level, random_config=random_config if world_kind == "generated" else None)
    out_size = size or world.size
    with VideoWriter(out, out_size, fps=camera_path.fps) as writer, \
            tqdm(total=len(poses), unit="frame", desc=f"render {level.name}") as bar:
        for frames in stream_poses(world, level, seed, poses):
            writer.write(resize_frames(frames, out_size))
            bar.update(len(frames))
    return writer.frames
