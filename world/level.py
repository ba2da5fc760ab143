"""Level files (DESIGN section 5): `levels/NAME.toml` with [level], [scene] and [start].

    [level]
    name = "meadow"
    title = "Meadow at noon"
    image = "meadow.png"      # optional: a start frame for the generated world, relative to this file

    [scene]                   # optional if [level] has an image; the vocabulary is world/scene.py's
    seed = 7
    [scene.sky]
    preset = "noon"
    ...

    [start]
    position = [0.0, 1.7, 0.0]
    yaw = 0.0
    pitch = 0.0
    fov = 60.0

The terrain height is 0 at the origin, so a start at the origin with y = 1.7 is at eye height.
Every problem is reported as an InputError naming the file and the dotted field.
"""
from __future__ import annotations

import re
import warnings
from dataclasses import dataclass, replace
from pathlib import Path

from camera.errors import CONTROL_CHARACTERS, InputError, read_toml
from camera.pose import PITCH_LIMIT, POSITION_LIMIT, Pose, at_rest
from levels import LEVELS_DIR
from world.scene import SceneParams, height_at, parse_table, spec

LEVEL_NAME = re.compile(r"[A-Za-z0-9_-]{1,64}")


@dataclass
class LevelHeader:
    name: str = spec()
    title: str = spec("")
    image: str | None = spec(None)  # a picture file, relative to the level file


@dataclass
class Start:
    position: tuple[float, float, float] = spec(range=(-POSITION_LIMIT, POSITION_LIMIT))
    yaw: float = spec(0.0, range=(-360, 360))
    pitch: float = spec(0.0, range=(-PITCH_LIMIT, PITCH_LIMIT))
    roll: float = spec(0.0, range=(-180, 180))
    fov: float = spec(60.0, range=(10, 120))


@dataclass
class Level:
    name: str
    title: str
    scene: SceneParams | None
    start: Pose
    image: Path | None
    source: Path

    def at(self, pose: Pose) -> "Level":
        """The level started at `pose` (a restart, a switch of worlds where the player stands): its start picture
        only where the pose is its own start, or where it has no scene to draw the view from elsewhere."""
        keep = self.scene is None or at_rest(self.start, [pose])
        return replace(self, start=pose, image=self.image if keep else None)


def level_from_dict(d: dict, source: Path) -> Level:
    """Validate a parsed level file."""
    for key in d:
        if key not in ("level", "scene", "start"):
            hint = " (this is a camera path: give it as --path)" if key == "path" and "level" not in d else ""
            raise InputError(source, key, f"unknown table (allowed: level, scene, start){hint}")
    for key in ("level", "start"):
        if key not in d:
            raise InputError(source, key, "missing table")
    header = parse_table(LevelHeader, d["level"], source, "level")
    if not LEVEL_NAME.fullmatch(header.name):
        # The name becomes part of a session folder's name, so it must not hold "/", ".." or a newline.
        raise InputError(source, "level.name", f"must be 1 to 64 ASCII letters, digits, '-' or '_' (got {header.name!r})")
    for name in ("title", "image"):
        # The title becomes the window's caption and the image a file name: a NUL in either was a traceback
        # (ValueError from pygame's set_caption, or "embedded null byte" from Path.resolve), a newline two lines.
        value = getattr(header, name)
        if value is not None and CONTROL_CHARACTERS.search(value):
            raise InputError(source, f"level.{name}", f"must not hold control characters such as a newline or NUL "
                             f"(got {value!r})")
    start = parse_table(Start, d["start"], source, "start")
    scene = SceneParams.from_dict(d["scene"], source) if "scene" in d else None
    image = None
    if header.image is not None:
        if not header.image.strip():  # "" is the level's own folder: "is a folder, not a picture" puzzled
            raise InputError(source, "level.image", "is empty: name a picture file, relative to the level file, or "
                             "leave image out")
        try:
            image = (source.parent / Path(header.image).expanduser()).resolve()  # ~: the home folder
        except (OSError, RuntimeError) as error:  # a link that leads round to itself (RuntimeError before 3.13)
            raise InputError(source, "level.image", f"cannot be followed to a file: {error}") from None
        if image.is_dir():
            raise InputError(source, "level.image", f"{image} is a folder, not a picture")
        if not image.exists():
            raise InputError(source, "level.image", f"no such file: {image}")
        if not image.is_file():  # a device or a pipe, which reading could hang on
            raise InputError(source, "level.image", f"{image} is not a regular file")
        check_image(image, source)
    if scene is None and image is None:
        raise InputError(source, "scene", "a level needs a [scene] table or a [level] image")
    if scene is not None:
        x, y, z = start.position
        ground = float(height_at(scene, x, z))
        if y < ground + 0.2:
            where = "is below the ground" if y < ground else "must be at least 0.2 m above the ground"
            raise InputError(source, "start.position", f"{where} (y = {y}, ground at {ground:.2f})")
        if scene.objects.density > 0 and not any(w > 0 for w in scene.objects.kinds.values()):
            raise InputError(source, "scene.objects.kinds", "no kind has a weight above 0, so no object would be "
                             "placed; give one, or set density = 0 for none")
    pose = Pose(start.position, start.yaw, start.pitch, start.roll, start.fov)
    return Level(header.name, header.title or header.name, scene, pose, image, source)


MAX_IMAGE_SIDE = 8192  # pixels; a start image is resized to the model's frames (128x72 for mini)


def check_image(image: Path, source: Path) -> None:
    """Read the start image and check the whole file now, not when a world first needs it (after a window or a
    video is open): a picture of at most MAX_IMAGE_SIDE pixels a side, in a format Pillow reads, whose pixels
    decode."""
    from PIL import Image
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)  # the size is checked below, in one line
        try:
            with Image.open(image) as picture:
                w, h = picture.size
                if max(w, h) > MAX_IMAGE_SIDE:
                    raise InputError(source, "level.image", f"{image} is {w}x{h} pixels; at most "
                                     f"{MAX_IMAGE_SIDE} a side")
                picture.verify()  # a cut or damaged file fails here
            with Image.open(image) as picture:
                picture.load()  # and one whose chunks are whole but whose pixels cannot be decoded, here
        except InputError:
            raise
        except Exception as error:  # noqa: BLE001 - Pillow raises many types for files it cannot read
            raise InputError(source, "level.image", f"cannot read {image} as a picture "
                             f"({type(error).__name__}: {str(error).splitlines()[0] if str(error) else ''})") from None


NO_SCENE = "this level has only a start image; the reference world needs a [scene] to draw"


def require_scene(level: Level) -> None:
    """An InputError naming the level's file if the reference world cannot draw it (a start image alone)."""
    if level.scene is None:
        raise InputError(level.source, "scene", f"{NO_SCENE} (use --world generated)")


def load_level(name_or_path) -> Level:
    """A shipped level by name (LEVELS_DIR/NAME.toml) or any level file by path (one ending in .toml or
    with a folder in it)."""
    text = str(name_or_path)
    path = Path(text)
    by_name = not (text.lower().endswith(".toml") or path.parent != Path("."))
    if by_name:
        path = LEVELS_DIR / f"{text}.toml"
    # A name no level can have is not looked up (5000 letters gave the system's "File name too long"); a folder
    # or a pipe is not "no such file": read_text says what it is.
    if (by_name and not LEVEL_NAME.fullmatch(text)) or not path.exists():
        available = ", ".join(p.stem for p in sorted(LEVELS_DIR.glob("*.toml")))
        problem = "no such level" if by_name else "no such level file"
        raise InputError(text, None, f"{problem} (available levels: {available})")
    return level_from_dict(read_toml(path), path)


def list_levels() -> list[Level]:
    """Every shipped level, sorted by name."""
    return sorted((load_level(p) for p in LEVELS_DIR.glob("*.toml")), key=lambda level: level.name)
