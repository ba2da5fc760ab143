"""Checkpoints: a bit-exact round trip, and every kind of bad file refused with a message that names the problem."""
import dataclasses
import hashlib
import json
import os

import pytest
import torch

import model.checkpoint as ckpt
from camera.errors import InputError
from model.checkpoint import (FORMAT, checkpoint_sha256, default_checkpoint_path, load_checkpoint, read_safetensors,
                              save_checkpoint, write_safetensors)
from model.config import ModelConfig, get_config
from model.generator import Generator
from model.vae import VAE

SCALING = {"origin_std": [0.1, 0.2, 0.3], "direction_std": [0.5, 0.5, 0.25]}


def build(config: ModelConfig, seed: int = 0):
    torch.manual_seed(seed)
    vae, generator = VAE(config.vae), Generator(config.generator)
    with torch.no_grad():  # the generator's output layer starts at zero; give every tensor distinct values
        for p in generator.parameters():
            p.add_(torch.randn_like(p) * 0.01)
    return vae, generator


@pytest.fixture(scope="module")
def saved(tmp_path_factory):
    config = get_config("tiny")
    vae, generator = build(config)
    path = tmp_path_factory.mktemp("ckpt") / "tiny.safetensors"
    save_checkpoint(path, config, vae, generator, SCALING, "adversarial", extra={"steps": "500"})
    return path, config, vae, generator


def rewrite(src, dst, edit_tensors=None, edit_metadata=None):
    """A copy of the checkpoint `src` at `dst` with its tensors and/or metadata edited."""
    tensors, metadata = read_safetensors(src)
    if edit_tensors:
        edit_tensors(tensors)
    if edit_metadata:
        edit_metadata(metadata)
    write_safetensors(dst, tensors, metadata)
    return dst


def refused(path, **kwargs) -> str:
    with pytest.raises(InputError) as err:
        load_checkpoint(path, **kwargs)
    message = str(err.value)
    assert str(path) in message and "\n" not in message
    return message


def test_round_trip_is_bit_exact(saved):
    path, config, vae, generator = saved
    loaded = load_checkpoint(path, expect_config="tiny")
    assert loaded.config == config
    assert loaded.camera_scaling == SCALING
    assert loaded.stage == "adversarial"
    assert loaded.metadata["steps"] == "500" and loaded.metadata["format"] == FORMAT
    for original, restored in ((vae, loaded.vae), (generator, loaded.generator)):
        a, b = original.state_dict(), restored.state_dict()
        assert a.keys() == b.keys()
        for name in a:
            assert torch.equal(a[name], b[name]), name
    again = path.with_name("again.safetensors")
    save_checkpoint(again, loaded.config, loaded.vae, loaded.generator, loaded.camera_scaling, loaded.stage,
                    extra={"steps": "500"})
    assert checkpoint_sha256(again) == checkpoint_sha256(path)  # metadata and tensors identical, byte for byte


def test_extra_modules_round_trip(saved, tmp_path):
    _, config, vae, generator = saved
    head = torch.nn.Linear(3, 2)
    path = tmp_path / "train.safetensors"
    save_checkpoint(path, config, vae, generator, SCALING, "adversarial", modules={"discriminator": head})
    fresh = torch.nn.Linear(3, 2)
    load_checkpoint(path, modules={"discriminator": fresh})
    assert torch.equal(fresh.weight, head.weight) and torch.equal(fresh.bias, head.bias)
    assert "discriminator.bias: unexpected tensor" in refused(path)  # a reader that does not expect it is told


def test_missing_file(tmp_path):
    assert "no such checkpoint file" in refused(tmp_path / "nothing.safetensors")
    (tmp_path / "folder.safetensors").mkdir()
    assert "folder.safetensors: is a folder, not a checkpoint file" in refused(tmp_path / "folder.safetensors")


def test_a_linked_part_given_as_the_checkpoint_says_so():
    vae_file = default_checkpoint_path().with_name("mini-vae.safetensors")
    assert "format: this is the vae part of a checkpoint; give the checkpoint that links it" in refused(vae_file)


def test_truncated_file(saved, tmp_path):
    data = saved[0].read_bytes()
    path = tmp_path / "cut.safetensors"
    path.write_bytes(data[: len(data) // 2])
    assert "not a readable safetensors file" in refused(path)


def test_random_bytes(tmp_path):
    path = tmp_path / "noise.safetensors"
    path.write_bytes(torch.randint(0, 256, (4096,), generator=torch.Generator().manual_seed(0),
                                   dtype=torch.uint8).numpy().tobytes())
    assert "not a readable safetensors file" in refused(path)


def test_wrong_format_string(saved, tmp_path):
    path = rewrite(saved[0], tmp_path / "f.safetensors", edit_metadata=lambda m: m.update(format="other/2"))
    message = refused(path)
    assert "format" in message and "other/2" in message


def test_missing_format(saved, tmp_path):
    path = rewrite(saved[0], tmp_path / "f.safetensors", edit_metadata=lambda m: m.pop("format"))
    assert "not an explorer checkpoint" in refused(path)


def test_an_unknown_stage_is_refused(saved, tmp_path):
    # ship copied an edited stage ("advrsarial") into the shipped model, and the vae-stage checks went by it
    path = rewrite(saved[0], tmp_path / "s.safetensors", edit_metadata=lambda m: m.update(stage="advrsarial"))
    message = refused(path)
    assert "stage: must be one of vae, decoder" in message and "'advrsarial'" in message


def test_missing_and_unparsable_config(saved, tmp_path):
    path = rewrite(saved[0], tmp_path / "a.safetensors", edit_metadata=lambda m: m.pop("config"))
    assert "config: missing" in refused(path)
    path = rewrite(saved[0], tmp_path / "b.safetensors", edit_metadata=lambda m: m.update(config="{not json"))
    assert "config: not valid JSON" in refused(path)


def test_config_with_a_bad_field(saved, tmp_path):
    def edit(m):
        d = json.loads(m["config"])
        d["vae"]["dec_blocks"] = [1, 1]
        m["config"] = json.dumps(d)
    assert "config.vae" in refused(rewrite(saved[0], tmp_path / "c.safetensors", edit_metadata=edit))


@pytest.mark.parametrize("field, value, words", [
    ("dim", "256", "whole number"), ("dim", True, "whole number"), ("dim", -1, "whole number"),
    ("dim", 10**7, "whole number"), ("heads", 0, "whole number"), ("heads", 3, "must divide dim"),
    ("mlp_ratio", float("nan"), "positive number"), ("mlp_ratio", 1e300, "positive number up to 64"), ("attention_backend", "xyz", "one of auto"),
    ("warp", 1, "true or false"), ("disc_layers", [99], "depths from 1"),
])
def test_config_values_are_checked_before_a_model_is_built(saved, tmp_path, field, value, words):
    # The metadata is text anyone can edit: a wrong value is one line naming it, not a traceback or an allocation.
    def edit(m):
        d = json.loads(m["config"])
        d["generator"][field] = value
        m["config"] = json.dumps(d)
    message = refused(rewrite(saved[0], tmp_path / "c.safetensors", edit_metadata=edit))
    assert f"config.generator.{field}: must" in message and words in message, message


@pytest.mark.parametrize("field, value, words", [
    ("depth", 65536, "config.generator.depth: 65536, but the file holds 2 transformer blocks"),
    ("dim", 65536, "generator."), ("mlp_ratio", 64.0, "generator.backbone.blocks.0.mlp"),
])
def test_a_config_far_larger_than_its_tensors_is_refused_before_anything_is_allocated(saved, tmp_path, field,
                                                                                       value, words, monkeypatch):
    # In range field by field, but a model of 17 GiB (dim), 65536 blocks (a minute to build even empty) or an
    # overflowing width: QA's traceback or an exhausted machine. Nothing may be built off the meta device.
    import model.checkpoint as checkpoint
    built = []
    monkeypatch.setattr(checkpoint, "Generator", lambda config: built.append(torch.get_default_device()) or
                        Generator(config))

    def edit(m):
        d = json.loads(m["config"])
        d["generator"][field] = value
        m["config"] = json.dumps(d)
    message = refused(rewrite(saved[0], tmp_path / "c.safetensors", edit_metadata=edit))
    assert words in message, message
    assert all(device.type == "meta" for device in built), built


def test_missing_tensor(saved, tmp_path):
    name = "vae.decoder.conv_out.weight"
    path = rewrite(saved[0], tmp_path / "m.safetensors", edit_tensors=lambda t: t.pop(name))
    message = refused(path)
    assert name in message and "missing tensor" in message


def test_extra_tensor(saved, tmp_path):
    path = rewrite(saved[0], tmp_path / "e.safetensors", edit_tensors=lambda t: t.update({"vae.spare": torch.ones(2)}))
    message = refused(path)
    assert "vae.spare" in message and "unexpected tensor" in message


def test_misshaped_tensor(saved, tmp_path):
    name = "generator.head.linear.bias"
    path = rewrite(saved[0], tmp_path / "s.safetensors",
                   edit_tensors=lambda t: t.update({name: torch.zeros(t[name].numel() + 1)}))
    message = refused(path)
    expected = tuple(saved[3].state_dict()["head.linear.bias"].shape)
    assert name in message and f"expected {expected}" in message


def test_wrong_dtype(saved, tmp_path):
    name = "vae.encoder.conv_in.bias"
    path = rewrite(saved[0], tmp_path / "d.safetensors", edit_tensors=lambda t: t.update({name: t[name].half()}))
    message = refused(path)
    assert name in message and "float16" in message


def test_non_finite_weights(saved, tmp_path):
    # A diverged run's NaN used to load, and the generated world drew black frames without a word.
    for value, name in ((float("nan"), "generator.head.linear.weight"), (float("inf"), "vae.decoder.conv_out.bias")):
        def poison(t, name=name, value=value):
            t[name] = t[name].clone()
            t[name].view(-1)[0] = value
        path = rewrite(saved[0], tmp_path / "n.safetensors", edit_tensors=poison)
        assert f"{name}: holds NaN or infinite values" in refused(path)


def test_config_other_than_expected(saved, tmp_path):
    assert "expected the 'mini' config, found 'tiny'" in refused(saved[0], expect_config="mini")
    tiny = get_config("tiny")
    changed = dataclasses.replace(tiny, generator=dataclasses.replace(tiny.generator, depth=3))
    path = tmp_path / "deeper.safetensors"
    save_checkpoint(path, changed, *build(changed), SCALING, "diffusion")
    message = refused(path, expect_config="tiny")
    assert "config.generator.depth" in message and "expected 2, found 3" in message
    assert load_checkpoint(path).config == changed  # without expectations it loads


def test_a_model_without_warp_grows_into_the_expected_one_computing_the_same(tmp_path):
    tiny = get_config("tiny")
    assert tiny.generator.warp
    old = dataclasses.replace(tiny, generator=dataclasses.replace(tiny.generator, warp=False))
    path = tmp_path / "old.safetensors"
    vae, generator = build(old)
    save_checkpoint(path, old, vae, generator, SCALING, "consistency")
    assert load_checkpoint(path).config == old  # without expectations it loads as stored
    grown = load_checkpoint(path, expect_config="tiny")
    assert grown.config == tiny and grown.generator.config.warp
    assert not grown.generator.backbone.warped_in.weight.any()  # the new input starts at zero
    g = torch.Generator().manual_seed(0)
    C, (w, h) = tiny.generator.latent_channels, tiny.generator.latent_size
    noisy, prev = torch.randn(2, C, 3, h, w, generator=g), torch.randn(2, C, 3, h, w, generator=g)
    cam, t = torch.randn(2, 26, 3, h, w, generator=g), torch.rand(2, generator=g)
    torch.testing.assert_close(grown.generator(noisy, prev, cam, t), generator(noisy, prev, cam[:, :24], t))
    # the other way (dropping a module) is not growth: refused by field
    newer = tmp_path / "new.safetensors"
    save_checkpoint(newer, tiny, *build(tiny), SCALING, "diffusion")
    with pytest.raises(InputError, match="config.generator.warp"):
        ckpt._check_expected(newer, tiny, old)


def test_unknown_expected_config(saved):
    with pytest.raises(InputError, match="known: tiny, mini, apt2-8b"):
        load_checkpoint(saved[0], expect_config="huge")


def test_failed_save_keeps_the_good_file(saved, tmp_path, monkeypatch):
    path, config, vae, generator = saved
    target = tmp_path / "good.safetensors"
    target.write_bytes(path.read_bytes())
    before = checkpoint_sha256(target)

    def crash(tensors, filename, metadata=None):
        with open(filename, "wb") as f:
            f.write(b"half a checkpoint")
        raise OSError("disk full")

    monkeypatch.setattr(ckpt, "save_file", crash)
    with pytest.raises(OSError, match="disk full"):
        save_checkpoint(target, config, vae, generator, SCALING, "diffusion")
    assert checkpoint_sha256(target) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["good.safetensors"]  # no temporary file left behind
    load_checkpoint(target, expect_config="tiny")


def test_low_precision_weights_are_not_saved(saved, tmp_path):
    _, config, vae, generator = saved
    low = VAE(config.vae).to(torch.bfloat16)
    path = tmp_path / "low.safetensors"
    with pytest.raises(ValueError, match="bfloat16"):
        save_checkpoint(path, config, low, generator, SCALING, "vae")
    assert not path.exists()


def test_sha256_and_default_path(saved):
    path = saved[0]
    assert checkpoint_sha256(path) == hashlib.sha256(path.read_bytes()).hexdigest()
    default = default_checkpoint_path()
    assert default.name == "mini.safetensors" and default.parent.name == "checkpoints"
    assert default.parent.parent.name == "model" and default.parent.is_dir()


# ---------------------------------------------------------------------------------------------------------------
# The configs that checkpoints carry


def test_named_configs_have_the_documented_sizes():
    sizes = {name: (get_config(name).latent_size(), get_config(name).generator.tokens_per_frame())
             for name in ("tiny", "mini", "apt2-8b")}
    assert sizes == {"tiny": ((8, 4), 32), "mini": ((16, 9), 144), "apt2-8b": ((92, 52), 1196)}
    big = get_config("apt2-8b")
    assert (big.generator.depth, big.generator.window, big.generator.patch) == (36, 30, 2)
    assert big.vae.enc_channels == (128, 256, 512, 512) and big.vae.dec_channels == (64, 128, 256, 512)


@pytest.mark.parametrize("name", ["tiny", "mini", "apt2-8b"])
def test_config_json_round_trip(name):
    config = get_config(name)
    assert ModelConfig.from_json(config.to_json()) == config


def test_unknown_config_name_lists_the_known_ones():
    with pytest.raises(InputError, match="known: tiny, mini, apt2-8b"):
        get_config("huge")


def test_disagreeing_sizes_are_refused_by_field():
    mini = get_config("mini")
    with pytest.raises(InputError, match="generator.latent_size"):
        dataclasses.replace(mini, width=256)
    with pytest.raises(InputError, match="generator.patch"):
        dataclasses.replace(mini, generator=dataclasses.replace(mini.generator, patch=2))
    with pytest.raises(InputError, match="generator.latent_channels"):
        dataclasses.replace(mini, generator=dataclasses.replace(mini.generator, latent_channels=8))
    with pytest.raises(InputError, match="dtype"):
        dataclasses.replace(mini, dtype="float16")


def test_bf16_storage_halves_the_file_and_loads_into_float32(tmp_path):
    import torch
    from model.checkpoint import load_checkpoint, save_checkpoint
    from model.config import get_config
    from model.generator import Generator
    from model.vae import VAE
    config = get_config("tiny")
    torch.manual_seed(0)
    vae, gen = VAE(config.vae), Generator(config.generator)
    save_checkpoint(tmp_path / "f32.safetensors", config, vae, gen, {"origin_std": 1.0, "direction_std": 1.0}, "diffusion")
    save_checkpoint(tmp_path / "bf16.safetensors", config, vae, gen, {"origin_std": 1.0, "direction_std": 1.0}, "diffusion",
                    storage_dtype=torch.bfloat16)
    small, big = (tmp_path / "bf16.safetensors").stat().st_size, (tmp_path / "f32.safetensors").stat().st_size
    assert small < 0.6 * big
    loaded = load_checkpoint(tmp_path / "bf16.safetensors")
    for name, t in gen.state_dict().items():
        got = loaded.generator.state_dict()[name]
        assert got.dtype == torch.float32
        assert torch.equal(got, t.to(torch.bfloat16).float())


def test_ship_writes_bf16_with_the_metadata_and_the_source_digest(tmp_path, capsys):
    import torch
    from explorer.cli import main
    from model.checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint
    from model.config import get_config
    from model.generator import Generator
    from model.vae import VAE
    config = get_config("tiny")
    torch.manual_seed(0)
    vae, gen = VAE(config.vae), Generator(config.generator)
    source, out = tmp_path / "long.safetensors", tmp_path / "shipped.safetensors"
    save_checkpoint(source, config, vae, gen, {"origin_std": 2.0, "direction_std": 1.0}, "long", extra={"step": "7"})
    assert main(["ship", str(source), "--out", str(out)]) == 0
    assert str(out) in capsys.readouterr().out
    vae_file = tmp_path / "shipped-vae.safetensors"  # the VAE goes beside it, linked
    assert not any(k.startswith("vae.") for k in read_safetensors(out)[0])
    assert all(k.startswith("vae.") for k in read_safetensors(vae_file)[0])
    shipped = load_checkpoint(out)
    assert shipped.stage == "long" and shipped.metadata["step"] == "7"
    assert shipped.metadata["source_sha256"] == checkpoint_sha256(source)
    assert shipped.camera_scaling == {"origin_std": 2.0, "direction_std": 1.0}
    assert out.stat().st_size + vae_file.stat().st_size < 0.6 * source.stat().st_size
    for name, t in vae.state_dict().items():
        assert torch.equal(shipped.vae.state_dict()[name], t.to(torch.bfloat16).float()), name
    first = checkpoint_sha256(out)  # shipping onto it again says what it replaced (a model of one's own, unsaid)
    assert main(["ship", str(source), "--out", str(out)]) == 0
    assert capsys.readouterr().out.strip().endswith(f"; replaced tiny (long), sha256 {first}")
    assert main(["ship", str(tmp_path / "missing.safetensors"), "--out", str(out)]) == 2
    assert "missing.safetensors" in capsys.readouterr().err and checkpoint_sha256(out)  # the earlier file stays
    single = tmp_path / "single.safetensors"
    assert main(["ship", str(source), "--out", str(single), "--single-file"]) == 0
    assert not (tmp_path / "single-vae.safetensors").exists() and "linked" not in load_checkpoint(single).metadata
    assert main(["ship", str(source), "--out", str(tmp_path / "x.pt")]) == 2 and "--out" in capsys.readouterr().err
    capsys.readouterr()
    odd = tmp_path / "two\nlines.safetensors"  # each file's line stays one line: the newline is shown as \n
    assert main(["ship", str(source), "--out", str(odd)]) == 0
    printed = capsys.readouterr().out.splitlines()
    assert len(printed) == 3 and all(line.startswith(str(tmp_path / "two\\nlines")) for line in printed), printed

    # What is shipped is never overwritten: the source, or a file it links to (shipping shipped.safetensors onto
    # shipped-vae.safetensors once replaced the VAE it loads from); nor is anything written when --out is a folder.
    before = {p.name: p.read_bytes() for p in tmp_path.iterdir()}
    (tmp_path / "folder.safetensors").mkdir()
    for args, words in (([str(source), "--out", str(source)], ["the checkpoint being shipped"]),
                        ([str(out), "--out", str(vae_file)], ["a file it links to"]),
                        ([str(out), "--out", str(tmp_path / "folder.safetensors")], ["is a folder"])):
        assert main(["ship", *args]) == 2
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and all(w in err for w in words), err
    assert {p.name: p.read_bytes() for p in tmp_path.iterdir() if p.is_file()} == before
    load_checkpoint(out)
    # nor is a checkpoint that play would refuse shipped
    odd = tmp_path / "odd.safetensors"
    save_checkpoint(odd, config, vae, gen, {"origin_std": 2.0}, "long")
    assert main(["ship", str(odd), "--out", str(tmp_path / "odd-shipped.safetensors")]) == 2
    assert "camera_scaling" in capsys.readouterr().err and not (tmp_path / "odd-shipped.safetensors").exists()


def test_a_linked_vae_file_loads_as_one_checkpoint_and_is_checked(saved, tmp_path):
    path, config, vae, generator = saved
    main_file, vae_file = tmp_path / "m.safetensors", tmp_path / "m-vae.safetensors"
    save_checkpoint(main_file, config, vae, generator, SCALING, "adversarial", linked={"vae": vae_file})
    loaded, whole = load_checkpoint(main_file, expect_config="tiny"), load_checkpoint(path)
    for a, b in ((loaded.vae, whole.vae), (loaded.generator, whole.generator)):
        assert all(torch.equal(t, b.state_dict()[k]) for k, t in a.state_dict().items())
    linked = json.loads(read_safetensors(main_file)[1]["linked"])
    assert linked == {"vae": {"file": "m-vae.safetensors", "sha256": checkpoint_sha256(vae_file)}}

    other = tmp_path / "other"  # the linked file replaced by another VAE: its sha256 no longer matches
    other.mkdir()
    save_checkpoint(other / "m.safetensors", config, build(config, seed=1)[0], generator, SCALING, "diffusion",
                    linked={"vae": other / "m-vae.safetensors"})
    vae_file.write_bytes((other / "m-vae.safetensors").read_bytes())
    assert "linked.vae.sha256" in refused(main_file)
    vae_file.unlink()
    assert "linked.vae.file: the linked file" in refused(main_file) and "does not exist" in refused(main_file)
    os.mkfifo(vae_file)  # it said "does not exist" of a pipe
    assert refused(main_file).endswith(f"the linked file {vae_file} is not a regular file")
    vae_file.unlink()
    bad = rewrite(other / "m.safetensors", tmp_path / "bad.safetensors",
                  edit_metadata=lambda m: m.update(linked="{not json"))
    assert "linked" in refused(bad)
    escape = rewrite(other / "m.safetensors", tmp_path / "escape.safetensors",
                     edit_metadata=lambda m: m.update(linked=json.dumps({"vae": {"file": "../m-vae.safetensors",
                                                                                 "sha256": "0"}})))
    assert "linked.vae" in refused(escape)
    stray = tmp_path / "stray-vae.safetensors"  # a linked file holding a generator tensor
    write_safetensors(stray, {"generator.head.linear.bias": torch.zeros(3)}, {})
    wrong = rewrite(other / "m.safetensors", tmp_path / "stray.safetensors", edit_metadata=lambda m: m.update(
        linked=json.dumps({"vae": {"file": stray.name, "sha256": checkpoint_sha256(stray)}})))
    with pytest.raises(InputError, match="generator.head.linear.bias"):
        load_checkpoint(wrong)


def test_ship_refuses_a_vae_stage_checkpoint_as_the_default(tmp_path, monkeypatch, capsys):
    # Its generator is untrained: shipped as the default, play would show noise and bench would time it.
    import torch
    from explorer.cli import main
    from model.checkpoint import save_checkpoint
    from model.config import get_config
    from model.generator import Generator
    from model.vae import VAE
    config = get_config("tiny")
    torch.manual_seed(0)
    source = tmp_path / "vae.safetensors"
    save_checkpoint(source, config, VAE(config.vae), Generator(config.generator),
                    {"origin_std": 1.0, "direction_std": 1.0}, "vae")
    default = tmp_path / "checkpoints" / "mini.safetensors"
    monkeypatch.setattr("model.checkpoint.default_checkpoint_path", lambda: default)
    default.parent.mkdir()
    for out in ([], ["--out", str(default)], ["--out", str(default.parent / ".." / "checkpoints" / default.name)]):
        assert main(["ship", str(source), *out]) == 2
        err = capsys.readouterr().err.strip()
        assert len(err.splitlines()) == 1 and "stage: is from the vae stage" in err and not default.exists(), err
    vae_file = default.with_name("mini-vae.safetensors")  # what the shipped model links to: any checkpoint written
    vae_file.write_bytes(b"the shipped VAE")               # there would break it (it would no longer load)
    for single in ([], ["--single-file"]):
        assert main(["ship", str(source), "--out", str(vae_file), *single]) == 2
        assert "would write over" in capsys.readouterr().err and vae_file.read_bytes() == b"the shipped VAE"
    assert main(["ship", str(source), "--out", str(tmp_path / "elsewhere.safetensors")]) == 0  # on purpose: a warning
    assert "warning" in capsys.readouterr().err and (tmp_path / "elsewhere.safetensors").exists()


def test_ship_replaces_a_linked_pair_together_or_not_at_all(tmp_path, monkeypatch, capsys):
    # The VAE file used to be renamed into place before the generator file was written: a full disk (or a Ctrl-C)
    # in between left the old generator pinning a VAE that had been replaced, and the shipped default unloadable.
    import torch
    from explorer.cli import main
    from model import checkpoint
    from model.checkpoint import checkpoint_sha256, load_checkpoint, save_checkpoint
    from model.generator import Generator
    from model.vae import VAE
    config = get_config("tiny")
    shipped = tmp_path / "mini.safetensors"
    for seed, name in ((0, "old"), (1, "new")):
        torch.manual_seed(seed)
        save_checkpoint(tmp_path / f"{name}.safetensors", config, VAE(config.vae), Generator(config.generator),
                        {"origin_std": 2.0, "direction_std": 1.0}, "long")
    assert main(["ship", str(tmp_path / "old.safetensors"), "--out", str(shipped)]) == 0
    before = {f.name: checkpoint_sha256(f) for f in tmp_path.glob("mini*")}
    write = checkpoint._write_temporary

    def disk_full_at_the_generator(path, tensors, metadata):
        if str(path) == str(shipped):
            raise OSError(28, "No space left on device", str(path))
        return write(path, tensors, metadata)
    monkeypatch.setattr(checkpoint, "_write_temporary", disk_full_at_the_generator)
    assert main(["ship", str(tmp_path / "new.safetensors"), "--out", str(shipped)]) == 2
    err = capsys.readouterr().err
    assert err.strip().endswith(f"{shipped}: No space left on device") and err.count("\n") == 1, err
    assert {f.name: checkpoint_sha256(f) for f in tmp_path.glob("mini*")} == before  # no temporaries either
    load_checkpoint(shipped)


def test_ship_does_not_write_its_vae_part_over_a_checkpoint_of_its_own(tmp_path, capsys):
    """`ship --out a.safetensors` writes a-vae.safetensors beside it: a whole checkpoint kept under that name was
    replaced without a word (an earlier ship's VAE part is replaced as before)."""
    import torch
    from explorer.cli import main
    from model.checkpoint import checkpoint_sha256, save_checkpoint
    from model.generator import Generator
    from model.vae import VAE
    config = get_config("tiny")
    torch.manual_seed(0)
    source = tmp_path / "long.safetensors"
    save_checkpoint(source, config, VAE(config.vae), Generator(config.generator),
                    {"origin_std": 2.0, "direction_std": 1.0}, "long")
    own = tmp_path / "a-vae.safetensors"
    assert main(["ship", str(source), "--out", str(own), "--single-file"]) == 0
    before = checkpoint_sha256(own)
    capsys.readouterr()
    assert main(["ship", str(source), "--out", str(tmp_path / "a.safetensors")]) == 2
    err = capsys.readouterr().err
    assert f"would overwrite {own}, which is not the VAE part" in err and err.count("\n") == 1, err
    assert checkpoint_sha256(own) == before and not (tmp_path / "a.safetensors").exists()
    own.unlink()
    for _ in range(2):  # shipped twice to the same place: its own part is replaced
        assert main(["ship", str(source), "--out", str(tmp_path / "a.safetensors")]) == 0
    load_checkpoint(tmp_path / "a.safetensors")
    # --out itself onto that VAE part (a.safetensors no longer loaded), or onto a training state (no resume)
    from model.training.state import FORMAT as STATE_FORMAT
    from model.checkpoint import write_safetensors
    state = tmp_path / "state.safetensors"
    write_safetensors(state, {"module.vae.x": torch.zeros(1)}, {"format": STATE_FORMAT})
    capsys.readouterr()
    for out, words in ((own, "is the linked VAE part of a checkpoint"), (state, "is a training stage's state")):
        before = checkpoint_sha256(out)
        assert main(["ship", str(source), "--out", str(out), "--single-file"]) == 2
        err = capsys.readouterr().err
        assert f"{out}: --out: {words}" in err and err.count("\n") == 1, err
        assert checkpoint_sha256(out) == before
    load_checkpoint(tmp_path / "a.safetensors")


def test_held_interrupts_act_after_the_block():
    import signal

    from explorer.interrupts import held_interrupts
    done = []
    with pytest.raises(KeyboardInterrupt):
        with held_interrupts():
            signal.raise_signal(signal.SIGINT)
            done.append("the rest of the block")
    assert done == ["the rest of the block"]
    assert signal.getsignal(signal.SIGINT) is signal.default_int_handler


def test_an_ignored_stop_signal_stays_ignored():
    # `nohup explorer train ...` ignores SIGHUP so that the training outlives its terminal: catching it there would
    # stop the training when the terminal closed.
    import signal

    from explorer.interrupts import handle_stop_signals, restore_handlers
    before = signal.signal(signal.SIGHUP, signal.SIG_IGN)
    try:
        previous = handle_stop_signals(lambda signum, frame: None)
        assert signal.getsignal(signal.SIGHUP) is signal.SIG_IGN and signal.SIGHUP not in previous
        assert signal.getsignal(signal.SIGTERM) is not previous[signal.SIGTERM]
        restore_handlers(previous)
        assert signal.getsignal(signal.SIGTERM) is previous[signal.SIGTERM]
    finally:
        signal.signal(signal.SIGHUP, before)


def test_mini_ships_under_30_mib_in_bf16():
    import torch
    from model.config import get_config
    from model.generator import Generator
    from model.vae import VAE
    config = get_config("mini")
    with torch.device("meta"):
        params = sum(p.numel() for m in (VAE(config.vae), Generator(config.generator)) for p in m.parameters())
    assert params * 2 < 30 * 2**20


def test_the_shipped_model_is_a_trained_mini_in_bf16_under_30_mib():
    import torch
    from model.checkpoint import load_checkpoint
    path = default_checkpoint_path()
    assert path.exists(), f"{path}: the default model must ship in the package"
    loaded = load_checkpoint(path, expect_config="mini")
    files = [path] + [path.parent / e["file"] for e in json.loads(loaded.metadata.get("linked", "{}")).values()]
    assert sum(f.stat().st_size for f in files) <= 30 * 2**20
    assert loaded.stage in ("consistency", "adversarial", "long")  # a one-step generator
    assert "source_sha256" in loaded.metadata  # written by `explorer ship`
    head = [t for name, t in loaded.generator.state_dict().items() if name.startswith("head.linear")]
    assert head and any(t.abs().sum() > 0 for t in head)  # the zero-initialised output layer has been trained
    assert all(torch.isfinite(t).all() for t in loaded.generator.state_dict().values())


def test_a_checkpoint_saved_for_flash_attention_runs_where_there_is_none(saved, tmp_path):
    # Its config's attention_backend "flash" loaded, then raised at the first step on a machine without flash_attn.
    path, config, _, generator = saved

    def flash(metadata):
        stored = json.loads(metadata["config"])
        stored["generator"]["attention_backend"] = "flash"
        metadata["config"] = json.dumps(stored)
    edited = rewrite(path, tmp_path / "flash.safetensors", edit_metadata=flash)
    for expect in (None, "tiny"):
        loaded = load_checkpoint(edited, expect_config=expect)
        assert loaded.config.generator.attention_backend == "auto"
        backends = {m.backend for m in loaded.generator.modules() if hasattr(m, "backend")}
        assert backends == {"auto"}, backends
        torch.testing.assert_close(loaded.generator.state_dict(), generator.state_dict())
