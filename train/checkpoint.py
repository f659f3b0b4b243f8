"""Training checkpoints: tensors in safetensors, everything else in a JSON side file; never pickle.

    WORK_DIR/
      checkpoint.json                 the commit point: names the tensor file, holds counters,
                                      optimiser hyper-parameters, scheduler and scaler state, history
      checkpoint-<global step>.safetensors   model.*, ema.*, optim.<param>.<name> tensors

The tensor file is written first under a new name, then the JSON (atomically) that names it, then the
previous tensor file is removed: a kill at any moment leaves a complete checkpoint.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from vce_stream.atomic import atomic_write_bytes, atomic_write_text
from vce_stream.errors import InputError

FORMAT = "vce-stream-train-checkpoint/1"
JSON_NAME = "checkpoint.json"


@dataclass
class TrainState:
    """Where a run is: epoch and step inside it (the sampler's whole state), counters, history."""

    epoch: int = 0
    step_in_epoch: int = 0
    global_step: int = 0
    ema_updates: int = 0
    skipped_steps: int = 0
    epoch_totals: dict[str, float] = field(default_factory=dict)  # sums over the current epoch's steps
    history: list[dict[str, Any]] = field(default_factory=list)
    best: dict[str, Any] = field(default_factory=dict)  # epoch, metric, value


def optimizer_to_parts(state: dict[str, Any]) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split an optimiser state_dict into tensors (`optim.<param>.<name>`) and JSON-able rest."""
    tensors: dict[str, torch.Tensor] = {}
    scalars: dict[str, dict[str, Any]] = {}
    for param_id, entries in state["state"].items():
        for name, value in entries.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optim.{param_id}.{name}"] = value
            else:
                scalars.setdefault(str(param_id), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def optimizer_from_parts(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> dict[str, Any]:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optim."):
            _, param_id, name = key.split(".", 2)
            state.setdefault(int(param_id), {})[name] = value
    for param_id, entries in meta.get("scalars", {}).items():
        state.setdefault(int(param_id), {}).update(entries)
    return {"state": state, "param_groups": meta["param_groups"]}


def save_checkpoint(
    work_dir: Path,
    model: torch.nn.Module,
    ema_state: dict[str, torch.Tensor],
    optimizer: torch.optim.Optimizer,
    scheduler: Any,
    scaler_state: dict[str, Any] | None,
    state: TrainState,
    config: dict[str, Any],
) -> Path:
    """Write a checkpoint of the run as it is after `state.global_step` steps; return the JSON path."""
    from safetensors.torch import save as save_safetensors

    work_dir.mkdir(parents=True, exist_ok=True)
    optim_tensors, optim_meta = optimizer_to_parts(optimizer.state_dict())
    tensors = {f"model.{k}": v for k, v in model.state_dict().items()}
    tensors.update({f"ema.{k}": v for k, v in ema_state.items()})
    tensors.update(optim_tensors)
    tensors = {k: v.detach().to("cpu").contiguous().clone() for k, v in tensors.items()}
    name = f"checkpoint-{state.global_step:09d}.safetensors"
    atomic_write_bytes(work_dir / name, save_safetensors(tensors))
    previous = read_checkpoint_meta(work_dir) if (work_dir / JSON_NAME).is_file() else None
    meta = {
        "format": FORMAT,
        "tensors": name,
        "state": {k: getattr(state, k) for k in TrainState.__dataclass_fields__},
        "optimizer": optim_meta,
        "scheduler": scheduler.state_dict(),
        "scaler": scaler_state,
        "config": config,
    }
    path = work_dir / JSON_NAME
    atomic_write_text(path, json.dumps(meta, indent=1, default=_json_default) + "\n")
    if previous is not None and previous["tensors"] != name:
        (work_dir / previous["tensors"]).unlink(missing_ok=True)
    return path


def _json_default(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    if hasattr(value, "item"):
        return value.item()
    raise TypeError(f"cannot store {type(value).__name__} in a checkpoint")


def has_checkpoint(work_dir: Path) -> bool:
    return (work_dir / JSON_NAME).is_file()


def read_checkpoint_meta(work_dir: Path) -> dict[str, Any]:
    path = work_dir / JSON_NAME
    try:
        meta = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise InputError(f"{path}: no checkpoint to resume from") from None
    except (OSError, json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise InputError(f"{path}: not a readable checkpoint ({exc})") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise InputError(f"{path}: not a vce-stream training checkpoint (expected format {FORMAT})")
    name = meta.get("tensors", "")
    if not isinstance(name, str) or Path(name).name != name or not name.endswith(".safetensors"):
        raise InputError(f"{path}: tensors must name a .safetensors file inside {work_dir}")
    return meta


def load_checkpoint(work_dir: Path) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """(meta, tensors) of the checkpoint in `work_dir`; InputError naming the file if unusable."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    meta = read_checkpoint_meta(work_dir)
    tensor_path = work_dir / meta["tensors"]
    try:
        tensors = load_file(str(tensor_path))
    except FileNotFoundError:
        raise InputError(f"{tensor_path}: file not found (named by {JSON_NAME})") from None
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{tensor_path}: not a readable safetensors file ({exc})") from None
    return meta, tensors


def split_tensors(tensors: dict[str, torch.Tensor], prefix: str) -> dict[str, torch.Tensor]:
    """The tensors under `prefix.` with the prefix removed."""
    cut = len(prefix) + 1
    return {k[cut:]: v for k, v in tensors.items() if k.startswith(prefix + ".")}


def train_state_from(meta: dict[str, Any]) -> TrainState:
    return TrainState(**meta["state"])
