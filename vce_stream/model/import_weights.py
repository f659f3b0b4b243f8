"""`vce-stream import-weights SRC --out DIR`: an open_clip pickle checkpoint -> a safetensors model directory.

BiomedCLIP's hub repository ships `open_clip_pytorch_model.bin`, a pickle, and vce-stream loads no pickle
(unpickling can run any code). This command reads it once with PyTorch's restricted unpickler
(`torch.load(weights_only=True)`: tensors and plain containers only; a pickle asking for any other
callable is refused before it runs) and writes

    DIR/
      open_clip_config.json         the source's open_clip config (model_cfg, preprocess_cfg)
      open_clip_model.safetensors   every tensor of the checkpoint
      text/                         the text model's config.json and tokenizer files, when found
      import.json                   where it came from: the source's sha256 and size, the output's sha256

which `locate_open_clip(DIR)`, `build_classifier(pretrained=DIR)` and `TextEncoder(DIR)` load offline.
SRC is a checkpoint file, a directory holding one (and `open_clip_config.json`), a hub cache folder
(`models--owner--name`, its `refs/main` snapshot) or `hf-hub:owner/name` (looked up in the local hub cache
only). Before anything is written the tensor names and shapes are checked against the image tower the
config describes (and the text tower, when its config is at hand). DIR is written beside itself and
renamed into place (vce_stream.atomic.atomic_directory); an existing DIR is replaced only with --force and
only when it is an earlier import (it holds import.json), never when it holds or lies inside SRC.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import click

from vce_stream import __version__
from vce_stream.atomic import atomic_directory, check_replaceable
from vce_stream.errors import InputError
from vce_stream.model import hub_cache
from vce_stream.model.backbone import read_open_clip_config
from vce_stream.model.text import (
    POSITION_IDS,
    TEXT_CONFIG_NAME,
    TEXT_DIR_NAME,
    TOKENIZER_FILES,
    check_text_dir,
    key_mismatch,
    text_tower_config,
)

IMPORT_RECORD = "import.json"
WEIGHTS_NAME = "open_clip_model.safetensors"
CONFIG_NAME = "open_clip_config.json"
# Pickle checkpoint names open_clip and the hub use, in order of preference.
PICKLE_NAMES = ("open_clip_pytorch_model.bin", "open_clip_model.bin", "pytorch_model.bin", "open_clip_model.pth")
PICKLE_SUFFIXES = (".bin", ".pth", ".pt")
DEFAULT_MAX_SIZE = 4 << 30  # BiomedCLIP's checkpoint is 784 MB
MAX_TEXT_FILE_BYTES = 64 << 20  # tokenizer.json of large vocabularies is a few MB
TOP_LEVEL_KEYS = ("logit_scale", "logit_bias")
_HASH_CHUNK = 1 << 20


@dataclass(frozen=True)
class ImportSource:
    """What to import: the pickle checkpoint, its open_clip config, the text model's folder (or None)."""

    label: str
    checkpoint: Path
    config: Path
    text_dir: Path | None
    text_root: Path | None  # the text files (or the links to them) must lie inside it
    text_origin: str
    protected: tuple[Path, ...]  # what DIR may not lie inside, equal or contain (the source's folder, files)


# --- finding the source ---------------------------------------------------------------------------


def resolve_source(src: str, config: Path | None = None, text_dir: Path | None = None) -> ImportSource:
    """Where the checkpoint, its config and the text model files of `src` are (nothing loaded yet)."""
    checkpoint: Path | None = None
    if src.startswith("hf-hub:"):
        repo_id = src.removeprefix("hf-hub:")
        repo = hub_cache.repo_folder(repo_id)
        if not repo.is_dir():
            raise InputError(
                f"{src}: not in the local hub cache ({repo} is missing); download it once with "
                f"`huggingface-cli download {repo_id}` or give the downloaded file"
            )
        folder, root = hub_cache.snapshot_folder(repo), repo
    else:
        path = Path(src)
        if not path.exists():
            raise InputError(f"{path}: no such checkpoint file or directory")
        if path.is_file():
            folder, checkpoint = path.parent, path
        elif hub_cache.is_repo_folder(path):
            folder = hub_cache.snapshot_folder(path)
        else:
            folder = path
        root = hub_cache.enclosing_repo(folder) or folder  # a snapshot's files link into its repo's blobs/
    if checkpoint is None:
        checkpoint = _find_pickle(folder, root)
    config_path = config if config is not None else hub_cache.confined_file(folder, CONFIG_NAME, root)
    if config_path is None or not config_path.is_file():
        where = config if config is not None else folder / CONFIG_NAME
        raise InputError(f"{where}: file not found (the open_clip config; give it with --config FILE)")
    text, text_root, origin = _find_text_dir(folder, root, config_path, text_dir)
    protected = [checkpoint, config_path] + ([] if Path(src).is_file() else [root]) + ([text] if text else [])
    return ImportSource(src, checkpoint, config_path, text, text_root, origin, tuple(p.resolve() for p in protected))


def _find_pickle(folder: Path, root: Path) -> Path:
    for name in PICKLE_NAMES:
        found = hub_cache.confined_file(folder, name, root)
        if found is not None:
            return found
    others = sorted(p.name for p in folder.iterdir() if p.suffix in PICKLE_SUFFIXES)
    if len(others) == 1:
        found = hub_cache.confined_file(folder, others[0], root)
        if found is not None:
            return found
    if others:
        raise InputError(f"{folder}: several checkpoints {others}; give the file itself")
    if any(folder.glob("*.safetensors")):
        raise InputError(f"{folder}: already a safetensors checkpoint; use the folder directly, no import needed")
    raise InputError(f"{folder}: no checkpoint (expected one of {list(PICKLE_NAMES)})")


def _find_text_dir(
    folder: Path, root: Path, config_path: Path, given: Path | None
) -> tuple[Path | None, Path | None, str]:
    """The text model folder, the folder its files must lie in, and where it came from: --text-dir (the
    user's choice, not confined), else SRC's `text/`, else the hub cache of text_cfg.hf_model_name."""
    if given is not None:
        check_text_dir(given)
        return given, Path(given.resolve().anchor), str(given)
    local = folder / TEXT_DIR_NAME
    if (local / TEXT_CONFIG_NAME).is_file() and local.resolve().is_relative_to(root.resolve()):
        check_text_dir(local)
        return local, root, str(local)
    text_cfg = read_open_clip_config(config_path)["model_cfg"].get("text_cfg")
    name = text_cfg.get("hf_model_name") if isinstance(text_cfg, dict) else None
    if isinstance(name, str) and re.match(r"^[\w.-]+/[\w.-]+$", name):
        found = hub_cache.cached_file(name, TEXT_CONFIG_NAME)
        if found is not None:
            check_text_dir(found.parent)
            return found.parent, hub_cache.repo_folder(name), f"hf-hub:{name} (local hub cache)"
    return None, None, ""


# --- reading the pickle ---------------------------------------------------------------------------


def read_pickle_checkpoint(path: Path, max_size: int = DEFAULT_MAX_SIZE) -> dict[str, Any]:
    """The checkpoint's tensors, read with PyTorch's restricted unpickler only (weights_only=True).

    A `{"state_dict": ...}` wrapper and a `module.` prefix (DataParallel) are removed, as open_clip does.
    """
    import pickle

    import torch

    size = path.stat().st_size
    if size > max_size:
        raise InputError(f"{path}: {size} bytes, more than the {max_size} allowed (raise it with --max-size)")
    try:
        loaded = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as exc:
        raise InputError(f"{path}: refused by PyTorch's restricted loader: {_unpickling_problem(exc)}") from None
    except (RuntimeError, EOFError, OSError, ValueError, ImportError) as exc:
        raise InputError(f"{path}: not a readable PyTorch checkpoint ({_first_line(exc)})") from None
    if isinstance(loaded, dict) and isinstance(loaded.get("state_dict"), dict):
        loaded = loaded["state_dict"]
    if not isinstance(loaded, dict) or not loaded:
        raise InputError(f"{path}: holds a {type(loaded).__name__}, not a state dict of tensors")
    bad = [str(k) for k, v in loaded.items() if not isinstance(k, str) or not isinstance(v, torch.Tensor)]
    if bad:
        raise InputError(f"{path}: entries that are not named tensors: {bad[:3]}")
    if all(key.startswith("module.") for key in loaded):
        loaded = {key.removeprefix("module."): value for key, value in loaded.items()}
    return loaded


def _unpickling_problem(exc: BaseException) -> str:
    match = re.search(r"Unsupported global: GLOBAL ([\w.]+)", str(exc))
    if match:
        return f"it calls {match.group(1)}, which a checkpoint of tensors never needs (not executed)"
    return _first_line(exc)


def _first_line(exc: BaseException) -> str:
    lines = str(exc).strip().splitlines()
    return lines[0][:300] if lines else type(exc).__name__


# --- checking against the architecture ------------------------------------------------------------


def check_state(state: dict[str, Any], model_cfg: dict[str, Any], text_dir: Path | None, where: str) -> list[str]:
    """InputError unless the tensors fit the towers `model_cfg` describes; returns what was checked."""
    import torch

    from vce_stream.model.backbone import OpenClipCheckpoint, VisionTower, arch_from_open_clip

    shapes = {key: tuple(t.shape) for key, t in state.items()}
    stray = sorted(k for k in shapes if not k.startswith(("visual.", "text.")) and k not in TOP_LEVEL_KEYS)
    if stray:
        raise InputError(f"{where}: tensors outside the image and text towers: {stray[:3]}: not an open_clip checkpoint")
    arch = arch_from_open_clip(OpenClipCheckpoint(where, model_cfg, {}, Path(where), None))
    with torch.device("meta"):
        visual = {k: tuple(t.shape) for k, t in VisionTower(arch).state_dict().items()}
    problem = key_mismatch(visual, {k.removeprefix("visual."): s for k, s in shapes.items() if k.startswith("visual.")})
    if problem:
        raise InputError(f"{where}: image tower tensors do not fit the config's {arch.timm_model}: {problem}")
    checked = [f"image tower ({arch.timm_model}, feature {arch.feature_dim})"]
    text = {k.removeprefix("text."): s for k, s in shapes.items() if k.startswith("text.")}
    if text_dir is not None and text:
        expected = _text_shapes(model_cfg, text_dir, where)
        if POSITION_IDS not in expected:
            text.pop(POSITION_IDS, None)
        problem = key_mismatch(expected, text)
        if problem:
            raise InputError(f"{where}: text tower tensors do not fit {text_dir / TEXT_CONFIG_NAME}: {problem}")
        checked.append("text tower")
    return checked


def _text_shapes(model_cfg: dict[str, Any], text_dir: Path, where: str) -> dict[str, tuple[int, ...]]:
    import torch
    from open_clip.hf_model import HFTextEncoder

    config = text_tower_config(model_cfg, where)
    try:
        with torch.device("meta"):
            tower = HFTextEncoder(str(text_dir), config.output_dim, pooler_type=config.pooler_type,
                                  proj_type=config.proj_type, pretrained=False)
    except (OSError, ValueError, KeyError, TypeError) as exc:
        raise InputError(f"{text_dir}: cannot build the text tower ({_first_line(exc)})") from None
    return {k: tuple(t.shape) for k, t in tower.state_dict().items()}


# --- writing --------------------------------------------------------------------------------------


def import_weights(
    src: str,
    out: str | os.PathLike[str],
    *,
    config: Path | None = None,
    text_dir: Path | None = None,
    force: bool = False,
    max_size: int = DEFAULT_MAX_SIZE,
) -> dict[str, Any]:
    """Convert `src` (see the module doc) into the safetensors model directory `out`; returns import.json."""
    source = resolve_source(src, config, text_dir)
    out_path = Path(out)
    _check_out(out_path, source, force)
    open_clip_config = read_open_clip_config(source.config)
    model_cfg = open_clip_config["model_cfg"]
    state = read_pickle_checkpoint(source.checkpoint, max_size)
    checked = check_state(state, model_cfg, source.text_dir, str(source.checkpoint))
    record = {
        "format": "vce-stream-import",
        "created_by": f"vce-stream {__version__}",
        "source": source.label,
        "source_file": source.checkpoint.name,
        "source_sha256": _sha256_file(source.checkpoint),
        "source_bytes": source.checkpoint.stat().st_size,
        "loader": "torch.load(weights_only=True)",
        "tensors": len(state),
        "parameters": int(sum(t.numel() for t in state.values())),
        "checked": checked,
        "text_dir": f"{TEXT_DIR_NAME}/" if source.text_dir is not None else None,
        "text_origin": source.text_origin or None,
    }
    with atomic_directory(out_path, marker=IMPORT_RECORD, what="an imported model directory") as staged:
        _fill(staged, state, open_clip_config, source, record)
        for path in staged.rglob("*"):
            if path.is_file():
                with open(path, "rb+") as handle:
                    os.fsync(handle.fileno())
    return record


def _check_out(out: Path, source: ImportSource, force: bool) -> None:
    target = out.resolve()
    for path in source.protected:
        if target.is_relative_to(path) or path.is_relative_to(target):
            raise InputError(f"{out}: overlaps the source {source.label}; write the import elsewhere")
    check_replaceable(out, IMPORT_RECORD, "an imported model directory")
    if out.exists() and any(out.iterdir()) and not force:
        raise InputError(f"{out}: exists and is not empty (replace it with --force)")


def _fill(tmp: Path, state: dict[str, Any], config: dict[str, Any], source: ImportSource, record: dict) -> None:
    from safetensors.torch import save_file

    seen: set[int] = set()
    tensors = {}
    for key, tensor in state.items():
        tensor = tensor.detach().contiguous()
        pointer = tensor.untyped_storage().data_ptr()
        tensors[key] = tensor.clone() if pointer in seen and tensor.numel() else tensor  # shared storage
        seen.add(pointer)
    save_file(tensors, str(tmp / WEIGHTS_NAME), metadata={"format": "pt"})
    record["weights_sha256"] = _sha256_file(tmp / WEIGHTS_NAME)
    (tmp / CONFIG_NAME).write_text(json.dumps(config, indent=2) + "\n", encoding="utf-8")
    if source.text_dir is not None:
        _copy_text_files(source.text_dir, source.text_root or source.text_dir, tmp / TEXT_DIR_NAME)
    (tmp / IMPORT_RECORD).write_text(json.dumps(record, indent=2) + "\n", encoding="utf-8")


def _copy_text_files(text_dir: Path, root: Path, dest: Path) -> None:
    """config.json and the tokenizer files only (never the text model's own weights)."""
    dest.mkdir()
    for name in (TEXT_CONFIG_NAME, *TOKENIZER_FILES):
        found = hub_cache.confined_file(text_dir, name, root)
        if found is None:
            continue
        if found.stat().st_size > MAX_TEXT_FILE_BYTES:
            raise InputError(f"{found}: larger than {MAX_TEXT_FILE_BYTES} bytes: not a tokenizer file")
        shutil.copyfile(found, dest / name)


def _sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        while chunk := handle.read(_HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def parse_size(text: str) -> int:
    """'4G', '800M', '512k' or a byte count -> bytes (binary units)."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([kKmMgGtT]?)i?[bB]?\s*", text)
    if not match:
        raise click.BadParameter(f"{text!r} is not a size such as 4G, 800M or 123456")
    scale = {"": 1, "k": 1 << 10, "m": 1 << 20, "g": 1 << 30, "t": 1 << 40}[match.group(2).lower()]
    value = int(float(match.group(1)) * scale)
    if value < 1:
        raise click.BadParameter("the size must be at least 1 byte")
    return value


# --- command --------------------------------------------------------------------------------------


@click.command("import-weights")
@click.argument("src")
@click.option("--out", "out", required=True, type=click.Path(path_type=Path),
              help="The model directory to write (safetensors, config, text/ folder, import.json).")
@click.option("--config", "config", type=click.Path(path_type=Path, dir_okay=False),
              help="open_clip_config.json, when it does not lie beside the checkpoint.")
@click.option("--text-dir", "text_dir", type=click.Path(path_type=Path, file_okay=False),
              help="The text model's config.json and tokenizer files (BiomedBERT's), copied into DIR/text/.")
@click.option("--force", is_flag=True, help="Replace an existing --out directory written by an earlier import.")
@click.option("--max-size", "max_size", default="4G", show_default=True,
              help="Refuse a checkpoint larger than this (bytes, or with a K/M/G suffix).")
def import_weights_command(src: str, out: Path, config: Path | None, text_dir: Path | None, force: bool,
                           max_size: str) -> None:
    """Convert an open_clip pickle checkpoint SRC into a safetensors model directory.

    SRC: open_clip_pytorch_model.bin, a directory holding it and open_clip_config.json, a hub cache
    folder (models--owner--name) or hf-hub:owner/name (read from the local hub cache, never downloaded).
    The pickle is read with PyTorch's restricted loader (tensors only; no code runs).
    """
    record = import_weights(src, out, config=config, text_dir=text_dir, force=force, max_size=parse_size(max_size))
    text = f"text tower files from {record['text_origin']}" if record["text_dir"] else (
        "no text model files found (give --text-dir for `search --text`)")
    click.echo(
        f"wrote {out}: {record['tensors']} tensors, {record['parameters'] / 1e6:.1f} M parameters "
        f"from {record['source_file']} (sha256 {record['source_sha256'][:16]}...); {text}"
    )


__all__ = ["ImportSource", "import_weights", "import_weights_command", "read_pickle_checkpoint", "resolve_source"]
