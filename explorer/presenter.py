"""Puts world frames on the screen: texture upload, light sharpening, Catmull-Rom upscaling, letterbox, overlays.

The world renders small (128x72 to 256x144) and the window is large, so the upscaling filter is most of what the
player sees. Per panel (one world frame; two in split view, side by side or, on a window about square or taller,
one above the other: `panel_rects`) and per presented frame:

1. `texture.write` the frame into a texture kept from frame to frame (re-created only when its size changes);
2. sharpen at the native size (a 5-tap unsharp mask into a small framebuffer: nearly free, and it restores some of
   the contrast the upscale spreads out);
3. upscale to the letterboxed viewport with a bicubic Catmull-Rom filter, separably: along x into a texture of the
   on-screen width and the native height, then along y into the window. Two 4-tap passes instead of one 16-tap
   (or 9 bilinear-tap) pass: on llvmpipe, Mesa's CPU rasteriser, a 1280x720 bicubic pass costs 13 ms in one pass
   and under 4 ms in two, because the first pass runs on a fifth of the pixels and unfiltered texel fetches are
   the cheapest kind;
4. blend the overlays (HUD, menu, messages: RGBA images the caller re-uploads only when their text changed) at
   1:1 pixel scale (scaled down only where one does not fit the window).

Between 2 and 3, on every draw where the camera has turned since the frame on screen was made (`set_view`), the
sharpened frame is re-projected at its native size to the camera's newest orientation: a rotation is a homography,
so the picture turns with the mouse at once instead of a world step (~200 ms) later, and the world's frame for the
new pose takes over when it comes. Parallax and what the turn reveals cannot be re-projected: the edge pixels
stretch, dimmed, into the strip that the frame does not cover.

The presenter draws into any framebuffer: the window's (`ctx.screen`) in the game, an offscreen one in tests and
in the benchmark. It never touches pygame; the game owns the window.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import moderngl
import numpy as np

_VERTEX = """
#version 330
in vec2 corner;          // (0..1, 0..1), the unit square as a triangle strip
uniform vec4 rect;       // x, y, w, h in normalised device coordinates
out vec2 uv;
void main() {
    uv = vec2(corner.x, 1.0 - corner.y);  // frames arrive row 0 at the top; GL textures start at the bottom
    gl_Position = vec4(rect.xy + corner * rect.zw, 0.0, 1.0);
}
"""

_SHARPEN = """
#version 330
uniform sampler2D frame;
uniform float amount;    // 0 = off; the unsharp mask adds amount x (pixel - mean of its 4 neighbours)
in vec2 uv;
out vec4 color;
void main() {
    ivec2 p = ivec2(gl_FragCoord.xy);
    ivec2 last = textureSize(frame, 0) - 1;
    // The target is drawn upright from a top-down frame, so flip rows while fetching.
    ivec2 q = ivec2(p.x, last.y - p.y);
    vec3 c = texelFetch(frame, q, 0).rgb;
    vec3 n = texelFetch(frame, clamp(q + ivec2(0, 1), ivec2(0), last), 0).rgb
           + texelFetch(frame, clamp(q - ivec2(0, 1), ivec2(0), last), 0).rgb
           + texelFetch(frame, clamp(q + ivec2(1, 0), ivec2(0), last), 0).rgb
           + texelFetch(frame, clamp(q - ivec2(1, 0), ivec2(0), last), 0).rgb;
    color = vec4(clamp(c + amount * (c - 0.25 * n), 0.0, 1.0), 1.0);
}
"""

_WEIGHTS = """
// Catmull-Rom weights of the texels t1 - 1 .. t1 + 2 at a fraction f past the centre of texel t1
vec4 catmull_rom(float f) {
    return vec4(f * (-0.5 + f * (1.0 - 0.5 * f)), 1.0 + f * f * (-2.5 + 1.5 * f),
                f * (0.5 + f * (2.0 - 1.5 * f)), f * f * (-0.5 + 0.5 * f));
}
"""

_CATMULL_ROM = """
#version 330
#define AXIS %d           // filter along x (0) or y (1); the other axis maps texels one to one
uniform sampler2D frame;  // upright (row 0 at the bottom)
in vec2 uv;
out vec4 color;
""" + _WEIGHTS + """
void main() {
    ivec2 size = textureSize(frame, 0);
    vec2 p = vec2(uv.x, 1.0 - uv.y) * vec2(size);  // texel i covers [i, i + 1)
    ivec2 d = AXIS == 0 ? ivec2(1, 0) : ivec2(0, 1);
    ivec2 row = ivec2(p) * (1 - d);  // the texel index across the axis; along it, the taps below
    float t1 = floor(p[AXIS] - 0.5);  // the texel whose centre is just before p
    vec4 w = catmull_rom(p[AXIS] - 0.5 - t1);
    int i = int(t1), last = size[AXIS] - 1;
    vec4 c = texelFetch(frame, row + d * clamp(i - 1, 0, last), 0) * w.x
           + texelFetch(frame, row + d * clamp(i, 0, last), 0) * w.y
           + texelFetch(frame, row + d * clamp(i + 1, 0, last), 0) * w.z
           + texelFetch(frame, row + d * clamp(i + 2, 0, last), 0) * w.w;
    color = vec4(clamp(c.rgb, 0.0, 1.0), 1.0);
}
"""

_REPROJECT = """
#version 330
#define REVEALED 0.6      // brightness of what a turn reveals beyond the frame: not drawn yet, and looks it
                          // (at 0.35 a flick flashed a dark slab over up to 40% of the window)
uniform sampler2D frame;  // upright (row 0 at the bottom), native size
uniform mat3 turn;        // a ray of the camera now -> the same ray in the camera the frame was made from
uniform vec2 tan_half;    // tan of half the horizontal and vertical field of view
in vec2 uv;
out vec4 color;
vec4 tap(ivec2 q, ivec2 last) { return texelFetch(frame, clamp(q, ivec2(0), last), 0); }
""" + _WEIGHTS + """
void main() {
    ivec2 size = textureSize(frame, 0), last = size - 1;
    vec2 ndc = gl_FragCoord.xy / vec2(size) * 2.0 - 1.0;  // upright: +y is up in the picture
    vec3 ray = turn * vec3(ndc * tan_half, -1.0);
    vec2 q = ray.xy / max(-ray.z, 1e-6) / tan_half * 0.5 + 0.5;  // where the ray meets the frame, 0..1 inside it
    vec2 p = q * vec2(size);  // texel i covers [i, i + 1)
    // how far outside the frame (what the turn reveals: the edge texels stretched, dimmed as it goes)
    float outside = ray.z < 0.0 ? max(max(-q.x, q.x - 1.0), max(-q.y, q.y - 1.0)) : 1.0;
    // Catmull-Rom in 2D (16 taps): at the native size the taps are few, and the upscale that follows keeps its own
    vec2 t1 = floor(p - 0.5);
    vec4 wx = catmull_rom(p.x - 0.5 - t1.x), wy = catmull_rom(p.y - 0.5 - t1.y);
    ivec2 i = ivec2(t1);
    vec4 c = vec4(0.0);
    for (int y = 0; y < 4; y++) {
        vec4 row = tap(i + ivec2(-1, y - 1), last) * wx.x + tap(i + ivec2(0, y - 1), last) * wx.y
                 + tap(i + ivec2(1, y - 1), last) * wx.z + tap(i + ivec2(2, y - 1), last) * wx.w;
        c += row * wy[y];
    }
    color = vec4(clamp(c.rgb, 0.0, 1.0) * mix(1.0, REVEALED, smoothstep(0.0, 0.06, outside)), 1.0);
}
"""

_OVERLAY = """
#version 330
uniform sampler2D image;  // RGBA, row 0 at the top, straight alpha
in vec2 uv;
out vec4 color;
void main() { color = texture(image, uv); }
"""

ANCHORS = ("top-left", "top-right", "center", "bottom")
MARGIN = 8  # pixels between an overlay and the window's edge
STACK_GAIN = 1.5  # split view stacks the worlds where that shows them this much wider than side by side


@dataclass
class _Panel:
    """One world frame on screen: its uploaded texture, its sharpened copy, and its copy widened to the on-screen
    width (re-made when the window size changes)."""
    size: tuple[int, int]
    source: moderngl.Texture
    sharp: moderngl.Texture
    sharp_fbo: moderngl.Framebuffer
    turned: moderngl.Texture          # the sharpened frame re-projected to the camera's newest orientation
    turned_fbo: moderngl.Framebuffer
    wide: moderngl.Texture | None = None
    wide_fbo: moderngl.Framebuffer | None = None

    def release(self):
        for obj in (self.wide_fbo, self.wide, self.turned_fbo, self.turned, self.sharp_fbo, self.sharp, self.source):
            if obj is not None:
                obj.release()


@dataclass
class _Overlay:
    texture: moderngl.Texture
    anchor: str


def letterbox(content: tuple[int, int], window: tuple[int, int]) -> tuple[int, int, int, int]:
    """The largest rectangle (x, y, w, h) of the content's aspect ratio centred in the window, in pixels."""
    cw, ch = content
    ww, wh = window
    scale = min(ww / cw, wh / ch)
    w, h = max(1, round(cw * scale)), max(1, round(ch * scale))
    return (ww - w) // 2, (wh - h) // 2, w, h


def panel_rects(panels: list[tuple[int, int]], window: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Where each panel (native width, height) is drawn: (x, y from the top, w, h) in window pixels, letterboxed
    together. Two panels (split view) go side by side at one height, as a comparison is read, unless one above
    the other at one width shows them half as large again (STACK_GAIN: for 16:9 worlds, a window about square or
    taller), where side by side would leave two slivers. Worlds of different native sizes are scaled to the same
    height (or width)."""
    if len(panels) < 2:
        return [letterbox(panels[0], window)] if panels else []

    def layout(across: bool):
        along = [(w / h, 1.0) if across else (1.0, h / w) for w, h in panels]  # each panel at unit height / width
        total = (sum(a for a, _ in along), 1.0) if across else (1.0, sum(b for _, b in along))
        x, y, w, h = letterbox(total, window)
        rects, offset = [], 0
        for i, (a, b) in enumerate(along):
            last = i == len(along) - 1
            if across:  # the last panel takes what rounding left, so the panels tile the letterbox exactly
                pw = w - offset if last else round(a * h)
                rects.append((x + offset, y, pw, h))
                offset += pw
            else:
                ph = h - offset if last else round(b * w)
                rects.append((x, y + offset, w, ph))
                offset += ph
        return rects
    across, stacked = layout(True), layout(False)
    return stacked if stacked[0][2] >= STACK_GAIN * across[0][2] else across


def split_stacked(panel: tuple[int, int], window: tuple[int, int]) -> bool:
    """Whether split view, two panels of this size, shows them one above the other in this window."""
    first, second = panel_rects([panel, panel], window)
    return first[0] == second[0]


def overlay_rect(anchor: str, size: tuple[int, int], window: tuple[int, int]) -> tuple[int, int, int, int]:
    """Where an overlay of `size` is drawn at `anchor`: (x, y from the top, w, h) in window pixels. One that does
    not fit inside the margins (a long path in a message, the HUD in a small window) is scaled down until it does,
    rather than cut off at the window's edges."""
    ww, wh = window
    scale = min(1.0, (ww - 2 * MARGIN) / size[0], (wh - 2 * MARGIN) / size[1])
    w, h = max(1, int(size[0] * scale)), max(1, int(size[1] * scale))
    x, y = {"top-left": (MARGIN, MARGIN), "top-right": (ww - w - MARGIN, MARGIN),
            "center": ((ww - w) // 2, (wh - h) // 2), "bottom": ((ww - w) // 2, wh - h - MARGIN)}[anchor]
    return x, y, w, h


def overlap(a: tuple[int, int, int, int], b: tuple[int, int, int, int]) -> bool:
    """Whether two rects (x, y, w, h) share any pixel."""
    return a[0] < b[0] + b[2] and b[0] < a[0] + a[2] and a[1] < b[1] + b[3] and b[1] < a[1] + a[3]


class Presenter:
    def __init__(self, ctx: moderngl.Context, sharpen: float = 0.35):
        """ctx: the context that owns the target framebuffer (the window's, or a standalone one).
        sharpen: strength of the unsharp mask before upscaling (0 turns it off)."""
        self.ctx = ctx
        self._quad = quad = ctx.buffer(np.array([0, 0, 1, 0, 0, 1, 1, 1], dtype="f4").tobytes())
        self._programs = {name: ctx.program(vertex_shader=_VERTEX, fragment_shader=src)
                          for name, src in (("sharpen", _SHARPEN), ("upscale_x", _CATMULL_ROM % 0),
                                              ("upscale_y", _CATMULL_ROM % 1), ("reproject", _REPROJECT),
                                              ("overlay", _OVERLAY))}
        self._programs["sharpen"]["amount"].value = sharpen
        self._vaos = {name: ctx.vertex_array(prog, [(quad, "2f", "corner")])
                      for name, prog in self._programs.items()}
        self._panels: list[_Panel] = []
        self._overlays: dict[str, _Overlay] = {}
        self._turn: tuple[np.ndarray, float] | None = None  # (3x3 rotation, vertical fov): see set_view

    # --- content --------------------------------------------------------------------------------
    def show(self, frames) -> None:
        """The world frames to present, left to right: a list of (H, W, 3) uint8 (one, or two in split view)."""
        frames = [np.ascontiguousarray(f, dtype=np.uint8) for f in frames]
        sizes = [(f.shape[1], f.shape[0]) for f in frames]
        if [p.size for p in self._panels] != sizes:  # a new layout (split view toggled, another world)
            for panel in self._panels:
                panel.release()
            self._panels = [self._new_panel(size) for size in sizes]
        for panel, frame in zip(self._panels, frames):
            panel.source.write(frame)
            self._sharpen(panel)

    def set_view(self, turn: np.ndarray | None, fov: float = 60.0) -> None:
        """From the next draw on, show the frames turned by `turn`, a 3x3 rotation taking a ray of the camera now to
        the same ray in the camera the frames were made from (None, or the identity: as they are); `fov` is the
        frames' vertical field of view in degrees."""
        identity = turn is None or np.allclose(turn, np.eye(3), atol=1e-9)
        self._turn = None if identity else (np.asarray(turn, dtype=float), float(fov))

    def set_overlay(self, name: str, rgba: np.ndarray | None, anchor: str = "top-left") -> None:
        """Put (or with None remove) an RGBA overlay, (h, w, 4) uint8 with row 0 at the top. Call it when the
        overlay's content changes, not every frame: the upload is the cost."""
        if anchor not in ANCHORS:
            raise ValueError(f"anchor must be one of {ANCHORS}, got {anchor!r}")
        old = self._overlays.pop(name, None)
        if rgba is None:
            if old is not None:
                old.texture.release()
            return
        size = (rgba.shape[1], rgba.shape[0])
        if old is not None and old.texture.size == size:
            texture = old.texture
        else:
            if old is not None:
                old.texture.release()
            texture = self.ctx.texture(size, 4)  # linear: exact at full size (drawn pixel on texel), smooth scaled
        texture.write(np.ascontiguousarray(rgba, dtype=np.uint8))
        self._overlays[name] = _Overlay(texture, anchor)

    # --- drawing --------------------------------------------------------------------------------
    def draw(self, target: moderngl.Framebuffer, size: tuple[int, int]) -> None:
        """Draw into `target` (size: its width, height in pixels): the panels (`panel_rects`), letterboxed between
        black bars, and the overlays over them."""
        if 0 in size:
            return  # a minimised window
        target.use()
        target.viewport = (0, 0, *size)
        self.ctx.disable(moderngl.DEPTH_TEST | moderngl.CULL_FACE | moderngl.BLEND)
        rects = panel_rects([p.size for p in self._panels], size)
        if sum(w * h for _, _, w, h in rects) != size[0] * size[1]:
            target.clear(0.0, 0.0, 0.0, 1.0)  # black bars (where the panels cover everything, a waste of 0.2 ms)
        for panel, (x, y, w, h) in zip(self._panels, rects):
            self._upscale(panel, self._reproject(panel) if self._turn is not None else panel.sharp, target, size,
                          (x, size[1] - y - h, w, h))
        if self._overlays:
            self.ctx.enable(moderngl.BLEND)
            self.ctx.blend_func = moderngl.SRC_ALPHA, moderngl.ONE_MINUS_SRC_ALPHA
            for overlay in self._overlays.values():
                ox, oy, ow, oh = overlay_rect(overlay.anchor, overlay.texture.size, size)
                overlay.texture.use(0)
                self._draw_rect("overlay", (ox, size[1] - oy - oh, ow, oh), size)
            self.ctx.disable(moderngl.BLEND)

    def read(self, target: moderngl.Framebuffer, size: tuple[int, int]) -> np.ndarray:
        """What `target` shows, (H, W, 3) uint8, row 0 at the top (for screenshots)."""
        data = target.read(viewport=(0, 0, *size), components=3, alignment=1)
        return np.frombuffer(data, np.uint8).reshape(size[1], size[0], 3)[::-1].copy()

    def release(self) -> None:
        for panel in self._panels:
            panel.release()
        for overlay in self._overlays.values():
            overlay.texture.release()
        for obj in (*self._vaos.values(), *self._programs.values(), self._quad):
            obj.release()
        self._panels, self._overlays = [], {}

    # --- internals ------------------------------------------------------------------------------
    def _new_panel(self, size: tuple[int, int]) -> _Panel:
        source = self.ctx.texture(size, 3)
        source.filter = (moderngl.NEAREST, moderngl.NEAREST)
        sharp, turned = self.ctx.texture(size, 4), self.ctx.texture(size, 4)
        return _Panel(size, source, sharp, self.ctx.framebuffer(color_attachments=[sharp]),
                      turned, self.ctx.framebuffer(color_attachments=[turned]))

    def _reproject(self, panel: _Panel) -> moderngl.Texture:
        """The panel's sharpened frame as the camera sees it after `set_view`'s turn."""
        turn, fov = self._turn
        tan_v = np.tan(np.radians(fov) / 2)
        program = self._programs["reproject"]
        program["turn"].write(turn.astype("f4").T.tobytes())  # GLSL matrices are column-major
        program["tan_half"].value = (tan_v * panel.size[0] / panel.size[1], tan_v)
        panel.turned_fbo.use()
        panel.sharp.use(0)
        self._draw_rect("reproject", (0, 0, *panel.size), panel.size)
        return panel.turned

    def _sharpen(self, panel: _Panel) -> None:
        panel.sharp_fbo.use()  # draw() binds its target again before drawing
        panel.source.use(0)
        self._draw_rect("sharpen", (0, 0, *panel.size), panel.size)

    def _upscale(self, panel: _Panel, frame: moderngl.Texture, target: moderngl.Framebuffer,
                 target_size: tuple[int, int], rect: tuple[int, int, int, int]) -> None:
        """Catmull-Rom from the panel's `frame` (sharpened, maybe re-projected) to `rect` of the target: along x,
        then along y."""
        wide_size = (rect[2], panel.size[1])
        if panel.wide is None or panel.wide.size != wide_size:
            if panel.wide is not None:
                panel.wide_fbo.release()
                panel.wide.release()
            panel.wide = self.ctx.texture(wide_size, 4)
            panel.wide_fbo = self.ctx.framebuffer(color_attachments=[panel.wide])
        panel.wide_fbo.use()
        frame.use(0)
        self._draw_rect("upscale_x", (0, 0, *wide_size), wide_size)
        target.use()
        target.viewport = (0, 0, *target_size)
        panel.wide.use(0)
        self._draw_rect("upscale_y", rect, target_size)

    def _draw_rect(self, program: str, rect: tuple[int, int, int, int], target_size: tuple[int, int]) -> None:
        """Draw the unit quad over pixel rect (x, y from the bottom, w, h) of a target of target_size."""
        x, y, w, h = rect
        tw, th = target_size
        self._programs[program]["rect"].value = (2 * x / tw - 1, 2 * y / th - 1, 2 * w / tw, 2 * h / th)
        self._vaos[program].render(moderngl.TRIANGLE_STRIP)


def measure_cost(window: tuple[int, int] = (1280, 720), frame: tuple[int, int] = (256, 144),
                 frames: int = 120) -> dict:
    """Milliseconds per presented frame (upload + sharpen + upscale + HUD-sized overlay, then glFinish), drawing
    into an offscreen framebuffer of `window` size on a standalone EGL context."""
    ctx = moderngl.create_standalone_context(backend="egl")
    target = ctx.framebuffer(color_attachments=[ctx.renderbuffer(window)])
    presenter = Presenter(ctx)
    rng = np.random.default_rng(0)
    images = rng.integers(0, 256, (8, frame[1], frame[0], 3), dtype=np.uint8)
    presenter.set_overlay("hud", rng.integers(0, 256, (150, 330, 4), dtype=np.uint8))
    renderer = ctx.info["GL_RENDERER"]
    times = []
    try:
        for i in range(frames + 10):
            if i == 10:  # the first frames compile shaders and allocate
                cpu = time.process_time()
            start = time.perf_counter()
            presenter.show([images[i % len(images)]])
            presenter.draw(target, window)
            ctx.finish()
            times.append(time.perf_counter() - start)
        cpu = time.process_time() - cpu
    finally:
        presenter.release()
        target.release()
        ctx.release()
    ms = np.array(times[10:]) * 1000
    # Wall time is what the player waits for; CPU time (all of this process's threads, llvmpipe's rasteriser
    # threads included) is the work done, which other jobs on the machine do not inflate.
    return {"window": f"{window[0]}x{window[1]}", "frame": f"{frame[0]}x{frame[1]}", "frames": frames,
            "ms_p50": round(float(np.median(ms)), 3), "ms_p90": round(float(np.percentile(ms, 90)), 3),
            "cpu_ms": round(cpu * 1000 / frames, 3), "renderer": renderer}


if __name__ == "__main__":
    # python -m explorer.presenter: the presenter's cost per frame at 1280x720 (benchmarks.md)
    for size in ((128, 72), (256, 144)):
        print(measure_cost(frame=size))
