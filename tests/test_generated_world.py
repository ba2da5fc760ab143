"""GeneratedWorld: the World interface over the model (tiny config, random weights)."""
import json
import subprocess
import sys

import numpy as np
import pytest

from camera.errors import InputError
from camera.pose import Pose
from camera.trajectories import random_trajectory
from world.base import World, stream_poses
from world.generated import GeneratedWorld, load_start_image
from world.level import list_levels


def open_tiny():
    return GeneratedWorld.open(device="cpu", random_config="tiny")


def walk(level, steps=5):
    return random_trajectory(np.random.default_rng(1), 1 + 4 * steps, level.start)


def run(world, level, seed, poses):
    return np.concatenate(list(stream_poses(world, level, seed, poses)))


def test_is_a_world_and_streams_frames_of_its_size():
    world, level = open_tiny(), list_levels()[0]
    assert isinstance(world, World)
    frames = run(world, level, 0, walk(level))
    assert frames.shape == (1 + 4 * 5, 32, 64, 3) and frames.dtype == np.uint8


def test_same_level_seed_and_poses_give_identical_frames_and_seed_matters():
    level = list_levels()[0]
    poses = walk(level)
    a = run(open_tiny(), level, 7, poses)
    b = run(open_tiny(), level, 7, poses)
    c = run(open_tiny(), level, 8, poses)
    assert np.array_equal(a, b)
    assert not np.array_equal(a[1:], c[1:])


def test_a_camera_at_rest_keeps_the_last_frame_and_the_stream_goes_on_as_if_no_time_passed():
    # The model run on with no motion drifted (meadow whitened within seconds) where the reference stays still.
    from dataclasses import replace
    level = list_levels()[0]
    poses = walk(level, steps=2)
    still = [poses[4]] * 4
    held, direct = open_tiny(), open_tiny()
    for world in (held, direct):
        world.reset(level, 3)
        first = world.step(poses[1:5])
    rest = [held.step(still) for _ in range(3)]
    assert all(np.array_equal(frames, np.stack([first[-1]] * 4)) for frames in rest)
    assert held.state().step == direct.state().step == 1  # nothing of the stream moved on
    assert np.array_equal(held.step(poses[5:9]), direct.step(poses[5:9]))  # as if the rest had not been
    # a creep of 0.3 mm a step, under the threshold each time, still adds up: measured from the last frame made
    steps = []
    for k in range(1, 5):
        crept = replace(poses[8], position=tuple(np.add(poses[8].position, (0.0003 * k, 0.0, 0.0))))
        held.step([crept] * 4)
        steps.append(held.state().step)
    assert steps == [2, 2, 2, 3]  # made again once 1.2 mm from where the last frame was made
    # without the hold, the model makes new frames at rest
    direct.hold_at_rest = False
    assert not np.array_equal(direct.step([poses[8]] * 4), np.stack([direct.state().frame] * 4))


def test_snapshot_step_restore_step_gives_the_same_frames():
    world, level = open_tiny(), list_levels()[0]
    poses = walk(level, steps=4)
    world.reset(level, 3)
    world.step(poses[1:5])
    snapshot = world.state()
    first = [world.step(poses[5:9]), world.step(poses[9:13])]
    world.restore(snapshot)
    second = [world.step(poses[5:9]), world.step(poses[9:13])]
    assert all(np.array_equal(x, y) for x, y in zip(first, second))
    # restoring twice from the same snapshot works too (restore does not hand out the snapshot's buffers)
    world.restore(snapshot)
    assert np.array_equal(world.step(poses[5:9]), first[0])


def test_the_stream_state_stays_at_fixed_addresses():
    """What the CUDA graphs of the step rely on (world/cuda_graphs.py): after the first step, stepping and
    restoring write into the same KV-cache and decoder tensors."""
    world, level = open_tiny(), list_levels()[0]
    poses = walk(level, steps=4)
    world.reset(level, 3)
    world.step(poses[1:5])
    snapshot = world.state()

    def addresses():
        s = world._state
        return [t.data_ptr() for t in s.cache.k + s.cache.v + list(s.decoder.frames.values())]

    before = addresses()
    world.step(poses[5:9])
    world.step(poses[9:13])
    assert addresses() == before
    world.restore(snapshot)
    assert addresses() == before


def test_camera_input_changes_the_frames():
    import torch
    world, level = open_tiny(), list_levels()[0]
    torch.nn.init.normal_(world.generator.head.linear.weight, std=0.05)  # random init outputs v = 0 exactly
    still = [level.start] * 5
    turned = [level.start] + [level.start.moved(yaw=level.start.yaw + 10 * i) for i in range(1, 5)]
    world.reset(level, 0)
    a = world.step(still[1:])
    world.reset(level, 0)
    b = world.step(turned[1:])
    assert not np.array_equal(a, b)


def test_start_image_is_cropped_to_the_aspect(tmp_path):
    from PIL import Image
    image = np.zeros((100, 100, 3), np.uint8)
    image[:, :50] = 255  # left half white
    Image.fromarray(image).save(tmp_path / "start.png")
    frame = load_start_image(tmp_path / "start.png", (64, 32))
    assert frame.shape == (32, 64, 3)
    assert frame[:, :28].min() > 200 and frame[:, 36:].max() < 50
    (tmp_path / "bad.png").write_bytes(b"not a picture")
    with pytest.raises(InputError, match="bad.png"):
        load_start_image(tmp_path / "bad.png", (64, 32))


def test_start_image_of_16_bit_grey_keeps_its_tones_and_a_phone_photo_stands_upright(tmp_path):
    """Pillow's convert("RGB") clipped 16-bit grey at 255 (any such picture came out white), and the EXIF
    orientation of a portrait photo was ignored (the picture lay on its side)."""
    from PIL import Image
    grey = np.full((36, 64), 40000, np.uint16)  # 61% grey
    grey[:, 32:] = 10000                         # 15% grey
    Image.fromarray(grey).save(tmp_path / "grey16.png")
    frame = load_start_image(tmp_path / "grey16.png", (64, 36))
    assert abs(int(frame[18, 8, 0]) - 156) <= 2 and abs(int(frame[18, 56, 0]) - 39) <= 2, frame[18, ::8, 0]
    with open(tmp_path / "grey16.pgm", "wb") as f:  # a 16-bit PGM opens in Pillow's mode I, not I;16
        f.write(b"P5\n4 2\n65535\n" + np.full((2, 4), 40000, ">u2").tobytes())
    assert abs(int(load_start_image(tmp_path / "grey16.pgm", (8, 4))[0, 0, 0]) - 156) <= 2
    Image.fromarray(np.full((4, 8), 2_000_000_000, np.int32)).save(tmp_path / "grey32.tif")  # 47% of 32 bits
    assert abs(int(load_start_image(tmp_path / "grey32.tif", (8, 4))[0, 0, 0]) - 119) <= 2

    sideways = np.zeros((36, 64, 3), np.uint8)
    sideways[:, :32] = (255, 0, 0)  # stored: red left, blue right; tagged "rotate 90 clockwise to view"
    sideways[:, 32:] = (0, 0, 255)
    image = Image.fromarray(sideways)
    exif = image.getexif()
    exif[0x0112] = 6
    image.save(tmp_path / "portrait.jpg", exif=exif)
    upright = load_start_image(tmp_path / "portrait.jpg", (36, 64))  # as shown: red on top, blue below
    assert upright[4, 18, 0] > 200 and upright[4, 18, 2] < 60, upright[4, 18]
    assert upright[-4, 18, 2] > 200 and upright[-4, 18, 0] < 60, upright[-4, 18]


def test_a_start_image_s_transparent_parts_are_black(tmp_path):
    # the alpha was dropped: a picture with red kept under its transparent half showed it red
    from PIL import Image
    rgba = np.zeros((36, 64, 4), np.uint8)
    rgba[..., 0] = 255                          # red everywhere under the alpha
    rgba[:, :32, 3] = 255                       # left opaque, right transparent
    rgba[:, 32:, 3] = 0
    Image.fromarray(rgba, "RGBA").save(tmp_path / "half.png")
    frame = load_start_image(tmp_path / "half.png", (64, 36))
    assert frame[18, 8, 0] > 240 and frame[18, 56].max() < 10, (frame[18, 8], frame[18, 56])
    palette = Image.fromarray(rgba[..., :3]).convert("P")  # a palette picture with a transparent colour
    palette.info["transparency"] = palette.getpixel((0, 0))
    palette.save(tmp_path / "palette.png", transparency=palette.getpixel((0, 0)))
    assert load_start_image(tmp_path / "palette.png", (64, 36))[18, 8].max() < 10
    grey = np.full((36, 64), 65535, np.uint16)  # 16-bit grey whose white is transparent: it came out white
    grey[:, :32] = 20000
    Image.fromarray(grey).save(tmp_path / "grey16.png", transparency=65535)
    frame = load_start_image(tmp_path / "grey16.png", (64, 36))
    assert abs(int(frame[18, 8, 0]) - 78) <= 2 and frame[18, 56].max() < 10, (frame[18, 8], frame[18, 56])


def test_a_level_s_start_picture_is_its_first_frame_only_at_its_start(tmp_path):
    """A level with a scene and a start picture: Switch world (or split view) where the player stood started the
    generated world from the start picture, far from where it was taken, instead of the scene's view there."""
    from PIL import Image
    from levels import LEVELS_DIR
    from world.level import load_level
    from world.reference import ReferenceWorld
    Image.fromarray(np.full((72, 128, 3), (200, 30, 30), np.uint8)).save(tmp_path / "red.png")
    text = (LEVELS_DIR / "meadow.toml").read_text().replace('title = "Meadow at noon"',
                                                             'title = "Meadow at noon"\nimage = "red.png"')
    (tmp_path / "both.toml").write_text(text)
    (tmp_path / "photo.toml").write_text('[level]\nname = "photo"\nimage = "red.png"\n\n[start]\n'
                                         'position = [0.0, 1.7, 0.0]\n')
    both, photo = load_level(tmp_path / "both.toml"), load_level(tmp_path / "photo.toml")
    away = both.start.moved(position=(3.0, both.start.position[1], -2.0), yaw=40.0)
    world = open_tiny()
    assert (world.reset(both.at(both.start), 0) == load_start_image(tmp_path / "red.png", world.size)).all()
    reference = ReferenceWorld(world.size)
    try:
        assert (world.reset(both.at(away), 0) == reference.reset(both.at(away), 0)).all()  # the view there
    finally:
        reference.close()
    assert (world.reset(photo.at(away), 0) == load_start_image(tmp_path / "red.png", world.size)).all()  # all it has


def test_missing_checkpoint_is_refused_by_name(tmp_path):
    with pytest.raises(InputError, match="nope.safetensors"):
        GeneratedWorld.open(checkpoint=tmp_path / "nope.safetensors", device="cpu")


def test_a_vae_stage_checkpoint_opens_with_a_warning(tmp_path, capsys):
    # Its generator is the untrained one: the world showed noise after the first frame, unsaid.
    from model.checkpoint import save_checkpoint
    from model.config import get_config
    from model.generator import Generator
    from model.vae import VAE
    config = get_config("tiny")
    scaling = {"origin_std": 1.0, "direction_std": 1.0}
    for stage in ("vae", "consistency"):
        path = tmp_path / f"{stage}.safetensors"
        save_checkpoint(path, config, VAE(config.vae), Generator(config.generator), scaling, stage)
        GeneratedWorld.open(checkpoint=path, device="cpu")
        warned = "is from the vae stage: its generator is untrained" in capsys.readouterr().err
        assert warned == (stage == "vae")


def test_bench_json_has_the_contract_fields():
    proc = subprocess.run([sys.executable, "-m", "explorer.cli", "bench", "--config", "tiny", "--device", "cpu",
                           "--seconds", "1", "--json"], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    result = json.loads(proc.stdout)
    for field in ("config", "device", "dtype", "size", "fps", "step_ms_p50", "step_ms_p99", "decode_ms_p50",
                  "rss_mb_start", "rss_mb_end"):
        assert field in result
    assert result["config"] == "tiny" and result["size"] == [64, 32]
    assert result["fps"] > 0 and result["step_ms_p99"] >= result["step_ms_p50"] > 0
    for name in ("no_kv_cache", "ar_diffusion_4step"):
        assert result["baselines"][name]["fps"] > 0 and result["baselines"][name]["step_ms_p50"] > 0


def test_memory_needed_counts_what_a_stream_allocates_and_a_model_too_big_is_refused_first(monkeypatch):
    import torch
    import world.generated as generated
    from model.config import get_config
    world, level = open_tiny(), list_levels()[0]
    world.reset(level, 0)
    state = world._state
    weights = sum(t.numel() * t.element_size() for part in (world.vae, world.generator)
                  for t in (*part.parameters(), *part.buffers()))
    cache = sum(t.numel() * t.element_size() for t in (*state.cache.k, *state.cache.v))
    assert generated.memory_needed(world.config, world.dtype) == (weights, cache)

    monkeypatch.setattr(generated, "memory_free", lambda device: weights + cache - 1)
    with pytest.raises(InputError) as refused:
        GeneratedWorld.random(get_config("tiny"), torch.device("cpu"))
    message = str(refused.value)
    assert "'tiny'" in message and "GiB" in message and "\n" not in message
    monkeypatch.setattr(generated, "memory_free", lambda device: None)  # a system that does not say: no check
    GeneratedWorld.random(get_config("tiny"), torch.device("cpu"))


def test_a_checkpoint_whose_window_cannot_fit_is_refused_by_field(tmp_path, monkeypatch):
    """The window is the one size of a checkpoint's config that no tensor bounds: edited to 65536 latent frames it
    asked for a 4.5 GiB KV cache, a traceback under a memory limit and the OOM killer without one."""
    import dataclasses
    import torch
    import world.generated as generated
    from model.checkpoint import save_checkpoint
    from model.config import get_config
    from model.generator import Generator
    from model.vae import VAE
    config = get_config("tiny")
    config.generator = dataclasses.replace(config.generator, window=65536)
    path = tmp_path / "wide.safetensors"
    save_checkpoint(path, config, VAE(config.vae), Generator(config.generator),
                    {"origin_std": 1.0, "direction_std": 1.0}, "consistency")
    cache = generated.memory_needed(config, torch.float32)[1]
    monkeypatch.setattr(generated, "memory_free", lambda device: cache - 1)
    with pytest.raises(InputError) as refused:
        GeneratedWorld.open(checkpoint=path, device="cpu")
    message = str(refused.value)
    assert message.startswith(f"{path}: config.generator.window: 65536 latent frames need a KV cache of ") \
        and "\n" not in message, message
    monkeypatch.setattr(generated, "memory_free", lambda device: cache)
    GeneratedWorld.open(checkpoint=path, device="cpu")  # it fits: it opens
    # play holds a copy with each state it can rewind to: it used 4x the check's figure, and past it ran out
    from explorer.game import STATES_HELD
    from world.make import WorldOpener
    with pytest.raises(InputError, match=f"\\({STATES_HELD} copies: one for each state kept to rewind to\\)"):
        WorldOpener(str(path), "cpu", caches=STATES_HELD)("generated", None)
    monkeypatch.setattr(generated, "memory_free", lambda device: cache * STATES_HELD)
    WorldOpener(str(path), "cpu", caches=STATES_HELD)("generated", None)
