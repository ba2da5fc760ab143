"""The text over the world: the HUD (F1), the pause menu (Esc) and short messages.

Text is drawn by pygame.font (its bundled font, so no system fonts are needed) into RGBA images that the presenter
blends over the frame. Rendering text and uploading it costs far more than drawing it, so a panel renders again
only when its text changes, and the HUD's numbers are averages refreshed a few times a second, not every frame.
"""
from __future__ import annotations

import math
import os
from collections import deque
from dataclasses import dataclass

import numpy as np

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402

from camera.pose import Pose, heading  # noqa: E402

HUD_REFRESH = 0.25  # seconds between HUD text updates
MENU_ITEMS = ("Resume", "Restart", "Switch world", "Quit")


class TextPanel:
    """Lines of text on a translucent box, as an RGBA image, (h, w, 4) uint8 with row 0 at the top."""

    # The box is dark grey, not black: where a panel reaches into the black bars beside the picture (the HUD in a
    # 4:3 window, the split view) a black box vanished there and the part over the picture looked cut off.
    def __init__(self, size: int = 20, padding: int = 8, background=(40, 40, 40, 176), color=(235, 235, 235)):
        pygame.font.init()
        self.font = pygame.font.Font(None, size)
        self.padding, self.background, self.color = padding, background, color
        self._lines: tuple[str, ...] | None = None
        self.image: np.ndarray | None = None

    @property
    def line_height(self) -> int:
        return self.font.get_linesize()

    def size_of(self, lines) -> tuple[int, int]:
        """The (w, h) in pixels that `render(lines)` would make, without rendering."""
        w = max((self.font.size(line)[0] for line in lines), default=0) + 2 * self.padding
        return w, self.line_height * len(lines) + 2 * self.padding

    def render(self, lines) -> bool:
        """Render `lines` into `image` if they differ from the last call; True when the image changed."""
        lines = tuple(lines)
        if lines == self._lines:
            return False
        self._lines = lines
        if not lines:
            self.image = None
            return True
        rendered = [self.font.render(line, True, self.color) for line in lines]
        w, h = self.size_of(lines)
        surface = pygame.Surface((w, h), pygame.SRCALPHA)
        surface.fill(self.background)
        for i, r in enumerate(rendered):
            surface.blit(r, (self.padding, self.padding + i * self.line_height))
        self.image = np.frombuffer(pygame.image.tobytes(surface, "RGBA"), np.uint8).reshape(h, w, 4)
        return True


@dataclass
class FrameStats:
    """One presented frame, as the HUD averages it."""
    t: float            # seconds, when it was presented
    step_ms: float      # how long the world took for the step that made it
    latency_ms: float   # input sample -> present


def reading(value: float, decimals: int = 1) -> float:
    """`value` as the HUD shows it: rounded, and never "-0.0" (a camera a hair below level is level)."""
    return round(value, decimals) + 0.0


class Hud:
    """Running numbers of the last second and the text lines that show them."""

    def __init__(self, world: str, device: str, fps: float):
        self.world, self.device = world, device
        self.frames: deque[FrameStats] = deque(maxlen=round(fps))  # the last second
        self.dropped = 0
        self._text: list[str] = []
        self._refreshed = -1e9

    def presented(self, stats: FrameStats) -> None:
        self.frames.append(stats)

    def lines(self, now: float, pose: Pose, split: str | None = None) -> list[str]:
        """The HUD text; its numbers change at most every HUD_REFRESH seconds, so the panel rarely re-renders."""
        if now - self._refreshed < HUD_REFRESH and self._text:
            return self._text
        self._refreshed = now
        f = list(self.frames)
        # No frame of this world yet (it is opening): dashes, not 0.0 fps and 0 ms, which read as measured
        fps = f"{(len(f) - 1) / (f[-1].t - f[0].t):4.1f}" if len(f) > 1 and f[-1].t > f[0].t else "  --"
        step = f"{np.mean([s.step_ms for s in f]):5.1f}" if f else "   --"
        latency = f"{np.mean([s.latency_ms for s in f]):5.0f}" if f else "   --"
        x, y, z = (reading(v, 2) for v in pose.position)
        yaw, pitch, roll = reading(heading(pose.yaw)), reading(pose.pitch), reading(pose.roll)
        self._text = [
            f"{fps} fps   step {step} ms   latency {latency} ms   dropped {self.dropped}",
            f"pos {x:7.2f} {y:6.2f} {z:7.2f}   yaw {yaw:6.1f}   pitch {pitch:5.1f}   roll {roll:5.1f}",
            f"world {self.world} on {self.device}" + (f"   split: {split}" if split else ""),
            "F1 hud   F11 fullscreen   F12 screenshot   R rewind   Tab split   Esc menu",
        ]
        return self._text


MOUSE_LEFT, MOUSE_WHEEL_UP, MOUSE_WHEEL_DOWN = 1, 4, 5  # SDL's button numbers (the wheel comes as buttons 4 and 5 too)


class Menu:
    """The pause menu: arrows and Enter, or a click, choose an item; Esc resumes. The walking keys (WASD, Space)
    do nothing here: one held as the menu opens, or pressed again as the window gets focus back, would move the
    selection (from Resume round to Quit) or choose."""

    def __init__(self, panel: TextPanel):
        self.panel = panel
        self.open()

    def open(self) -> None:
        """Each time the menu opens: Resume selected, and where the pointer is not yet known."""
        self.selected = 0
        self._pointed: str | None = "unknown"  # the item under the pointer at its last move
        self._aimed: str | None = None  # the item the player moved the pointer onto (not where it was released)

    def lines(self, other_world: str | None = None) -> list[str]:
        """The menu as shown; with `other_world`, Switch world names the world it opens."""
        shown = {"Switch world": f"Switch to the {other_world} world"} if other_world else {}
        return ["Paused"] + [("> " if i == self.selected else "   ") + shown.get(item, item)
                             for i, item in enumerate(MENU_ITEMS)]

    def key(self, key: int) -> str | None:
        """The chosen item's name for a key press, or None (selection moved, or the key means nothing here)."""
        if key == pygame.K_UP:  # no wrapping round: Esc, Up, Enter must not quit
            self.selected = max(0, self.selected - 1)
        elif key == pygame.K_DOWN:
            self.selected = min(len(MENU_ITEMS) - 1, self.selected + 1)
        elif key in (pygame.K_RETURN, pygame.K_KP_ENTER):
            return MENU_ITEMS[self.selected]
        elif key == pygame.K_ESCAPE:
            return "Resume"
        return None

    def click(self, pos: tuple[int, int], rect: tuple[int, int, int, int], button: int) -> str | None:
        """The chosen item's name for a mouse button pressed at window pixel `pos`, or None. The left button chooses
        the item under the pointer when it is marked or the player moved the pointer onto it (the wheel or the
        arrows may have moved the marker since), and otherwise marks it: the released pointer sits over the middle
        of the menu, and a click there to get back into the game used to restart it. The wheel moves the marker;
        the other buttons do nothing."""
        if button in (MOUSE_WHEEL_UP, MOUSE_WHEEL_DOWN):
            return self.key(pygame.K_UP if button == MOUSE_WHEEL_UP else pygame.K_DOWN)
        item = self.item_at(pos, rect)
        if button != MOUSE_LEFT or item is None:
            return None
        if MENU_ITEMS.index(item) == self.selected or item == self._aimed:
            return item
        self.selected = MENU_ITEMS.index(item)
        return None

    def item_at(self, pos: tuple[int, int], rect: tuple[int, int, int, int]) -> str | None:
        """The item under window pixel `pos`, the menu's image being drawn over `rect` (x, y from the top, w, h:
        smaller than the image in a window too small for it)."""
        if self.panel.image is None:
            return None
        x, y, w, h = rect
        image_h, image_w = self.panel.image.shape[:2]
        px, py = (pos[0] - x) * image_w / w, (pos[1] - y) * image_h / h  # in the image's pixels
        row = math.floor((py - self.panel.padding) / self.panel.line_height) - 1  # row 0 is the title
        return MENU_ITEMS[row] if 0 <= px < image_w and 0 <= row < len(MENU_ITEMS) else None

    def hover(self, pos: tuple[int, int], rect: tuple[int, int, int, int]) -> None:
        """The mouse moving onto an item selects it, so the marker shows what a click would choose. The first move
        after opening only notes where the pointer is: releasing the mouse puts it over the middle of the menu, and
        that must not move the selection away from Resume."""
        item = self.item_at(pos, rect)
        if self._pointed != "unknown" and item != self._pointed:
            if item is not None:
                self.selected = MENU_ITEMS.index(item)
            self._aimed = item
        self._pointed = item
