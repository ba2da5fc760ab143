"""Level files, the scene vocabulary and its validation, terrain heights and object placement."""
import itertools
import re
import typing
from dataclasses import fields, is_dataclass
from pathlib import Path

import numpy as np
import pytest

from camera.errors import InputError
from camera.paths import load_path
from levels import LEVELS_DIR
from world.level import LevelHeader, Start, list_levels, load_level
from world.reference import ReferenceWorld
from world.scene import (CELL, GROUND_MATERIALS, OBJECT_KINDS, SKY_PRESETS, TERRAIN_KINDS, Objects, SceneParams,
                         Terrain, height_at, objects_in_cell, random_scene)

GOOD = """
[level]
name = "test"
title = "A test level"

[scene]
seed = 1
[scene.sky]
preset = "noon"
[scene.fog]
density = 0.2

[start]
position = [0.0, 1.7, 0.0]
yaw = 10.0
"""


def write(tmp_path, text, name="test.toml"):
    path = tmp_path / name
    path.write_text(text)
    return path


def error_of(path) -> str:
    with pytest.raises(InputError) as e:
        load_level(path)
    return str(e.value)


def test_shipped_levels_load_render_and_differ():
    levels = list_levels()
    names = [level.name for level in levels]
    assert len(levels) >= 6 and names == sorted(names)
    assert {p.stem for p in LEVELS_DIR.glob("*.toml")} == set(names)
    world = ReferenceWorld((96, 54))
    try:
        frames = {level.name: world.reset(level).astype(float) for level in levels}
    finally:
        world.close()
    for name, frame in frames.items():
        assert frame.std() > 10, name                                   # not blank
        assert frame[:27].mean() != frame[27:].mean(), name             # sky and ground differ
    means = {name: frame.mean(axis=(0, 1)) for name, frame in frames.items()}
    for a, b in itertools.combinations(means, 2):
        assert np.linalg.norm(means[a] - means[b]) > 20, (a, b)        # clearly different looks


def test_start_is_at_eye_height_in_a_clearing():
    for level in list_levels():
        x, y, z = level.start.position
        assert 1.4 < y - height_at(level.scene, x, z) < 2.0, level.name
        r, angle = np.meshgrid(np.linspace(0, 10, 11), np.linspace(0, 2 * np.pi, 33))
        around = height_at(level.scene, x + r * np.cos(angle), z + r * np.sin(angle))
        assert around.max() < y - 0.4, level.name  # camera paths walk 10 m at the start's height


def test_a_good_file_loads(tmp_path):
    level = load_level(write(tmp_path, GOOD))
    assert (level.name, level.title, level.start.yaw, level.scene.fog.density) == ("test", "A test level", 10.0, 0.2)
    assert level.scene.sky.preset == "noon" and level.scene.ground.material == "grass"  # defaults fill in
    assert level.image is None and level.source == tmp_path / "test.toml"


@pytest.mark.parametrize("change, field, words", [
    (("density = 0.2", "density = 0.2\nthickness = 1"), "scene.fog.thickness", "unknown key"),
    (("density = 0.2", 'density = "thick"'), "scene.fog.density", "must be a number"),
    (("density = 0.2", "density = 3.0"), "scene.fog.density", "must be between 0 and 1, got 3.0"),
    (('preset = "noon"', 'preset = "teatime"'), "scene.sky.preset", "must be one of dawn, noon"),
    (("seed = 1", "seed = 1.5"), "scene.seed", "must be an integer"),
    (("seed = 1", "seed = 1\n[scene.objects]\nkinds = { tree = 1 }"), "scene.objects.kinds.tree", "conifer"),
    (("yaw = 10.0", "yaw = 10.0\npitch = 95.0"), "start.pitch", "must be between"),
    (("yaw = 10.0", "yaw = 10.0\nzoom = 2"), "start.zoom", "unknown key"),
    (("position = [0.0, 1.7, 0.0]", "position = [0.0, 1.7]"), "start.position", "array of 3"),
    (("position = [0.0, 1.7, 0.0]", "position = [0.0, -1.0, 0.0]"), "start.position", "below the ground"),
    (('title = "A test level"', 'title = "A test level"\nauthor = "me"'), "level.author", "unknown key"),
    (('name = "test"', "name = 7"), "level.name", "must be a string"),
    # The name is part of a session folder's name: no path separators, "..", newlines or empty names.
    (('name = "test"', 'name = "../../escape"'), "level.name", "letters, digits"),
    (('name = "test"', 'name = "a/b"'), "level.name", "letters, digits"),
    (('name = "test"', 'name = "two\\nlines"'), "level.name", "letters, digits"),
    (('name = "test"', 'name = ""'), "level.name", "letters, digits"),
    (('name = "test"', 'name = "' + "a" * 65 + '"'), "level.name", "1 to 64 ASCII letters"),
    (("position = [0.0, 1.7, 0.0]", "position = [0.0, 0.1, 0.0]"), "start.position", "at least 0.2 m above the"),
    (("density = 0.2", "density = 1" + "0" * 400), "scene.fog.density", "must be a finite number"),
])
def test_bad_values_name_the_file_and_the_field(tmp_path, change, field, words):
    path = write(tmp_path, GOOD.replace(*change, 1))
    message = error_of(path)
    assert message.startswith(f"{path}: {field}: ") and words in message, message


def test_structure_errors(tmp_path):
    message = error_of(write(tmp_path, GOOD + "\n[extra]\n"))
    assert ": extra: unknown table" in message
    message = error_of(write(tmp_path, GOOD.replace("[start]", "[begin]")))
    assert "begin" in message or ": start: missing" in message
    message = error_of(write(tmp_path, GOOD.replace("seed = 1", "seed = = 1")))
    assert "not valid TOML" in message and "line 7" in message, message
    no_scene = GOOD.split("[scene]")[0] + "[start]\nposition = [0.0, 1.7, 0.0]\n"
    assert "scene: a level needs a [scene] table or a [level] image" in error_of(write(tmp_path, no_scene))
    missing_image = no_scene.replace('title = "A test level"', 'title = "x"\nimage = "nope.png"')
    assert "level.image: no such file" in error_of(write(tmp_path, missing_image))
    folder_image = no_scene.replace('title = "A test level"', 'title = "x"\nimage = "."')
    assert "level.image: " in error_of(write(tmp_path, folder_image)) and "is a folder, not a picture" in \
        error_of(write(tmp_path, folder_image))
    device_image = no_scene.replace('title = "A test level"', 'title = "x"\nimage = "/dev/zero"')
    assert "level.image: /dev/zero is not a regular file" in error_of(write(tmp_path, device_image))
    empty_image = no_scene.replace('title = "A test level"', 'title = "x"\nimage = ""')  # was "… is a folder"
    assert "level.image: is empty: name a picture file" in error_of(write(tmp_path, empty_image))


def test_start_images_are_checked_when_the_level_loads(tmp_path):
    import struct
    import zlib
    import matplotlib.pyplot as plt

    def chunk(kind, data=b""):
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    def png_header(w, h, pixels=b""):  # a PNG that claims w x h pixels (a decompression bomb, to Pillow)
        return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) + chunk(b"IDAT", pixels)

    plt.imsave(tmp_path / "good.png", np.zeros((9, 16, 3)))
    (tmp_path / "cut.png").write_bytes((tmp_path / "good.png").read_bytes()[:60])
    (tmp_path / "text.png").write_text("not a picture")
    (tmp_path / "bomb.png").write_bytes(png_header(100000, 100000))
    (tmp_path / "big.png").write_bytes(png_header(10000, 100))
    # Whole chunks (their CRCs right) whose pixels do not decode: passed verify(), then failed as a world opened
    (tmp_path / "noise.png").write_bytes(png_header(64, 36, np.random.default_rng(0).bytes(300)) + chunk(b"IEND"))
    (tmp_path / "loop1.png").symlink_to("loop2.png")  # a link that leads round to itself: a traceback
    (tmp_path / "loop2.png").symlink_to("loop1.png")
    level = GOOD.split("[scene]")[0] + "[start]\nposition = [0.0, 1.7, 0.0]\n"
    for name, words in (("cut.png", "cannot read"), ("text.png", "cannot read"), ("bomb.png", "pixels"),
                        ("big.png", "10000x100 pixels"), ("noise.png", "cannot read"),
                        ("loop1.png", "cannot be followed")):
        message = error_of(write(tmp_path, level.replace('title = "A test level"', f'title = "x"\nimage = "{name}"')))
        assert ": level.image: " in message and name in message and words in message, message
        assert "\n" not in message


def test_an_image_level_loads_but_the_reference_world_refuses_it(tmp_path, monkeypatch):
    import matplotlib.pyplot as plt

    plt.imsave(tmp_path / "start.png", np.zeros((9, 16, 3)))
    text = GOOD.split("[scene]")[0].replace('title = "A test level"', 'title = "x"\nimage = "start.png"')
    level = load_level(write(tmp_path, text + "[start]\nposition = [0.0, 1.7, 0.0]\n"))
    assert level.scene is None and level.image == (tmp_path / "start.png").resolve()
    home = tmp_path / "home"  # "~/…" is the home folder, as in a shell (it was a folder named "~" beside the level)
    home.mkdir()
    (tmp_path / "start.png").rename(home / "start.png")
    monkeypatch.setenv("HOME", str(home))
    level = load_level(write(tmp_path, text.replace('"start.png"', '"~/start.png"') + "[start]\nposition = [0.0, 1.7, 0.0]\n"))
    assert level.image == (home / "start.png").resolve()
    world = ReferenceWorld((16, 9))
    try:
        with pytest.raises(InputError, match=r"test\.toml: scene: "):
            world.reset(level)
    finally:
        world.close()


def test_a_missing_level_lists_the_available_ones():
    with pytest.raises(InputError) as e:
        load_level("atlantis")
    message = str(e.value)
    assert message.startswith("atlantis: no such level")
    assert all(level.name in message for level in list_levels())
    with pytest.raises(InputError) as e:  # no level can have this name: not looked up ("File name too long")
        load_level("a" * 5000)
    message = str(e.value)
    assert "no such level" in message and len(message) < 800 and all(lv.name in message for lv in list_levels())


def test_a_folder_given_as_a_level_is_called_a_folder(tmp_path):
    (tmp_path / "dir.toml").mkdir()
    assert error_of(tmp_path / "dir.toml") == f"{tmp_path / 'dir.toml'}: is a folder, not a file"


def test_random_scenes_cover_the_vocabulary_and_round_trip():
    rng = np.random.default_rng(0)
    scenes = [random_scene(rng) for _ in range(300)]
    assert {s.sky.preset for s in scenes} == set(SKY_PRESETS)
    assert {s.ground.material for s in scenes} == set(GROUND_MATERIALS)
    assert {s.terrain.kind for s in scenes} == set(TERRAIN_KINDS)
    assert set().union(*(s.objects.kinds for s in scenes)) == set(OBJECT_KINDS)
    assert any(s.sky.zenith for s in scenes) and any(s.sky.clouds is not None for s in scenes)
    assert any(s.ground.tint for s in scenes) and any(s.fog.color for s in scenes)
    fog = [s.fog.density for s in scenes]
    assert min(fog) < 0.05 and max(fog) > 0.9
    elevations = [s.sun()[0] for s in scenes]
    assert min(elevations) < 0 and max(elevations) > 60
    assert len({s.seed for s in scenes}) == len(scenes)
    for s in scenes:
        assert SceneParams.from_dict(s.to_dict(), "random") == s


def test_terrain_heights():
    hills = SceneParams(seed=3, terrain=Terrain("hilly", height=8.0, scale=60.0), objects=Objects(clear_radius=4.0))
    x, z = np.meshgrid(np.linspace(-200, 200, 81), np.linspace(-200, 200, 81))
    h = height_at(hills, x, z)
    assert h.shape == x.shape and np.array_equal(h, height_at(hills, x, z))
    assert height_at(hills, 0.0, 0.0) == 0.0 and np.abs(height_at(hills, [1.5, -1.0], [0.5, 1.5])).max() < 1e-12
    assert 4.0 < np.ptp(h) < 40.0                                     # hills of about the asked height
    step = np.abs(np.diff(h, axis=1)).max() / (x[0, 1] - x[0, 0])
    assert step < 1.5                                                 # smooth: no cliffs
    other = SceneParams(seed=4, terrain=hills.terrain, objects=hills.objects)
    assert not np.allclose(height_at(other, x, z), h)                # the seed shapes the land
    flat = SceneParams(terrain=Terrain("flat", height=8.0))
    assert not height_at(flat, x, z).any()


def test_object_placement():
    scene = SceneParams(seed=9, objects=Objects(density=2.0, kinds={"broadleaf": 1, "house": 1}, clear_radius=10.0))
    cells = [(i, j) for i in range(-2, 2) for j in range(-2, 2)]
    placed = [objects_in_cell(scene, i, j) for i, j in cells]
    for (i, j), p in zip(cells, placed):
        again = objects_in_cell(scene, i, j)
        assert np.array_equal(p.position, again.position) and np.array_equal(p.kind, again.kind)
        cell = np.floor(p.position[:, [0, 2]] / CELL)
        assert (cell == [i, j]).all()
        assert np.allclose(p.position[:, 1], height_at(scene, p.position[:, 0], p.position[:, 2]), atol=1e-9)
    xz = np.concatenate([p.position[:, [0, 2]] for p in placed])
    assert np.hypot(*xz.T).min() > 10.0                               # the clear radius
    kinds = {list(OBJECT_KINDS)[k] for k in np.concatenate([p.kind for p in placed])}
    assert kinds == {"broadleaf", "house"}                            # only the kinds asked for
    for p in placed:  # footprints (nearly) apart
        radius = np.array([r for r, _ in OBJECT_KINDS.values()])[p.kind] * p.size
        apart = np.linalg.norm(p.position[:, None, [0, 2]] - p.position[None, :, [0, 2]], axis=-1)
        np.fill_diagonal(apart, np.inf)
        assert (apart >= 0.9 * (radius[:, None] + radius[None])).all()

    def count(density):  # small things: the density is what one gets
        dense = SceneParams(seed=9, objects=Objects(density=density, kinds={"rock": 1, "crate": 1}))
        return sum(len(objects_in_cell(dense, i, j).kind) for i, j in cells)
    area = len(cells) * CELL ** 2 / 100
    assert 0.6 < count(2.0) / (2.0 * area) < 1.1 and 0.6 < count(0.2) / (0.2 * area) < 1.3


def test_objects_with_a_density_but_no_weighted_kind_are_refused(tmp_path):
    # `kinds = {}` (or every weight 0) with a density placed nothing, without a word.
    for kinds in ("{}", "{ broadleaf = 0.0 }"):
        text = GOOD.replace("[start]", f"[scene.objects]\ndensity = 1.0\nkinds = {kinds}\n\n[start]")
        assert "scene.objects.kinds: no kind has a weight above 0" in error_of(write(tmp_path, text))
    none = GOOD.replace("[start]", "[scene.objects]\ndensity = 0.0\nkinds = {}\n\n[start]")
    assert load_level(write(tmp_path, none)).scene.objects.density == 0.0  # no objects, said so: fine


def test_docs_levels_md_names_every_field_and_its_examples_load(tmp_path):
    """docs/levels.md is how a player learns to write a level: every field the reader accepts is in its tables,
    and its example level and camera path (and the README's path) load as they are."""
    text = (Path(__file__).parent.parent / "docs" / "levels.md").read_text()

    def dotted(cls, prefix=""):
        for f in fields(cls):
            tp = typing.get_type_hints(cls)[f.name]
            if is_dataclass(tp):
                yield from dotted(tp, f"{prefix}{f.name}.")
            else:
                yield prefix + f.name
    documented = set(re.findall(r"^\| `([a-z_.]+)` \|", text, re.M))
    for name in [*dotted(LevelHeader), *dotted(SceneParams), *dotted(Start)]:
        assert name in documented, f"docs/levels.md has no row for {name}"
    for word in (*SKY_PRESETS, *GROUND_MATERIALS, *TERRAIN_KINDS, *OBJECT_KINDS):
        assert f"`{word}`" in text, word
    level_toml, path_toml = re.findall(r"```toml\n(.*?)```", text, re.S)
    (tmp_path / "lakeside.toml").write_text(level_toml)
    (tmp_path / "p.toml").write_text(path_toml)
    level = load_level(tmp_path / "lakeside.toml")
    assert level.scene.sky.preset == "dusk" and level.scene.objects.kinds["lamp"] == 0.3
    poses = load_path(tmp_path / "p.toml").poses(start=level.start)
    assert len(poses) == 97 and abs(poses[-1].yaw - 45.0) < 1e-6
    readme = (Path(__file__).parent.parent / "README.md").read_text()  # the README's camera path, copied as it is
    (tmp_path / "readme.toml").write_text(re.search(r"### Camera paths\n\n```toml\n(.*?)```", readme, re.S)[1])
    assert len(load_path(tmp_path / "readme.toml").poses(start=level.start)) == 97


def test_deeply_nested_toml_is_one_line_not_a_recursion_error(tmp_path):
    # tomllib recurses once a level: an array or table a thousand deep was a RecursionError traceback (exit 1).
    from camera.errors import TOO_DEEP
    for text in ("a = " + "[" * 1000 + "]" * 1000, "a = " + "{ b = " * 1000 + "1" + " }" * 1000):
        path = write(tmp_path, text + "\n")
        assert error_of(path) == f"{path}: not valid TOML for us: {TOO_DEEP}"


@pytest.mark.parametrize("field, value", [("title", "x \\u0000"), ("title", "two\\nlines"), ("title", "bell\\u0007"),
                                          ("image", "a\\u0000b.png"), ("image", "a\\nb.png"),
                                          ("image", "a\\u0085b.png")])
def test_control_characters_in_the_levels_text_are_refused(tmp_path, field, value):
    # A NUL in the image's name raised "ValueError: embedded null byte" from Path.resolve, in the title from pygame's
    # set_caption; a newline would break the window's title and messages.
    path = write(tmp_path, GOOD.replace('title = "A test level"', f'{field} = "{value}"'))
    message = error_of(path)
    assert message.startswith(f"{path}: level.{field}: must not hold control characters") and "\n" not in message
    assert "\x00" not in message and "\x85" not in message, message


def test_a_file_name_with_control_characters_is_said_on_one_line(tmp_path, capsys):
    from explorer.cli import main
    from levels import PATHS_DIR
    # A name holding a newline printed two lines ("explorer: error: x", then "y.toml: no such level file ...").
    assert main(["render", "--level", "x\ny.toml", "--path", str(PATHS_DIR / "walk.toml"),
                 "--out", str(tmp_path / "o.mp4")]) == 2
    err = capsys.readouterr().err
    assert err.startswith("explorer: error: x\\ny.toml: no such level file (available levels: ") and \
        len(err.splitlines()) == 1, err
    # in a path quoted in the problem, and a key read from the file, too
    folder = tmp_path / "a\tb\x1b[31m"
    folder.mkdir()
    message = error_of(write(folder, GOOD.replace('title = "A test level"', 'image = "nope.png"')))
    assert message == (f"{tmp_path}/a\\tb\\x1b[31m/test.toml: level.image: no such file: "
                       f"{tmp_path.resolve()}/a\\tb\\x1b[31m/nope.png")
    message = error_of(write(tmp_path, '"x\\u2028y" = 1\n' + GOOD))
    assert message == f"{tmp_path / 'test.toml'}: x\\u2028y: unknown table (allowed: level, scene, start)"
    # ordinary names, accented ones included, print as they always did
    assert error_of(tmp_path / "café.toml").startswith(f"{tmp_path / 'café.toml'}: no such level file")
    # the error pickles whole (a world's process sends it to the game) and says the same
    import pickle
    error = InputError("x\ny.toml", "f\x00", "a\rb")
    assert str(error) == "x\\ny.toml: f\\x00: a\\rb" and str(pickle.loads(pickle.dumps(error))) == str(error)
