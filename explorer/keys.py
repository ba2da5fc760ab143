"""Where the player's input comes from: keyboard, mouse and gamepad through pygame, or a script (tests, demos).

Either source gives the game loop one `camera.controls.InputState` per integrated video frame (`sample()`); what
happens in between adds up in the source (mouse motion; a key pressed and released again counts as held for the
next frame), so nothing is lost when the loop samples late or skips frames while the world catches up.

Keys: WASD or the arrows move, Space / C up and down, Shift faster, Q / E roll, the mouse looks (while captured).
The camera's keys go by where they are on the keyboard (SDL's scancodes, named after a US layout), not by the
letter printed on them: on AZERTY the same hand position is ZQSD, and the letters W and A there would not walk.
Gamepad: left stick moves, right stick looks (SDL's game-controller mapping, so any pad SDL knows reads the same).
"""
from __future__ import annotations

import ctypes
import functools
import os
import re
from typing import Iterable, Protocol

os.environ.setdefault("PYGAME_HIDE_SUPPORT_PROMPT", "1")
import pygame  # noqa: E402
from pygame._sdl2 import controller  # noqa: E402

from camera.controls import InputState  # noqa: E402

KEY_ACTIONS = {  # scancode -> action
    pygame.KSCAN_W: "forward", pygame.KSCAN_UP: "forward",
    pygame.KSCAN_S: "back", pygame.KSCAN_DOWN: "back",
    pygame.KSCAN_A: "left", pygame.KSCAN_LEFT: "left",
    pygame.KSCAN_D: "right", pygame.KSCAN_RIGHT: "right",
    pygame.KSCAN_SPACE: "up", pygame.KSCAN_C: "down",
    pygame.KSCAN_LSHIFT: "fast", pygame.KSCAN_RSHIFT: "fast",
    pygame.KSCAN_Q: "roll_left", pygame.KSCAN_E: "roll_right",
}


def controls_hint() -> str:
    """The first picture's line on how to walk, naming the camera's keys as the active layout prints them (ZQSD and
    A / E on AZERTY): a fixed "WASD" sent an AZERTY player's A to roll."""
    w, a, s, d, c, q, e = (key_label(code, us) for code, us in (
        (pygame.KSCAN_W, "W"), (pygame.KSCAN_A, "A"), (pygame.KSCAN_S, "S"), (pygame.KSCAN_D, "D"),
        (pygame.KSCAN_C, "C"), (pygame.KSCAN_Q, "Q"), (pygame.KSCAN_E, "E")))
    return f"{w}{a}{s}{d} or arrows move   mouse looks   Space / {c} up, down   Shift faster   {q} / {e} roll   Esc menu"


def key_label(scancode: int, us: str) -> str:
    """What the key at `scancode`'s place is on the active layout (SDL's keymap, upper case); `us`, its US name,
    where SDL cannot be asked."""
    sdl = _sdl()
    name = pygame.key.name(sdl.SDL_GetKeyFromScancode(scancode)) if sdl is not None else ""
    return name.upper() if len(name) == 1 else us  # a letter or sign; else (none, "unknown key") the US one


@functools.cache
def _sdl():
    """The SDL library pygame runs on (pygame does not offer SDL_GetKeyFromScancode), or None: found among the
    process's mapped files, which Linux lists."""
    try:
        with open("/proc/self/maps") as maps:
            path = next(line.split()[-1] for line in maps if re.search(r"/libSDL2[-.][^/]*$", line.strip()))
        sdl = ctypes.CDLL(path)
        sdl.SDL_GetKeyFromScancode.argtypes, sdl.SDL_GetKeyFromScancode.restype = [ctypes.c_int], ctypes.c_int32
        return sdl
    except (OSError, StopIteration, AttributeError):
        return None


STICK_AXES = (pygame.CONTROLLER_AXIS_LEFTX, pygame.CONTROLLER_AXIS_LEFTY,
              pygame.CONTROLLER_AXIS_RIGHTX, pygame.CONTROLLER_AXIS_RIGHTY)
AXIS_MAX = 32767.0  # SDL game-controller axes are int16


class InputSource(Protocol):
    def handle(self, event: pygame.event.Event) -> None:
        """See every pygame event (the game passes all of them on)."""

    def sample(self) -> InputState:
        """The input for the next video frame; resets what accumulates (mouse motion)."""

    def pending_mouse(self) -> tuple[float, float]:
        """The mouse motion the next sample will carry, so far (the screen turns by it before the world does)."""

    def take_pending(self) -> InputState:
        """What events brought since the last sample (mouse motion, keys pressed), without the keyboard's state
        now, and reset it: the last input before the pause menu, whose own arrow keys are down by then."""


def held_actions(pressed) -> frozenset[str]:
    """Actions held on a keyboard state indexed by scancode (`keyboard_state()`, or any mapping scancode -> bool)."""
    return frozenset(action for scancode, action in KEY_ACTIONS.items() if pressed[scancode])


def keyboard_state() -> tuple[bool, ...]:
    """Whether each key is down, indexed by scancode. (pygame's get_pressed() is such a tuple whose indexing
    takes a key code, the letter; iterating it gives the scancodes' own order.)"""
    return tuple(pygame.key.get_pressed())


def stick_axes(pad) -> tuple[float, float, float, float]:
    """(lx, ly, rx, ry) in [-1, 1] from a pygame._sdl2 Controller (anything with get_axis(SDL axis) -> int16)."""
    return tuple(max(-1.0, min(1.0, pad.get_axis(axis) / AXIS_MAX)) for axis in STICK_AXES)


class PygameInput:
    """The keyboard, the mouse (only while grabbed: a released mouse is for the menu) and the first gamepad."""

    def __init__(self, pressed=keyboard_state):
        self._pressed = pressed  # the keyboard's state now (a test's stand-in without a window)
        self._mouse = [0.0, 0.0]
        self._tapped: set[str] = set()  # actions whose key went down since the last sample
        self._pads: dict[int, controller.Controller] = {}  # instance id -> open controller
        controller.init()

    def handle(self, event: pygame.event.Event) -> None:
        if event.type == pygame.MOUSEMOTION and pygame.event.get_grab():
            self._mouse[0] += event.rel[0]
            self._mouse[1] += event.rel[1]
        elif event.type == pygame.KEYDOWN and event.scancode in KEY_ACTIONS:
            # a tap shorter than the gap between samples (the loop samples only when a step needs input) still
            # moves the camera: it counts as held for the next frame
            self._tapped.add(KEY_ACTIONS[event.scancode])
        elif event.type == pygame.CONTROLLERDEVICEADDED:
            pad = controller.Controller(event.device_index)
            self._pads[pad.as_joystick().get_instance_id()] = pad
        elif event.type == pygame.CONTROLLERDEVICEREMOVED:
            pad = self._pads.pop(event.instance_id, None)
            if pad is not None:
                pad.quit()

    def pending_mouse(self) -> tuple[float, float]:
        return self._mouse[0], self._mouse[1]

    def take_pending(self) -> InputState:
        mouse, self._mouse = tuple(self._mouse), [0.0, 0.0]
        actions, self._tapped = frozenset(self._tapped), set()
        return InputState(actions, mouse)

    def sample(self) -> InputState:
        mouse, self._mouse = tuple(self._mouse), [0.0, 0.0]
        actions, self._tapped = held_actions(self._pressed()) | self._tapped, set()
        pad = next(iter(self._pads.values()), None)
        return InputState(actions, mouse,
                          stick_axes(pad) if pad is not None else (0.0, 0.0, 0.0, 0.0))


class ScriptedInput:
    """Drives the loop without a person: a fixed list of inputs, one per integrated video frame, then nothing held;
    and key presses, posted to pygame's event queue as real KEYDOWN / KEYUP events when a given input is taken
    (the loop handles them on its next tick)."""

    def __init__(self, inputs: Iterable[InputState], keys: dict[int, list[int]] | None = None):
        self._inputs = list(inputs)
        self._keys = keys or {}
        self.taken = 0  # how many inputs the loop has integrated

    def handle(self, event: pygame.event.Event) -> None:
        pass

    def pending_mouse(self) -> tuple[float, float]:
        return 0.0, 0.0  # a scripted input's motion arrives whole when it is taken

    def take_pending(self) -> InputState:
        return InputState()  # nothing comes between its inputs

    def sample(self) -> InputState:
        for key in self._keys.get(self.taken, []):
            pygame.event.post(pygame.event.Event(pygame.KEYDOWN, key=key, mod=0, unicode="", scancode=0))
            pygame.event.post(pygame.event.Event(pygame.KEYUP, key=key, mod=0, unicode="", scancode=0))
        self.taken += 1
        return self._inputs[self.taken - 1] if self.taken <= len(self._inputs) else InputState()
