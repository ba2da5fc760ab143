"""Checkpoints: one .safetensors file per model (never pickle), written atomically, checked field by field on load.

Tensors are the modules' state dicts under a prefix per module (`vae.`, `generator.`, and whatever else training
stores, e.g. `discriminator.`). Metadata strings: `format` (FORMAT), `config` (the ModelConfig as JSON),
`camera_scaling` (JSON: the camera embedding's constants measured on the training data), `stage` (the training
stage that wrote it), plus any extra strings. Weights are stored in float32 (training) or bfloat16 (a shipped model:
half the size, and inference runs in bf16 anyway); loading gives float32 modules, the inference dtype is applied
after.

A module's tensors may live in a second file beside the checkpoint, named in the optional metadata `linked`
(JSON: {prefix: {"file": name, "sha256": hex}}). The shipped model keeps its VAE so (mini.safetensors +
mini-vae.safetensors): a new generator trained on the same VAE then adds only the generator's bytes to the
repository. The linked file's sha256 is checked on load, so the checkpoint file's own sha256 (what session logs
record) still names every weight.
"""
from __future__ import annotations

import copy
import json
import os
import re
import shutil
import struct
import sys
import tempfile
from dataclasses import dataclass, replace
from pathlib import Path

import torch
import torch.nn as nn
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from camera.errors import InputError, file_sha256, parse_json
from explorer.interrupts import held_interrupts
from model.attention import flash_available
from model.config import ModelConfig, get_config
from model.generator import Generator
from model.training.options import STAGES
from model.vae import VAE

FORMAT = "explorer-checkpoint/1"
RESERVED = ("format", "config", "camera_scaling", "stage")
LINKED = "linked"  # optional: modules whose tensors are in files beside the checkpoint (see the module docstring)
PART_FORMAT = "explorer-checkpoint-part/1"  # the `format` of such a file
STORAGE_DTYPES = (torch.float32, torch.bfloat16)
# Config fields whose new value only adds zero-initialised modules (so the grown model computes what the stored one
# did): a training stage may start from a checkpoint that predates them. {field: (stored, expected, new tensors)}
GROWABLE = {"generator.warp": (False, True, ("generator.backbone.warped_in.",)),
            "generator.warp_gate": (False, True, ("generator.gate.",))}


@dataclass
class LoadedCheckpoint:
    config: ModelConfig
    vae: VAE
    generator: Generator
    camera_scaling: dict
    stage: str
    metadata: dict[str, str]  # every metadata string as stored, extra keys included


def default_checkpoint_path() -> Path:
    """The shipped default model, inside the package: model/checkpoints/mini.safetensors."""
    return Path(__file__).resolve().parent / "checkpoints" / "mini.safetensors"


checkpoint_sha256 = file_sha256  # a checkpoint's pin (a linked file's, a session's model)


def warn_if_untrained(path, stage: str) -> None:
    """A vae-stage checkpoint loads and runs, and its frames of noise look like a bug of the client: said."""
    if stage == "vae":
        print(f"explorer: warning: {path} is from the vae stage: its generator is untrained (use a checkpoint from "
              "a later stage)", file=sys.stderr)


def stored_metadata(path) -> dict[str, str]:
    """The metadata of a readable safetensors file at `path` (its header alone is read), else {}."""
    try:
        with safe_open(path, framework="pt") as f:
            return f.metadata() or {}
    except (SafetensorError, OSError):
        return {}


def stored_config_name(path) -> str | None:
    """The config name in the metadata of a readable checkpoint at `path` (its header alone is read), else None."""
    try:
        config = json.loads(stored_metadata(path).get("config", "{}"))
    except ValueError:
        return None
    return config.get("name") if isinstance(config, dict) and isinstance(config.get("name"), str) else None


def stored_format(path) -> str | None:
    """The `format` in the metadata of a readable safetensors file at `path`, else None."""
    return stored_metadata(path).get("format")


def is_part(path) -> bool:
    """Whether `path` is a readable safetensors file holding a linked part of a checkpoint."""
    return stored_format(path) == PART_FORMAT


# ---------------------------------------------------------------------------------------------------------------
# Generic safetensors files (also for training's own files: discriminator, optimiser state)


def write_safetensors(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> None:
    """Writes a safetensors file byte-for-byte determined by its content, atomically: a crash or an error leaves
    either the old file or the new one, never half of one."""
    replace_all([(_write_temporary(path, tensors, metadata), Path(path))])


def _write_temporary(path, tensors: dict[str, torch.Tensor], metadata: dict[str, str]) -> Path:
    """The file `write_safetensors` writes, complete, in a temporary file beside `path`; the caller renames it.

    safetensors itself writes the metadata in hash order (it differs from run to run), so the library writes the
    tensors alone, and the file is assembled from a header with the metadata in sorted order plus the library's data
    section. An error (a full disk) removes the temporaries and names `path`.
    """
    if not all(isinstance(k, str) and isinstance(v, str) for k, v in metadata.items()):
        raise ValueError("safetensors metadata must map strings to strings")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    temporaries = []
    try:
        for _ in range(2):
            fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
            os.close(fd)
            temporaries.append(Path(tmp))
        data, final = temporaries
        save_file({k: t.detach().to("cpu").contiguous() for k, t in tensors.items()}, data)
        with open(data, "rb") as src, open(final, "wb") as dst:
            header = json.loads(src.read(struct.unpack("<Q", src.read(8))[0]))  # tensors sorted by the library
            blob = json.dumps({"__metadata__": dict(sorted(metadata.items())), **header},
                              separators=(",", ":"), ensure_ascii=False).encode()
            blob += b" " * (-len(blob) % 8)  # the data section stays 8-byte aligned, as the library keeps it
            dst.write(struct.pack("<Q", len(blob)) + blob)
            shutil.copyfileobj(src, dst)
            dst.flush()
            os.fsync(dst.fileno())
        os.chmod(final, 0o644)
        temporaries.remove(final)
        return final
    except (OSError, SafetensorError) as e:  # the library's errors and a short write name no file
        raise OSError(getattr(e, "errno", None), getattr(e, "strerror", None) or str(e), str(path)) from None
    finally:
        for tmp in temporaries:
            tmp.unlink(missing_ok=True)


def replace_all(renames: list[tuple[Path, Path]]) -> None:
    """Renames each complete temporary file over its destination, with Ctrl-C and SIGTERM held until the last is
    done: files that refer to each other (a checkpoint pins its linked VAE's sha256) change together or not at all.
    A rename within a folder does not need space, so only a hard kill between two renames could part them."""
    with held_interrupts():
        for tmp, path in renames:
            os.replace(tmp, path)


def check_checkpoint_file(path) -> Path:
    """`path`, if it is a regular file; else an InputError (reading a pipe waits for a writer for ever)."""
    path = Path(path)
    if not path.is_file():
        what = "no such checkpoint file" if not path.exists() else \
            "is a folder, not a checkpoint file" if path.is_dir() else "is not a regular file"
        raise InputError(path, None, what)
    return path


def read_safetensors(path, device="cpu", prefix: str | None = "") -> tuple[dict[str, torch.Tensor], dict[str, str]]:
    """The tensors whose names start with `prefix` (all by default; None: none) and the metadata of a safetensors
    file; the others are not read. InputError if it is missing, truncated or not one."""
    path = check_checkpoint_file(path)
    try:
        with safe_open(path, framework="pt", device=str(device)) as f:
            metadata = f.metadata() or {}
            tensors = {name: f.get_tensor(name) for name in f.keys()
                       if prefix is not None and name.startswith(prefix)}
    except (SafetensorError, OSError) as e:
        raise InputError(path, None, f"not a readable safetensors file (truncated or corrupt?): {e}") from None
    return tensors, metadata


# ---------------------------------------------------------------------------------------------------------------
# Model checkpoints


def save_checkpoint(path, config: ModelConfig, vae: VAE, generator: Generator, camera_scaling: dict, stage: str,
                    extra: dict[str, str] | None = None, modules: dict[str, nn.Module] | None = None,
                    storage_dtype: torch.dtype = torch.float32, linked: dict[str, Path] | None = None) -> None:
    """Saves the VAE, the generator and any further `modules` ({prefix: module}) with the metadata, atomically.
    The modules must be float32; storage_dtype=torch.bfloat16 halves the file (for a shipped model).
    linked: {prefix: file in the checkpoint's folder} to write those modules' tensors to instead (e.g. {"vae": ...})."""
    if storage_dtype not in STORAGE_DTYPES:
        raise ValueError(f"storage_dtype must be one of {STORAGE_DTYPES}, got {storage_dtype}")
    if vae.config != config.vae or generator.config != config.generator:
        raise ValueError("the modules were not built from this config (vae.config / generator.config differ)")
    extra = dict(extra or {})
    for key, value in extra.items():
        if key in RESERVED + (LINKED,) or not isinstance(value, str):
            raise ValueError(f"extra metadata {key!r}: must be a string under a key other than {RESERVED + (LINKED,)}")
    parts = {"vae": vae, "generator": generator, **(modules or {})}
    tensors = {}
    for prefix, module in parts.items():
        for name, t in module.state_dict().items():
            if t.is_floating_point():
                if t.dtype != torch.float32:
                    raise ValueError(f"{prefix}.{name} is {t.dtype}; save float32 modules (cast back first)")
                t = t.to(storage_dtype)
            tensors[f"{prefix}.{name}"] = t
    metadata = {"format": FORMAT, "config": config.to_json(), "stage": stage,
                "camera_scaling": json.dumps(camera_scaling, sort_keys=True), **extra}
    if linked:
        for prefix, file in linked.items():
            if prefix not in parts or Path(file).parent.resolve() != Path(path).parent.resolve():
                raise ValueError(f"linked {prefix!r}: must name a saved module and a file beside {path}")
    renames = []  # every file is written in full before any replaces its old version
    try:
        entries = {}
        for prefix, file in sorted((linked or {}).items()):
            part = {k: t for k, t in tensors.items() if k.startswith(prefix + ".")}
            renames.append((_write_temporary(file, part, {"format": PART_FORMAT, "part": prefix}), Path(file)))
            entries[prefix] = {"file": Path(file).name, "sha256": checkpoint_sha256(renames[-1][0])}
            tensors = {k: t for k, t in tensors.items() if k not in part}
        if linked:
            metadata[LINKED] = json.dumps(entries, sort_keys=True)
        renames.append((_write_temporary(path, tensors, metadata), Path(path)))
        replace_all(renames)
    finally:
        for tmp, _ in renames:
            tmp.unlink(missing_ok=True)


def load_checkpoint(path, expect_config: str | ModelConfig | None = None, device="cpu",
                    modules: dict[str, nn.Module] | None = None) -> LoadedCheckpoint:
    """Builds the VAE and the generator from the stored config and loads every tensor, after checking them all.

    expect_config: a config or its name ("mini"); the stored config must equal it in every field except GROWABLE ones,
    which build the expected model with the stored weights and the new modules at their (zero) initialisation.
    modules: further {prefix: module} to fill from the same file (training). Any problem is an InputError naming the
    file and the metadata key or tensor at fault. The modules come back in eval mode, in float32, on `device`.
    """
    path = Path(path)
    tensors, metadata = read_safetensors(path, device)
    if metadata.get("format") == PART_FORMAT:
        raise InputError(path, "format", f"this is the {metadata.get('part', 'linked')} part of a checkpoint; give "
                         "the checkpoint that links it (e.g. mini.safetensors beside mini-vae.safetensors)")
    if metadata.get("format") != FORMAT:
        found = repr(metadata["format"]) if "format" in metadata else "none (not an explorer checkpoint)"
        raise InputError(path, "format", f"expected {FORMAT!r}, found {found}")
    for key in RESERVED:
        if key not in metadata:
            raise InputError(path, key, "missing from the metadata")
    if metadata["stage"] not in STAGES:  # ship, play's warning and training's checks go by it
        raise InputError(path, "stage", f"must be one of {', '.join(STAGES)}, got {metadata['stage']!r}")
    config = ModelConfig.from_json(metadata["config"], source=str(path))
    if LINKED in metadata:
        tensors.update(_read_linked(path, metadata[LINKED], tensors, device))
    if config.generator.attention_backend == "flash" and not flash_available(device):
        # How attention is computed is the machine's business, not the model's: a checkpoint trained with flash_attn
        # on a GPU runs here on sdpa, the same sums ("flash" names a strict choice, which raised at the first step)
        config = replace(config, generator=replace(config.generator, attention_backend="auto"))
    new_tensors: tuple[str, ...] = ()
    if expect_config is not None:
        expected = get_config(expect_config) if isinstance(expect_config, str) else copy.deepcopy(expect_config)
        grown = _check_expected(path, config, expected)
        if grown:
            config = expected
            new_tensors = tuple(prefix for field in grown for prefix in GROWABLE[field][2])
    camera_scaling = parse_json(metadata["camera_scaling"], path, "camera_scaling")

    # The config is checked against the tensors on the meta device first: one edited to describe a far larger model
    # than the file holds would otherwise be allocated (tens of GiB) before any tensor was compared.
    _check_depth(path, config, tensors)
    try:
        with torch.device("meta"):
            shapes = {"vae": VAE(config.vae), "generator": Generator(config.generator)}
    except (RuntimeError, TypeError, ValueError, OverflowError) as error:
        raise InputError(path, "config", f"describes no model that can be built ({str(error).splitlines()[0]})") \
            from None
    _check_tensors(path, tensors, {**shapes, **(modules or {})}, new_tensors)
    with torch.device(device):
        vae, generator = VAE(config.vae), Generator(config.generator)
    parts = {"vae": vae, "generator": generator, **(modules or {})}
    for prefix, module in parts.items():
        module.load_state_dict({k[len(prefix) + 1:]: t for k, t in tensors.items() if k.startswith(prefix + ".")},
                               strict=not new_tensors)
        module.eval()
    return LoadedCheckpoint(config, vae, generator, camera_scaling, metadata["stage"], metadata)


def _read_linked(path: Path, text: str, own: dict[str, torch.Tensor], device) -> dict[str, torch.Tensor]:
    """The tensors of the files the checkpoint links, each checked against its recorded sha256 and prefix."""
    entries = parse_json(text, path, LINKED)
    if not isinstance(entries, dict):
        raise InputError(path, LINKED, "expected an object {prefix: {\"file\": ..., \"sha256\": ...}}")
    tensors = {}
    for prefix, entry in entries.items():
        field = f"{LINKED}.{prefix}"
        if not (isinstance(entry, dict) and isinstance(entry.get("file"), str) and isinstance(entry.get("sha256"), str)
                and Path(entry["file"]).name == entry["file"]):
            raise InputError(path, field, "expected {\"file\": a file name beside the checkpoint, \"sha256\": hex}")
        file = path.parent / entry["file"]
        if not file.is_file():
            what = "does not exist" if not file.exists() else "is a folder" if file.is_dir() else \
                "is not a regular file"
            raise InputError(path, f"{field}.file", f"the linked file {file} {what}")
        digest = checkpoint_sha256(file)
        if digest != entry["sha256"]:
            raise InputError(path, f"{field}.sha256", f"{file} has sha256 {digest}, expected {entry['sha256']} "
                             "(the linked file was replaced or damaged)")
        part, _ = read_safetensors(file, device)
        for name in sorted(part):
            if not name.startswith(prefix + ".") or name in own:
                why = "outside its prefix" if not name.startswith(prefix + ".") else "also in the checkpoint"
                raise InputError(file, name, f"a linked file's tensor {why} ({prefix!r})")
        tensors.update(part)
    return tensors


def _check_expected(path: Path, found: ModelConfig, expected: ModelConfig) -> list[str]:
    """The stored config must be the expected one: by name, then field by field (dotted names). Returns the
    GROWABLE fields in which it differs (the model to build grows from the stored one)."""
    if found.name != expected.name:
        raise InputError(path, "config.name", f"expected the {expected.name!r} config, found {found.name!r}")
    a, b = _flatten(expected.to_dict()), _flatten(found.to_dict())
    differ = [k for k in sorted(a.keys() | b.keys()) if a.get(k) != b.get(k)
              and not k.endswith("attention_backend")]  # how attention is computed, not what: the machine's choice
    grown = [k for k in differ if k in GROWABLE and GROWABLE[k][:2] == (b.get(k), a.get(k))]
    differ = [k for k in differ if k not in grown]
    if not differ:
        return grown
    k = differ[0]
    more = f" ({len(differ) - 1} more fields differ: {', '.join(differ[1:])})" if len(differ) > 1 else ""
    raise InputError(path, f"config.{k}", f"differs from the {expected.name!r} config: "
                     f"expected {a.get(k)!r}, found {b.get(k)!r}{more}")


def _check_depth(path: Path, config: ModelConfig, tensors: dict[str, torch.Tensor]) -> None:
    """The generator's depth against the blocks the file holds, before even an empty model is built: a depth of
    65536 takes a minute to build on the meta device."""
    blocks = {int(m.group(1)) for name in tensors if (m := re.match(r"generator\.backbone\.blocks\.(\d+)\.", name))}
    stored = max(blocks) + 1 if blocks else 0
    if config.generator.depth != stored:
        raise InputError(path, "config.generator.depth", f"{config.generator.depth}, but the file holds {stored} "
                         "transformer blocks")


def _flatten(d: dict, prefix: str = "") -> dict:
    out = {}
    for k, v in d.items():
        if isinstance(v, dict):
            out.update(_flatten(v, f"{prefix}{k}."))
        else:
            out[f"{prefix}{k}"] = list(v) if isinstance(v, tuple) else v
    return out


def _check_tensors(path: Path, tensors: dict[str, torch.Tensor], parts: dict[str, nn.Module],
                   new: tuple[str, ...] = ()) -> None:
    """Every expected tensor present with its shape and dtype, finite, and nothing else; names the first one at fault.
    Tensors whose names start with one of `new` may be missing (a grown model's new modules)."""
    expected = {f"{prefix}.{k}": t for prefix, m in parts.items() for k, t in m.state_dict().items()}
    missing = sorted(k for k in expected.keys() - tensors.keys() if not k.startswith(new))
    if missing:
        raise InputError(path, missing[0], f"missing tensor{_and_more(missing)}")
    unexpected = sorted(tensors.keys() - expected.keys())
    if unexpected:
        raise InputError(path, unexpected[0], f"unexpected tensor (not in the model){_and_more(unexpected)}")
    for name in sorted(expected.keys() & tensors.keys()):
        want, got = expected[name], tensors[name]
        if got.shape != want.shape:
            raise InputError(path, name, f"shape {tuple(got.shape)}, expected {tuple(want.shape)}")
        allowed = STORAGE_DTYPES if want.is_floating_point() else (want.dtype,)
        if got.dtype not in allowed:
            raise InputError(path, name, f"dtype {got.dtype}, expected {' or '.join(map(str, allowed))}")
        if got.is_floating_point() and not torch.isfinite(got).all():  # a diverged run: black frames, no error
            raise InputError(path, name, "holds NaN or infinite values")


def _and_more(names: list[str]) -> str:
    return f" (and {len(names) - 1} more)" if len(names) > 1 else ""
