"""explorer eval: its camera estimators on the reference world, its diffusion baseline, and a short run end to end."""
import json

import numpy as np
import pytest
import torch

from camera.embedding import CameraScaling
from camera.errors import InputError
from camera.trajectories import forward_trajectory, random_trajectory, yaw_trajectory
from explorer.cli import main
from explorer.eval import (CHECKS, YAW_DEG_PER_S, Autoencoder, MultiStepWorld, _relative_error, drive, held_out_start,
                           implied_shifts, measured_log_zooms, measured_shifts)
from levels import LEVELS_DIR, PATHS_DIR
from model.checkpoint import save_checkpoint
from world.dataset import HELD_OUT_SEEDS
from world.generated import GeneratedWorld
from world.reference import ReferenceWorld

SCENES = HELD_OUT_SEEDS[:4]  # the scenes a default eval measures camera adherence on


@pytest.fixture
def one_thread():
    """The tiny model gains nothing from a second thread, and on a shared two-core machine waiting for one is slow."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


def tiny_world() -> GeneratedWorld:
    """Random tiny weights with a non-zero output layer (it starts at zero: v = 0 would make every sampler equal)."""
    world = GeneratedWorld.open(device="cpu", random_config="tiny")
    torch.manual_seed(1)
    torch.nn.init.normal_(world.generator.head.linear.weight, std=0.05)
    return world


@pytest.fixture(scope="module")
def tiny_checkpoint(tmp_path_factory):
    world = tiny_world()
    path = tmp_path_factory.mktemp("eval") / "tiny.safetensors"
    save_checkpoint(path, world.config, world.vae, world.generator, CameraScaling().to_dict(), "diffusion")
    return path


@pytest.mark.parametrize("size", [(256, 144), (128, 72)])
def test_yaw_shift_estimator_follows_the_reference_world_within_10_percent(size):
    reference = ReferenceWorld(size)
    try:
        for i, seed in enumerate(SCENES):
            scene, start = held_out_start(seed)
            reference.set_scene(scene)
            poses = yaw_trajectory(start, 1 + CHECKS[-1], YAW_DEG_PER_S if i % 2 == 0 else -YAW_DEG_PER_S)
            implied = implied_shifts(poses, size)
            measured = measured_shifts(reference.render(poses), size)
            error = _relative_error([measured], [implied], [True])
            assert error < 10, f"scene {seed}: measured {measured.round(1)}, implied {implied.round(1)}"
    finally:
        reference.close()
    if size[0] == 256:
        assert abs(implied[-1]) > 40  # the shifts reach the size where phase correlation gives up


def test_yaw_shift_estimator_follows_the_reference_world_through_the_shipped_vae():
    """The reference's own frames through the shipped VAE follow the camera exactly, drawn as softly as the model
    draws: the estimator must follow them too, or it cannot tell a model that turns from one that does not. Matched
    on luminance instead of edges, these 8 scenes measured 86% off (the search ran to its bounds)."""
    world = GeneratedWorld.open(device="cpu")
    reference = ReferenceWorld(world.size)
    measured, implied = [], []
    try:
        for i, seed in enumerate(HELD_OUT_SEEDS[:8]):
            scene, start = held_out_start(seed)
            reference.set_scene(scene)
            poses = yaw_trajectory(start, 1 + CHECKS[-1], YAW_DEG_PER_S if i % 2 == 0 else -YAW_DEG_PER_S)
            implied.append(implied_shifts(poses, world.size))
            measured.append(measured_shifts(Autoencoder(world.vae).video(reference.render(poses)), world.size))
    finally:
        reference.close()
    error = _relative_error(measured, implied, [True] * len(implied))
    measured, implied = np.concatenate(measured), np.concatenate(implied)
    assert error < 20, f"measured {measured.round(1)}, implied {implied.round(1)}: {error:.1f}%"


def test_zoom_estimator_sees_the_reference_world_expand_when_walking_forward():
    reference = ReferenceWorld((128, 72))
    try:
        for seed in SCENES:
            scene, start = held_out_start(seed)
            reference.set_scene(scene)
            zooms = np.exp(measured_log_zooms(reference.render(forward_trajectory(start, 1 + CHECKS[-1], 2.0))))
            assert zooms[-1] > 1.03 and zooms[-1] > zooms[0] > 0.99, f"scene {seed}: {zooms.round(3)}"
    finally:
        reference.close()


def test_zoom_estimator_follows_the_reference_world_through_the_shipped_vae():
    """As for yaw: the reference's frames through the shipped VAE expand as the reference's own do, drawn as softly
    as the model draws, and the estimator must see that. Matched on luminance, these 8 scenes measured 73% off."""
    world = GeneratedWorld.open(device="cpu")
    reference = ReferenceWorld(world.size)
    measured, truth = [], []
    try:
        for seed in HELD_OUT_SEEDS[:8]:
            scene, start = held_out_start(seed)
            reference.set_scene(scene)
            frames = reference.render(forward_trajectory(start, 1 + CHECKS[-1], 2.0))
            truth.append(measured_log_zooms(frames))
            measured.append(measured_log_zooms(Autoencoder(world.vae).video(frames)))
    finally:
        reference.close()
    error = _relative_error(measured, truth, [True] * len(truth))
    measured, truth = np.concatenate(measured), np.concatenate(truth)
    assert error < 35, f"measured {np.exp(measured).round(3)}, reference {np.exp(truth).round(3)}: {error:.1f}%"


def test_one_step_sampler_equals_the_generated_world_and_more_steps_differ(one_thread):
    world = tiny_world()
    scene, start = held_out_start(0)
    poses = random_trajectory(np.random.default_rng(0), 13, start)
    reference = ReferenceWorld(world.size)
    try:
        reference.set_scene(scene)
        first = reference.render(poses[:1])[0]
    finally:
        reference.close()
    generated = drive(world, first, poses, seed=5)
    assert np.array_equal(drive(MultiStepWorld(world, 1), first, poses, seed=5), generated)
    four = drive(MultiStepWorld(world, 4), first, poses, seed=5)
    assert four.shape == generated.shape and not np.array_equal(four[1:], generated[1:])
    assert np.array_equal(drive(MultiStepWorld(world, 4), first, poses, seed=5), four)  # deterministic


def test_short_eval_prints_every_field_and_is_deterministic(tiny_checkpoint, tmp_path, capsys, one_thread):
    outputs = []
    for run in range(2):
        plot = tmp_path / f"eval{run}.png"
        assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--seconds", "2", "--scenes", "1", "--levels",
                     "meadow", "--paths", str(PATHS_DIR / "walk.toml"), "--json", "--plot", str(plot)]) == 0
        outputs.append(capsys.readouterr().out)
        assert plot.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert outputs[0] == outputs[1]
    r = json.loads(outputs[0])
    assert r["checkpoint"] == str(tiny_checkpoint) and r["levels"] == ["meadow"] and r["seconds"] == 2
    assert r["streams"] == 2 and r["size"] == [64, 32]
    assert r["device"].startswith("cpu (") and "threads)" in r["device"]  # as bench's JSON names it
    for key in ("psnr", "ssim", "hold_psnr"):
        assert set(r[key]) == {"1s", "5s", "10s", "60s"}
        assert r[key]["5s"] is None and r[key]["10s"] is None and r[key]["60s"] is None  # past --seconds
    assert 0 < r["psnr"]["1s"] < r["hold_psnr"]["1s"] < 100  # random weights lose to holding the first frame
    assert -1 <= r["ssim"]["1s"] <= 1
    for key in ("yaw_shift_error_pct", "forward_error_pct", "sharpness_ratio"):
        assert isinstance(r[key], float) and r[key] >= 0
    assert r["camera"]["reference_yaw_shift_error_pct"] < 10  # the estimator follows the reference world
    assert len(r["fd_windows"]) == 1 and r["fd_windows"][0] > 0 and r["drift"] is None  # one window: none to tell
    diffusion = r["baselines"]["diffusion"]
    assert diffusion["steps"] == 4 and diffusion["drift"] is None
    assert diffusion["psnr"]["1s"] != r["psnr"]["1s"]  # a different sampler really ran
    assert len(r["curves"]["psnr"]["generated"]) == len(r["curves"]["t"]) == 2
    bound = r["vae_bound"]  # the reference through the (random) VAE: measured, and not the model
    assert set(bound["psnr"]) == {"1s", "5s", "10s", "60s"} and bound["sharpness_ratio"] >= 0
    assert bound["psnr"]["1s"] != r["psnr"]["1s"] and 0 < bound["psnr"]["1s"] < 100
    assert [s["name"] for s in r["per_stream"]] == ["held-out scene 0", "meadow along walk.toml"]
    for stream in r["per_stream"]:
        assert set(stream) == {"name", "generated", "diffusion", "hold", "vae"}
        assert all(0 < w["psnr"] < 100 and 0 < w["psnr_1s"] < 100 and w["colour_shift"] >= 0
                   for k, w in stream.items() if k != "name")
    at_1s = [s["generated"]["psnr_1s"] for s in r["per_stream"]]  # the total at 1 s pools the streams' errors
    assert min(at_1s) <= r["psnr"]["1s"] <= max(at_1s) and at_1s[0] != at_1s[1]
    assert r["colour_shift"] > 0 and bound["colour_shift"] > 0  # random weights draw the wrong colours
    assert main(["eval", "--checkpoint", str(tiny_checkpoint), "--seconds", "1", "--scenes", "1"]) == 0
    out = capsys.readouterr().out
    assert "the reference itself through the VAE: " in out and "held-out scene 0" in out and "colour shift" in out


def test_a_level_with_only_a_start_image_is_refused_by_name(tmp_path, capsys):
    from PIL import Image
    Image.new("RGB", (64, 32), (90, 120, 200)).save(tmp_path / "start.png")
    level = tmp_path / "picture.toml"
    level.write_text('[level]\nname = "picture"\nimage = "start.png"\n\n[start]\nposition = [0.0, 1.7, 0.0]\n')
    assert main(["eval", "--levels", str(level)]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and str(level) in err and "scene" in err


@pytest.mark.parametrize("args, words", [
    (["--checkpoint", "no/such.safetensors"], ["no/such.safetensors", "no such checkpoint"]),
    (["--levels", "atlantis"], ["atlantis", "no such level"]),
    (["--levels", "meadow", "--paths", "no/such/path.toml"], ["no/such/path.toml", "no such file"]),
    (["--paths", str(PATHS_DIR / "walk.toml")], ["--paths", "--levels"]),
    (["--seconds", "0.1"], ["--seconds"]),
    (["--plot", "eval.txt"], ["--plot", ".png"]),  # refused before the evaluation, not after it
    (["--plot", str(PATHS_DIR / "walk.toml" / "eval.png")], ["--plot", "walk.toml is a file"]),
])
def test_bad_input_is_one_line_naming_it_and_exit_2(args, words, capsys):
    assert main(["eval", "--seconds", "1", *args]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and err.startswith("explorer: error:")
    for word in words:
        assert word in err


def test_a_path_shorter_than_seconds_is_said(capsys, tmp_path):
    # A path shorter than --seconds ended its streams early, unsaid: their later marks were left out of the scores.
    from explorer.eval import FPS, level_streams
    from world.level import load_level
    walk = str(PATHS_DIR / "walk.toml")  # 8 s
    streams = level_streams([load_level("meadow")], [walk], frames=10 * FPS + 1)
    assert len(streams[0].poses) == 8 * FPS + 1
    assert f"{walk} lasts 8 s, less than --seconds (10 s); its streams end there" in capsys.readouterr().err
    level_streams([load_level("meadow")], [walk], frames=5 * FPS + 1)
    assert "lasts" not in capsys.readouterr().err
    short = tmp_path / "short.toml"  # 1.967 s (59 frames of a 30 fps camera file) read "lasts 2.0 s, ... (2 s)"
    short.write_text("[path]\nrelative = true\n[[path.key]]\nt = 0.0\n[[path.key]]\nt = 1.9667\n"
                     "position = [0.0, 0.0, -1.0]\n")
    level_streams([load_level("meadow")], [str(short)], frames=2 * FPS + 1)
    assert "lasts 1.967 s, less than --seconds (2 s)" in capsys.readouterr().err


def test_a_path_shorter_than_one_step_is_refused_by_its_own_field_and_alone(tmp_path, capsys):
    """A RealEstate10K file was refused by a field it does not have (path.key), after a note on its length."""
    from explorer.eval import FPS, level_streams
    from world.level import load_level
    cameras = "".join(f"{i * 1_000_000 // 30} 0.5 0.89 0.5 0.5 0 0 1 0 0 0 0 1 0 0 0 0 1 {-0.1 * i}\n"
                      for i in range(4))  # 0.1 s of cameras: less than one step
    (tmp_path / "short.txt").write_text("https://example.com/video\n" + cameras)
    (tmp_path / "short.toml").write_text("[path]\nrelative = true\n[[path.key]]\nt = 0.0\n[[path.key]]\nt = 0.1\n")
    for name, field in (("short.txt", "timestamps"), ("short.toml", "path.key")):
        with pytest.raises(InputError, match=f"{name}: {field}: the path lasts 0.10 s, shorter than one step"):
            level_streams([load_level("meadow")], [str(tmp_path / name)], frames=10 * FPS + 1)
        assert capsys.readouterr().err == ""
    with pytest.raises(InputError, match="short.txt: timestamps"):  # nor a note on another path before it
        level_streams([load_level("meadow")], [str(PATHS_DIR / "walk.toml"), str(tmp_path / "short.txt")],
                      frames=10 * FPS + 1)
    assert capsys.readouterr().err == ""


def test_the_plot_names_the_feature_window_a_short_run_has(tmp_path, monkeypatch):
    # a 1 s run's one window, of 1 s, was titled "features per 5.0 s window"
    from matplotlib.figure import Figure
    from explorer.eval import plot
    titles = []
    monkeypatch.setattr(Figure, "savefig", lambda fig, *a, **k: titles.append(fig.axes[2].get_title()))
    for seconds, fd, title in ((1.0, [3.0], "features over the 1 s"), (12.0, [3.0, 4.0, 5.0], "features per 5 s window")):
        curve = {"generated": [1.0], "hold": [1.0], "diffusion": [None]}
        r = {"curves": {"t": [1.0], "psnr": curve, "ssim": curve}, "fd_window_seconds": 5.0, "fd_windows": fd,
             "seconds": seconds, "baselines": {"diffusion": {"fd_windows": fd}}, "checkpoint": "m.safetensors",
             "streams": 1}
        plot(r, tmp_path / "p.png")
        assert titles.pop() == title


def test_the_plot_is_not_written_over_a_file_the_evaluation_reads(tmp_path, capsys):
    # A level's start image is a .png like the plot: --plot naming it replaced the picture the level starts from.
    import matplotlib.pyplot as plt
    from camera.errors import refuse_overwriting
    from explorer.eval import EvalOptions, read_files
    image = tmp_path / "start.png"
    plt.imsave(image, np.full((72, 128, 3), 0.4))
    level = tmp_path / "picture.toml"
    level.write_text((LEVELS_DIR / "meadow.toml").read_text().replace("[level]\n", '[level]\nimage = "start.png"\n', 1))
    before = image.read_bytes()
    (tmp_path / "link.png").symlink_to(level)
    for plot in (image, tmp_path / "sub" / ".." / "start.png", tmp_path / "link.png"):
        assert main(["eval", "--levels", str(level), "--seconds", "1", "--plot", str(plot)]) == 2
        err = capsys.readouterr().err.strip()
        assert "\n" not in err and "--plot" in err and "write the plot somewhere else" in err, err
    assert image.read_bytes() == before and level.is_file()
    options = EvalOptions(levels=[str(level)], paths=[str(PATHS_DIR / "walk.toml")])
    read = {what: path for what, path in read_files(options)}
    assert read["a camera path it walks"] == PATHS_DIR / "walk.toml" and read["a checkpoint it evaluates"].is_file()
    refuse_overwriting(tmp_path / "other.png", read_files(options), "--plot", "")  # another name passes
