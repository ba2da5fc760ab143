"""The training stages on the tiny config and a tiny rendered dataset: a few steps lower each stage's loss on a
fixed batch, the rollout is inference's, resume is bit-exact, and the run folder holds what docs/training.md says."""
import json

import numpy as np
import pytest
import torch

from camera.embedding import CameraScaling
from camera.errors import InputError
from camera.pose import Pose
from model.checkpoint import load_checkpoint, read_safetensors, save_checkpoint
from model.config import get_config
from model.generator import Generator
from model.training.data import SampleRNG, clip_camera
from model.training.distributed import Dist
from model.training.options import TrainOptions
from model.training.run import RunFolder
from model.training.sampling import rollout
from model.training.train import build_stage, resolve, train
from model.training.vae import fold_latent_scale
from model.vae import VAE, from_uint8
from world.dataset import DataSpec, write_dataset
from world.generated import GeneratedWorld, step_noise

LR = 1e-3


@pytest.fixture(scope="module")
def data(tmp_path_factory):
    """6 clips of 9 frames (2 latent steps) at 64x32 from 3 scenes; the last scene is held out."""
    folder = tmp_path_factory.mktemp("data")
    write_dataset(folder, DataSpec(clips=6, size=(64, 32), frames=9, clips_per_scene=2, clips_per_shard=4))
    return folder


@pytest.fixture(scope="module")
def init(tmp_path_factory):
    """A random tiny model whose generator head is not zero (so every weight gets a gradient from the start)."""
    config = get_config("tiny")
    torch.manual_seed(0)
    vae, generator = VAE(config.vae), Generator(config.generator)
    torch.nn.init.normal_(generator.head.linear.weight, std=0.02)
    path = tmp_path_factory.mktemp("init") / "init.safetensors"
    save_checkpoint(path, config, vae, generator, CameraScaling().to_dict(), "diffusion")
    return path


def options(stage, data, run, init, **changes):
    base = dict(config="tiny", batch=2, lr=LR, warmup=0, val_clips=2, init=str(init), diffusion=str(init),
                save_every=1000, log_every=1)
    if stage == "vae":
        del base["init"]
    return TrainOptions(stage, str(data), str(run), **{**base, **changes})


@pytest.fixture(scope="module")
def shared(tmp_path_factory):
    """One run folder for the tests that only build stages: the latents are encoded once."""
    return tmp_path_factory.mktemp("run")


def make_stage(stage, data, run, init, **changes):
    opts = options(stage, data, run, init, **changes)
    run = RunFolder(opts.run)
    return build_stage(resolve(opts, set(), run), run, Dist())


def lowers(loss_on_fixed_batch, step, steps):
    before = loss_on_fixed_batch()
    for i in range(steps):
        step(i)
    after = loss_on_fixed_batch()
    assert after < before, (before, after)


# --- each stage learns -----------------------------------------------------------------------------------------

@pytest.mark.parametrize("colour_weight", [0.0, 10.0])
def test_vae_stage_lowers_its_loss(colour_weight, data, shared, init):
    stage = make_stage("vae", data, shared, init, vae_frames=5, batch=1,  # the VAE is slow at full resolution
                       colour_weight=colour_weight)
    indices, rng = stage.indices(0), lambda: SampleRNG(0, 0, range(1))
    video = stage.windows(indices, rng())
    assert ("colour" in stage.loss(video, rng())[1]) == bool(colour_weight)  # the term is on only when weighted

    @torch.no_grad()
    def loss():
        return stage.loss(video, rng())[0].item()

    def step(i):
        stage.loss(video, rng())[0].backward()
        stage.apply("vae", i)

    lowers(loss, step, 3)


@pytest.mark.parametrize("stage_name", ["pretrain", "diffusion", "consistency", "gate"])
def test_flow_stages_lower_their_loss(stage_name, data, shared, init):
    # the student starts equal to its teacher, so consistency starts nearly consistent and wants small steps
    stage = make_stage(stage_name, data, shared, init, lr=LR / 10 if stage_name == "consistency" else LR)
    generator_lowers(stage)


def generator_lowers(stage):
    """A few steps of a flow stage lower its loss on a fixed batch (fixed clips, noise, t, history noise)."""
    batch, rng = stage.batch(0), lambda: SampleRNG(0, 0, range(2))  # noqa: E731

    @torch.no_grad()
    def loss():
        return stage.loss(batch, rng()).item()

    def step(i):
        stage.loss(batch, rng()).backward()
        stage.apply("generator", i)

    lowers(loss, step, 6)


def test_gate_stage_grows_the_gate_moves_it_alone_and_exports_it(data, shared, init, tmp_path):
    assert not get_config("tiny").generator.warp_gate  # the stage adds it, at zero
    stage = make_stage("gate", data, shared, init)
    before = {k: v.clone() for k, v in stage.generator.state_dict().items()}
    assert not before["gate.weight"].any() and not before["gate.bias"].any()
    stage.loss(stage.batch(0), SampleRNG(0, 0, range(2))).backward()
    stage.apply("generator", 0)
    moved = {k for k, v in stage.generator.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {"gate.weight", "gate.bias"}
    stage.export(tmp_path / "gated.safetensors", 1)
    loaded = load_checkpoint(tmp_path / "gated.safetensors")
    assert loaded.config.generator.warp_gate
    assert torch.equal(loaded.generator.gate.weight, stage.generator.gate.weight.detach())
    again = make_stage("gate", data, tmp_path / "again", tmp_path / "gated.safetensors")  # goes on from a gated model
    assert torch.equal(again.generator.gate.weight, loaded.generator.gate.weight)


def test_warp_gate_option_grows_the_gate_in_the_adversarial_stage_and_trains_it(data, shared, init):
    stage = make_stage("adversarial", data, shared, init, warp_gate=True)
    assert stage.generator.config.warp_gate and not stage.generator.gate.weight.any()
    stage.generate(stage.batch(0), SampleRNG(0, 1, range(2)), train=True)
    stage.apply("generator", 0)
    assert stage.generator.gate.weight.any()  # the student-forced rollout's loss reaches the gate


def test_gate_only_adversarial_moves_the_gate_alone_and_the_discriminator_still_learns(data, shared, init):
    stage = make_stage("adversarial", data, shared, init, gate_only=True)
    assert stage.generator.config.warp_gate  # implies --warp-gate
    before = {k: v.clone() for k, v in stage.generator.state_dict().items()}
    judge = {k: v.clone() for k, v in stage.discriminator.state_dict().items()}
    stage.train_step(0)
    moved = {k for k, v in stage.generator.state_dict().items() if not torch.equal(v, before[k])}
    assert moved == {"gate.weight", "gate.bias"}
    assert any(not torch.equal(v, judge[k]) for k, v in stage.discriminator.state_dict().items())


def test_gate_only_is_refused_outside_the_adversarial_stages(data, shared, init):
    with pytest.raises(InputError, match="--gate-only"):
        make_stage("diffusion", data, shared, init, gate_only=True)


def test_history_noise_perturbs_only_the_recycled_latents(data, shared, init):
    from model.training.diffusion import recycled
    stage = make_stage("diffusion", data, shared, init, history_noise=0.5)
    batch = stage.batch(0)
    truth = recycled(batch, "block_causal")
    assert torch.equal(truth, batch.latents[:, :, :-1])  # no noise asked: the ground truth, no draws
    noisy = recycled(batch, "block_causal", SampleRNG(0, 0, range(2)), 0.5)
    assert torch.equal(noisy[:, :, 0], truth[:, :, 0])  # the first image's latent is exact at play too
    std = (noisy - truth)[:, :, 1:].flatten(1).std(dim=1)  # per clip: U(0, 0.5) drawn, so within (0, 0.5]
    assert ((std > 0) & (std < 0.55)).all() and not torch.allclose(std[0], std[1]), std
    assert torch.equal(noisy, recycled(batch, "block_causal", SampleRNG(0, 0, range(2)), 0.5))  # deterministic
    assert torch.equal(recycled(batch, "full", SampleRNG(0, 0, range(2)), 0.5), batch.first.expand_as(batch.x0))
    generator_lowers(stage)


def test_adversarial_players_lower_their_losses(data, shared, init):
    """The long stage with two windows: the adversarial stage is its one-window case."""
    stage = make_stage("long", data, shared, init, segments=2, overlap=1)
    batch = stage.batch(0)
    fixed = lambda: SampleRNG(0, 0, range(2))  # noqa: E731
    k = batch.x0.shape[2]

    _, windows = stage.generate(batch, fixed(), train=False)
    # 2 windows of k steps sharing one: generated steps 0..k-1, then k-1..2k-2
    assert len(windows) == 2 and all(w[0].shape[2] == k for w in windows)
    assert torch.equal(windows[1][0][:, :, 0], windows[0][0][:, :, -1])
    assert torch.equal(windows[1][1][:, :, 1], windows[1][0][:, :, 0])  # recycled = the frame before
    assert torch.equal(windows[0][1][:, :, 0], batch.first[:, :, 0])

    def d_loss():
        return stage.discriminate(batch, windows, fixed(), train=False)["d_loss"]

    def d_step(i):
        stage.discriminate(batch, windows, SampleRNG(0, i + 1, range(2)), train=True)
        stage.apply("discriminator", i)

    lowers(d_loss, d_step, 3)

    def g_loss():
        return stage.generate(batch, fixed(), train=False)[0]

    def g_step(i):
        stage.generate(batch, SampleRNG(0, i + 1, range(2)), train=True)
        stage.apply("generator", i)

    lowers(g_loss, g_step, 3)


def test_the_discriminator_learns_at_its_own_rate(data, shared, init):
    stage = make_stage("adversarial", data, shared, init, disc_lr_scale=3.0)
    for name in ("generator", "discriminator"):
        stage.apply(name, 0)  # no gradients yet: sets the rates, moves nothing
    rates = {name: opt.param_groups[0]["lr"] for name, (_, opt) in stage.optimizers.items()}
    assert rates == {"generator": LR, "discriminator": 3 * LR}


def test_decoder_stage_players_lower_their_losses_and_keep_the_latents(data, shared, init, tmp_path):
    stage = make_stage("decoder", data, shared, init, vae_frames=5, batch=1)
    rng = lambda: SampleRNG(0, 0, range(1))  # noqa: E731 (fixed window and noise)
    video = stage.windows(stage.indices(0), rng())
    encoder_before = {k: v.clone() for k, v in stage.vae.encoder.state_dict().items()}

    @torch.no_grad()
    def d_loss():
        recon = stage.decoder_loss(video, rng())[1]
        return stage.discriminate(video, recon, rng())[1]["d_loss"]

    recon = stage.decoder_loss(video, rng())[1].detach()

    def d_step(i):
        stage.discriminate(video, recon, rng())[0].backward()
        stage.apply("discriminator", i)

    lowers(d_loss, d_step, 3)

    @torch.no_grad()
    def g_loss():
        return stage.decoder_loss(video, rng())[0].item()

    def g_step(i):
        stage.decoder_loss(video, rng())[0].backward()
        stage.apply("decoder", i)

    lowers(g_loss, g_step, 3)
    # only the decoder learned: the latents (and a generator trained on them) are the source model's
    assert all(torch.equal(v, stage.vae.encoder.state_dict()[k]) for k, v in encoder_before.items())
    assert set(stage.validate()) == {"val_psnr", "val_l1", "val_sharpness"}
    stage.export(tmp_path / "model.safetensors", 3)
    source, out = load_checkpoint(init), load_checkpoint(tmp_path / "model.safetensors")
    assert all(torch.equal(v, out.generator.state_dict()[k]) for k, v in source.generator.state_dict().items())
    assert not torch.equal(source.vae.decoder.conv_out.weight, out.vae.decoder.conv_out.weight)


# --- the rollout is inference ----------------------------------------------------------------------------------

def test_student_forcing_rollout_is_generated_world_step(init):
    loaded = load_checkpoint(init)
    world = GeneratedWorld(loaded.config, loaded.vae, loaded.generator, CameraScaling(), "cpu")
    frame = np.random.default_rng(0).integers(0, 256, (32, 64, 3), dtype=np.uint8)
    poses = [Pose((0.0, 1.7, -0.1 * i), yaw=3.0 * i) for i in range(9)]
    world.reset_from_frame(frame, poses[0], seed=5)
    first = world.state().prev
    for j in range(2):
        world.step(poses[1 + 4 * j:5 + 4 * j])
    cam = clip_camera(np.stack([p.to_array() for p in poses]), loaded.config, CameraScaling())[None]
    noise = torch.cat([step_noise(5, j, first.shape, "cpu", torch.float32) for j in range(2)], dim=2)
    with torch.no_grad():
        latents, _ = rollout(loaded.generator, first, cam, noise)
    assert torch.allclose(latents[:, :, -1:], world.state().prev, atol=1e-5)

    # gradients reach step 1's noise from step 2's output only through the KV cache (the recycled input is detached)
    noise.requires_grad_(True)
    latents, cache = rollout(loaded.generator, first, cam, noise)
    (grad,) = torch.autograd.grad(latents[:, :, 1].square().sum(), noise)
    assert grad[:, :, 0].abs().sum() > 0
    assert grad[:, :, 0].abs().sum() < grad[:, :, 1].abs().sum()  # the own noise counts most


def test_fold_latent_scale_keeps_the_decoder_output(init):
    vae = load_checkpoint(init).vae
    video = from_uint8(np.random.default_rng(1).integers(0, 256, (5, 32, 64, 3), dtype=np.uint8))[None]
    folded = VAE(vae.config)
    folded.load_state_dict(fold_latent_scale(vae.state_dict(), vae.config.latent_channels, 4.0))
    with torch.no_grad():
        mean, logvar = vae.encode(video)
        mean2, logvar2 = folded.encode(video)
        assert torch.allclose(mean2, mean / 4, atol=1e-6)
        assert torch.allclose(logvar2, logvar - 2 * np.log(4.0), atol=1e-5)
        assert torch.allclose(folded.decode(mean2), vae.decode(mean), atol=1e-5)


# --- runs, resume, options -------------------------------------------------------------------------------------

def test_resume_restores_identical_state(data, tmp_path, init):
    def run(name, steps, resume=False):
        opts = options("adversarial", data, tmp_path / name, init, steps=steps, resume=resume, save_every=1)
        train(opts, explicit={"steps", "resume"} if resume else set())

    run("straight", 2)
    run("resumed", 1)
    run("resumed", 2, resume=True)
    a, meta_a = read_safetensors(tmp_path / "straight/adversarial/state.safetensors")
    b, meta_b = read_safetensors(tmp_path / "resumed/adversarial/state.safetensors")
    assert meta_a["step"] == meta_b["step"] == "2"
    assert a.keys() == b.keys() and any(k.startswith("optim.discriminator.") for k in a)
    assert all(torch.equal(a[k], b[k]) for k in a)
    assert not torch.equal(a["module.generator.head.linear.weight"],
                           read_safetensors(init)[0]["generator.head.linear.weight"])  # it did train

    stage_dir = tmp_path / "resumed/adversarial"
    records = [json.loads(line) for line in (stage_dir / "metrics.jsonl").read_text().splitlines()]
    assert [r["step"] for r in records if "loss" in r] == [1, 2]
    assert [r["step"] for r in records if "val_psnr" in r] == [1, 2]
    assert (stage_dir / "loss.png").stat().st_size > 0
    assert sorted(p.name for p in (stage_dir / "samples").iterdir()) == ["step_000001.mp4", "step_000002.mp4"]
    world = GeneratedWorld.open(checkpoint=stage_dir / "model.safetensors", device="cpu")
    assert world.stage == "adversarial" and world.camera_scaling == CameraScaling(**json.loads(
        (tmp_path / "resumed/run.json").read_text())["camera_scaling"])


def test_grad_checkpointing_trains_the_same_weights_and_may_change_on_resume(data, tmp_path, init):
    # Backbone.grad_checkpointing was there for large configs, but no option set it: only a test did.
    def run(name, steps, resume=False, checkpointing=False):
        opts = options("diffusion", data, tmp_path / name, init, steps=steps, resume=resume, save_every=1,
                       grad_checkpointing=checkpointing)
        train(opts, explicit={"steps", "resume", "grad_checkpointing"} if resume else set())

    run("kept", 2)
    run("recomputed", 1, checkpointing=True)
    run("recomputed", 2, resume=True)  # and off again on resume: the same math
    a, _ = read_safetensors(tmp_path / "kept/diffusion/state.safetensors")
    b, _ = read_safetensors(tmp_path / "recomputed/diffusion/state.safetensors")
    assert a.keys() == b.keys() and all(torch.allclose(a[k], b[k], atol=1e-6) for k in a)
    assert not torch.equal(a["module.generator.head.linear.weight"],
                           read_safetensors(init)[0]["generator.head.linear.weight"])  # it did train
    stage = make_stage("diffusion", data, tmp_path / "on", init, grad_checkpointing=True)
    assert stage.generator.backbone.grad_checkpointing


def test_resume_keeps_the_vae_it_trained_with(data, tmp_path, init):
    # The latents were encoded again on resume with the source's VAE as it was then (a VAE stage resumed since, or
    # the --init file replaced): the generator went on training on other latents than the state's VAE makes.
    import shutil
    source = tmp_path / "source.safetensors"
    shutil.copy(init, source)

    def run(name, steps, resume=False):
        opts = options("diffusion", data, tmp_path / name, source, steps=steps, resume=resume, save_every=1,
                       sample_steps=1)
        train(opts, explicit={"steps", "resume"} if resume else set())

    run("straight", 2)
    run("resumed", 1)
    config = get_config("tiny")
    torch.manual_seed(1)
    save_checkpoint(source, config, VAE(config.vae), Generator(config.generator), CameraScaling().to_dict(), "diffusion")
    run("resumed", 2, resume=True)
    a, _ = read_safetensors(tmp_path / "straight/diffusion/state.safetensors")
    b, _ = read_safetensors(tmp_path / "resumed/diffusion/state.safetensors")
    assert all(torch.equal(a[k], b[k]) for k in a), [k for k in a if not torch.equal(a[k], b[k])][:3]
    assert len(list((tmp_path / "resumed/latents").iterdir())) == 1  # no second cache, of the other VAE

def test_stage_refuses_to_restart_or_change_on_resume(data, tmp_path, init):
    opts = options("diffusion", data, tmp_path / "run", init, steps=1, sample_steps=1)
    train(opts)
    with pytest.raises(InputError, match="--resume"):
        resolve(opts, set(), RunFolder(opts.run))
    resumed = options("diffusion", data, tmp_path / "run", init, steps=3, resume=True, lr=0.5)
    with pytest.raises(InputError, match="options.lr"):
        resolve(resumed, {"steps", "resume", "lr"}, RunFolder(opts.run))
    assert resolve(resumed, {"steps", "resume"}, RunFolder(opts.run)).lr == LR
    with pytest.raises(InputError, match="--steps: the diffusion stage is at step 1 already of its 1: give --steps "
                       "above 1 to train on"):
        resolve(options("diffusion", data, tmp_path / "run", init, steps=1, resume=True), {"steps", "resume"},
                RunFolder(opts.run))  # it ran nothing and said nothing
    # another stage's state copied into a stage's folder: it ran that other stage and wrote into its folder
    import shutil
    (tmp_path / "run" / "pretrain").mkdir()
    shutil.copy(tmp_path / "run/diffusion/state.safetensors", tmp_path / "run/pretrain/state.safetensors")
    copied = options("pretrain", data, tmp_path / "run", init, steps=3, resume=True)
    with pytest.raises(InputError, match="pretrain/state.safetensors: stage: this is the diffusion stage's state, "
                       "not the pretrain stage's"):
        resolve(copied, {"steps", "resume"}, RunFolder(opts.run))
    with pytest.raises(InputError, match="spec.size"):
        make_stage("diffusion", data, tmp_path / "other", init, config="mini")
    # a batch of more clips than the data have to train on (4 here): refused before the run folder is made
    with pytest.raises(InputError, match="--batch: 1000 clips per step, but the data have 4 to train on"):
        make_stage("diffusion", data, tmp_path / "big", init, batch=1000)
    assert not (tmp_path / "big").exists()
    # an option the stage itself refuses, once the run folder was made: the folder goes again
    with pytest.raises(InputError, match="--vae-frames: 13 is longer than the data's clips"):
        make_stage("vae", data, tmp_path / "long" / "nested" / "run", init, vae_frames=13)
    assert not (tmp_path / "long").exists()  # the folders its path made too
    (tmp_path / "mine").mkdir()  # but what someone else keeps there stays
    (tmp_path / "mine" / "notes.txt").write_text("mine")
    with pytest.raises(InputError, match="--vae-frames"):
        make_stage("vae", data, tmp_path / "mine", init, vae_frames=13)
    assert sorted(p.name for p in (tmp_path / "mine").iterdir()) == ["notes.txt"]


@pytest.mark.parametrize("text, words", [("[]", "must be a JSON object"), ("{", "not valid JSON"),
                                         ('{"format": "explorer-run/0"}', "format")])
def test_a_damaged_run_description_is_one_line(tmp_path, text, words):
    from camera.errors import InputError
    from model.config import get_config
    from model.training.distributed import Dist
    from model.training.run import RunFolder
    (tmp_path / "run.json").write_text(text)
    with pytest.raises(InputError, match=f"run.json: .*{words}"):
        RunFolder(tmp_path).open(get_config("tiny"), None, Dist())


def test_clips_too_short_to_train_on_are_refused_by_the_data_and_write_no_run(tmp_path, init):
    """Clips of one frame left NaN camera scaling in run.json (after numpy's warning), so the run folder refused
    every later command, good data included."""
    from world.dataset import DataSpec, write_dataset
    short = tmp_path / "short"
    spec = DataSpec(clips=4, size=(64, 32), frames=5, clips_per_scene=1, clips_per_shard=4)
    object.__setattr__(spec, "frames", 1)  # `explorer data` refuses 1-frame clips now; older versions wrote them
    write_dataset(short, spec)
    for stage in ("vae", "diffusion"):
        with pytest.raises(InputError, match="manifest.json: spec.frames: clips of 1 frame; training needs at least 5"):
            make_stage(stage, short, tmp_path / "run", init, val_clips=1)
        assert not (tmp_path / "run" / "run.json").exists()


@pytest.mark.parametrize("stage, option, value", [
    ("vae", "warp_gate", True), ("vae", "segments", 5), ("vae", "cd_steps", 5), ("vae", "diffusion", "d.safetensors"),
    ("vae", "r1_lambda", 5.0), ("vae", "history_noise", 1.0), ("vae", "shift", 3.0), ("diffusion", "kl_weight", 1.0),
    ("consistency", "segments", 5), ("adversarial", "adv_weight", 1.0), ("decoder", "kl_weight", 1.0),
    ("adversarial", "shift", 3.0), ("pretrain", "history_noise", 0.1),  # read by no code of theirs
])
def test_an_option_for_other_stages_is_refused_by_name(tmp_path, stage, option, value):
    # `train vae --warp-gate` wrote a VAE-stage model with a gate, which every later stage then refused (unless
    # given --warp-gate too); the other options here did nothing at all, without a word.
    opts = TrainOptions(stage, str(tmp_path / "data"), str(tmp_path / "run"), **{option: value})
    flag = "--" + option.replace("_", "-")
    with pytest.raises(InputError, match=f"command line: {flag}: is for the .* not {stage}"):
        resolve(opts, {option}, RunFolder(opts.run))
    assert not (tmp_path / "run").exists()


def test_long_rollouts_and_overlaps_the_clips_cannot_take_are_refused_and_write_no_run(data, tmp_path, init):
    # --segments 100000 sat in its first step for minutes, deaf to SIGTERM; the default --overlap 2 on 2-step clips
    # was blamed on the command line's --overlap, which was not given
    with pytest.raises(InputError, match=r"--segments: 100000 windows roll out 100001 latent steps; at most 360 "
                                         r"\(60 s at 24 fps.*at most 359 windows here"):
        make_stage("long", data, tmp_path / "a", init, segments=100000, overlap=1)
    with pytest.raises(InputError, match=r"--overlap: 2 must be 0 .. 1: the clips have 2 latent steps \(9 frames\); "
                                         r"give a smaller --overlap \(the default is 2\)"):
        make_stage("long", data, tmp_path / "b", init)
    assert not (tmp_path / "a" / "run.json").exists() and not (tmp_path / "b" / "run.json").exists()


@pytest.mark.parametrize("option, value", [("lr", 1e300), ("disc_lr_scale", 1e300)])
def test_learning_rates_past_any_use_are_refused(tmp_path, option, value):
    # --lr 1e300 overflowed in the optimiser: a traceback, and a half-made run
    opts = TrainOptions("adversarial", str(tmp_path / "data"), str(tmp_path / "run"), **{option: value})
    with pytest.raises(InputError, match=f"--{option.replace('_', '-')}: must be at most"):
        opts.check()


def test_cuda_without_a_gpu_is_an_input_error(monkeypatch):
    from model.training import distributed
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(InputError, match="--device: cuda was asked for but no CUDA GPU is available"):
        distributed.setup("cuda")


def test_a_later_stage_trains_the_config_its_run_trains(data, tmp_path, init, monkeypatch):
    # without --config, a tiny run's next stage took mini and blamed the data ("the 'mini' config needs 128x72")
    import model.training.train as training
    (tmp_path / "run").mkdir()
    (tmp_path / "run" / "run.json").write_text(json.dumps({"config": "tiny"}))
    taken = []
    monkeypatch.setattr(training, "resolve", lambda opts, explicit, run: taken.append(opts.config) or
                        (_ for _ in ()).throw(InputError("x", None, "stop")))
    for explicit, expected in ((set(), "tiny"), ({"config"}, "mini")):
        with pytest.raises(InputError, match="stop"):
            train(TrainOptions("pretrain", str(data), str(tmp_path / "run")), explicit)
        assert taken.pop() == expected


def test_an_option_for_its_own_stages_is_taken():
    for stage, option, value in (("long", "segments", 5), ("consistency", "diffusion", "d.safetensors"),
                                 ("decoder", "adv_weight", 1.0), ("gate", "warp_gate", True)):
        TrainOptions(stage, "d", "r", **{option: value}).check_scope({option})


def test_a_damaged_metrics_log_is_read_past(tmp_path):
    # An edited or damaged line of metrics.jsonl stopped a resumed run with a traceback (KeyError, TypeError,
    # AttributeError, UnicodeDecodeError), in truncate or, after the state was saved, in plot.
    from model.training.run import Metrics
    metrics = Metrics(tmp_path)
    good = [{"step": 1, "loss": 0.5}, {"step": 2, "loss": 0.4, "val_psnr": 20.0}, {"step": 3, "loss": 0.3}]
    lines = [json.dumps(good[0]), '{"foo": 1}', "[1, 2]", '{"step": "x", "loss": 1}', json.dumps(good[1]),
             json.dumps(good[2]), '{"step": 4, "lo']
    metrics.path.write_bytes("\n".join(lines).encode() + b"\n\xff\xfe\n")
    metrics.plot()
    assert metrics.plot_path.stat().st_size > 0
    metrics.truncate(2)
    assert [json.loads(line) for line in metrics.path.read_text().splitlines()] == good[:2]


def test_a_resume_that_cannot_rewrite_the_metrics_log_leaves_it_whole(tmp_path, monkeypatch):
    # truncate wrote the log in place: a full disk (or a kill) as --resume began left metrics.jsonl empty.
    import pathlib

    from model.training.run import Metrics
    metrics = Metrics(tmp_path)
    before = "".join(json.dumps({"step": s, "loss": 1.0 / s}) + "\n" for s in (1, 2, 3))
    metrics.path.write_text(before)
    write_text = pathlib.Path.write_text

    def full_disk(self, text, *args, **kwargs):
        write_text(self, text[:10], *args, **kwargs)  # what fitted
        raise OSError(28, "No space left on device")
    monkeypatch.setattr(pathlib.Path, "write_text", full_disk)
    with pytest.raises(InputError, match="No space left on device"):
        metrics.truncate(2)
    monkeypatch.undo()
    assert metrics.path.read_text() == before and [f.name for f in tmp_path.iterdir()] == ["metrics.jsonl"]


def test_a_bad_diffusion_model_is_refused_before_the_latents_are_encoded(data, tmp_path, init):
    # It was refused only once every clip was encoded (12 to 55 minutes for mini), the latents left in the new run.
    bad = tmp_path / "bad.safetensors"
    bad.write_bytes(b"\0" * 64)
    for stage in ("consistency", "adversarial"):
        with pytest.raises(InputError, match="bad.safetensors: not a readable safetensors file"):
            make_stage(stage, data, tmp_path / "new", init, diffusion=str(bad))
        assert not (tmp_path / "new").exists()
    # the run's own diffusion model, when --diffusion is not given: missing here
    with pytest.raises(InputError, match="diffusion/model.safetensors: the diffusion model is missing"):
        make_stage("consistency", data, tmp_path / "new", init, diffusion=None)
    assert not (tmp_path / "new").exists()


def test_a_diffusion_model_that_cannot_teach_the_stage_is_refused(data, tmp_path, init):
    """A vae-stage model (an untrained generator), or one on another VAE's latents, was taken as the teacher and
    the discriminator's start without a word. The same VAE in bf16 (a shipped model) is the same VAE."""
    config, source = get_config("tiny"), load_checkpoint(init)
    untrained = tmp_path / "vae-stage.safetensors"
    save_checkpoint(untrained, config, source.vae, source.generator, CameraScaling().to_dict(), "vae")
    torch.manual_seed(1)
    other = tmp_path / "other-vae.safetensors"
    save_checkpoint(other, config, VAE(config.vae), source.generator, CameraScaling().to_dict(), "diffusion")
    for path, words in ((untrained, "stage: is from the vae stage"), (other, "vae: its VAE encodes frames other")):
        for stage in ("consistency", "adversarial"):
            with pytest.raises(InputError, match=f"{path.name}: {words}"):
                make_stage(stage, data, tmp_path / "new", init, diffusion=str(path))
            assert not (tmp_path / "new").exists()
    shipped = tmp_path / "bf16.safetensors"
    save_checkpoint(shipped, config, source.vae, source.generator, CameraScaling().to_dict(), "diffusion",
                    storage_dtype=torch.bfloat16)
    make_stage("consistency", data, tmp_path / "new", init, diffusion=str(shipped))  # accepted


def test_closing_the_terminal_stops_training_after_the_step_saved(data, tmp_path):
    # SIGHUP (the terminal closed) killed the training where it was, losing every step since the last save.
    import signal
    import sys
    import time
    from conftest import Terminal
    run = tmp_path / "run"
    term = Terminal([sys.executable, "-m", "explorer.cli", "train", "vae", "--data", str(data), "--run", str(run),
                     "--config", "tiny", "--steps", "100000", "--batch", "2", "--val-clips", "2", "--save-every",
                     "100000"])
    deadline = time.monotonic() + 120
    metrics = run / "vae" / "metrics.jsonl"
    while not (metrics.exists() and metrics.stat().st_size) and term.proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.1)  # until it trains
    term.hang_up()
    assert term.proc.wait(timeout=120) == 128 + signal.SIGHUP, term.text
    step = int(read_safetensors(run / "vae" / "state.safetensors")[1]["step"])
    assert step >= 1


def test_a_sigterm_stops_training_after_the_step_saved_and_exits_143(data, tmp_path):
    # It exited 130, as for Ctrl-C, where play and render exit 143 for a SIGTERM.
    import signal
    import subprocess
    import sys
    import time
    run = tmp_path / "run"
    proc = subprocess.Popen([sys.executable, "-m", "explorer.cli", "train", "vae", "--data", str(data), "--run",
                             str(run), "--config", "tiny", "--steps", "100000", "--batch", "2", "--val-clips", "2",
                             "--save-every", "100000"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 120
    metrics = run / "vae" / "metrics.jsonl"
    while not (metrics.exists() and metrics.stat().st_size) and proc.poll() is None and time.monotonic() < deadline:
        time.sleep(0.1)  # until it trains
    proc.send_signal(signal.SIGTERM)
    out, err = proc.communicate(timeout=120)
    assert proc.returncode == 128 + signal.SIGTERM, err
    assert "saved (continue with --resume)" in out + err
    step = int(read_safetensors(run / "vae" / "state.safetensors")[1]["step"])
    assert step >= 1
