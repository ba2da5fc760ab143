"""ReferenceWorld: the World of DESIGN section 2 drawn by rasterising a level's procedural scene (ModernGL).

It is the ground truth the generated world learns from and is judged against, and a playable world of its own.
Frames are a function of (scene, pose) only: the same poses give byte-identical frames on the same machine,
from any instance, in any order.
"""
from __future__ import annotations

import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Sequence

import moderngl
import numpy as np

from camera.pose import Pose
from explorer.interrupts import held_interrupts
from world.base import FRAMES_PER_STEP
from world.gl_scene import GLResources, SceneRenderer
from world.level import Level, list_levels, load_level, require_scene
from world.scene import SceneParams


class ReferenceWorld:
    def __init__(self, size: tuple[int, int], ctx: moderngl.Context | None = None):
        """size: (width, height) of the frames. ctx: a context to share (e.g. the presenter's); without one
        a headless EGL context is created and owned. Every call makes the context current for its duration
        (another context made since may be current on this thread) and draws into a private framebuffer;
        the previous context, bound framebuffer and enable flags are restored afterwards."""
        self.size = (int(size[0]), int(size[1]))
        self._own_ctx = ctx is None
        with held_interrupts():
            self.ctx = moderngl.create_standalone_context(backend="egl") if ctx is None else ctx
        with self._drawing():
            self.fbo = self.ctx.framebuffer(color_attachments=[self.ctx.renderbuffer(self.size, components=3)],
                                            depth_attachment=self.ctx.depth_renderbuffer(self.size))
            self._scope = self.ctx.scope(self.fbo, enable_only=moderngl.DEPTH_TEST | moderngl.CULL_FACE)
            self._res = GLResources(self.ctx)
        self._renderer: SceneRenderer | None = None
        self._pose: Pose | None = None

    @contextmanager
    def _drawing(self):
        """The context made current, and stop signals (Ctrl-C, SIGTERM, SIGHUP) held until the GL calls are done:
        moderngl calls back into Python as it builds a program, and a signal handler's exception raised there
        (render's SIGTERM and SIGHUP raise SystemExit) crashed the process (a NULL it put in a dict, SIGSEGV)."""
        with held_interrupts(), self.ctx:
            yield

    # --- World protocol ---
    def reset(self, level: Level | str | Path, seed: int = 0) -> np.ndarray:
        """Load the level's scene and return the frame at its start pose, (H, W, 3) uint8. The scene is static
        and fully given by the level, so `seed` changes nothing here (it exists for the generated world)."""
        if not isinstance(level, Level):
            level = load_level(level)
        require_scene(level)
        self.set_scene(level.scene)
        return self.render([level.start])[0]

    def step(self, poses: Sequence[Pose]) -> np.ndarray:
        """One step: FRAMES_PER_STEP poses in, (4, H, W, 3) uint8 out."""
        if len(poses) != FRAMES_PER_STEP:
            raise ValueError(f"step takes {FRAMES_PER_STEP} poses, got {len(poses)}")
        return self.render(poses)

    def state(self) -> Pose | None:
        """The last rendered pose (the scene is static, so that is all there is)."""
        return self._pose

    def restore(self, state: Pose | None) -> None:
        self._pose = state

    # --- beyond the protocol ---
    def set_scene(self, scene: SceneParams) -> None:
        """Switch to another scene (data generation draws random scenes without levels). The same scene again
        keeps what was built for it."""
        if self._renderer is not None and self._renderer.scene == scene:
            return
        with self._drawing():
            if self._renderer is not None:
                self._renderer.release()
            self._renderer = SceneRenderer(self._res, scene)

    def render(self, poses: Sequence[Pose]) -> np.ndarray:
        """Frames at any number of poses, (N, H, W, 3) uint8, row 0 at the top."""
        if self._renderer is None:
            raise RuntimeError("no scene: call reset(level) or set_scene(scene) first")
        w, h = self.size
        frames = np.empty((len(poses), h, w, 3), np.uint8)
        with self._drawing(), self._scope:
            self.ctx.front_face = "ccw"
            for i, pose in enumerate(poses):
                self.fbo.clear(depth=1.0)
                self._renderer.draw(pose, self.size)
                self.fbo.read_into(frames[i], components=3, alignment=1)
        if len(poses):
            self._pose = poses[-1]
        return np.ascontiguousarray(frames[:, ::-1])  # GL rows run bottom-up

    def close(self) -> None:
        with self._drawing():
            if self._renderer is not None:
                self._renderer.release()
                self._renderer = None
            self._res.release()
            self.fbo.release()
        if self._own_ctx:
            with held_interrupts():
                self.ctx.release()


def save_level_screenshots(out_dir, size: tuple[int, int] = (512, 288)) -> list[Path]:
    """Render every shipped level's start frame to out_dir/NAME.png; returns the paths."""
    import matplotlib.pyplot as plt

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    world = ReferenceWorld(size)
    paths = []
    try:
        for level in list_levels():
            if level.scene is None:
                continue
            path = out_dir / f"{level.name}.png"
            plt.imsave(path, world.reset(level))
            paths.append(path)
    finally:
        world.close()
    return paths


def frames_per_second(size: tuple[int, int], level="meadow", frames: int = 480) -> float:
    """Rendering speed including readback: a 24 m walk from the level's start, turning round once. The poses
    are rendered once before timing, so the meshes near the path are built and the shaders compiled."""
    level = load_level(level)
    start, world = level.start, ReferenceWorld(size)
    try:
        world.set_scene(level.scene)
        x, y, z = start.position
        poses = [start.moved(position=(x, y, z - 0.05 * i), yaw=start.yaw + 360.0 * i / frames) for i in range(frames)]
        world.render(poses)
        t = time.perf_counter()
        world.render(poses)
        return frames / (time.perf_counter() - t)
    finally:
        world.close()


if __name__ == "__main__":
    # python -m world.reference [OUT_DIR]: regenerate the level screenshots and print the rendering speed
    out = Path(sys.argv[1]) if len(sys.argv) > 1 else Path(__file__).resolve().parents[1] / "docs/images/levels"
    for p in save_level_screenshots(out):
        print(p)
    for level in list_levels():
        speeds = [f"{w}x{h}: {frames_per_second((w, h), level.source):4.0f}" for w, h in ((128, 72), (256, 144))]
        print(f"{level.name:12s} frames/s  " + "  ".join(speeds))
