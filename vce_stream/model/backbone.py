"""The vision tower: a timm ViT trunk and a linear projection, in open_clip's `TimmModel` layout.

BiomedCLIP's image tower is open_clip's `TimmModel` around timm `vit_base_patch16_224`: the image
feature is the class token after the final LayerNorm, projected by Linear(768 -> 512, no bias)
(SPEC §7). `VisionTower` has the same parameter names (`trunk.*`, `head.proj.weight`), so the
`visual.*` tensors of an open_clip checkpoint load into it unchanged.

Pretrained weights come from an open_clip model directory (`open_clip_config.json` and a
`*.safetensors` checkpoint, as open_clip's `local-dir:` schema reads it) or the Hugging Face hub
(`hf-hub:` ids, for users with a network). Only the image tower is built here: BiomedCLIP's text
tower (HF BiomedBERT) reads its configuration from the hub, so text embeddings are computed once, by
`vce_stream.model.text.encode_prompts`, and stored in the bundle (offline when the directory carries the text model's files
in `text/`, see `vce_stream.model.text`). Pickle checkpoints (`.bin`, `.pth`) are refused here;
`vce-stream import-weights` converts them with PyTorch's restricted loader. `hf-hub:` ids are looked up
in the local hub cache first (and only there when HF_HUB_OFFLINE is set).
"""

from __future__ import annotations

import dataclasses
import json
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import timm
import torch
from torch import nn

from vce_stream.errors import InputError
from vce_stream.model.config import ArchConfig

HF_HUB_PREFIX = "hf-hub:"
LOCAL_DIR_PREFIX = "local-dir:"
OPEN_CLIP_CONFIG = "open_clip_config.json"
# open_clip's preferred checkpoint names, safetensors only (factory._find_checkpoint_in_dir).
SAFETENSORS_NAMES = ("open_clip_model.safetensors", "open_clip_pytorch_model.safetensors", "model.safetensors")


def timm_kwargs(arch: ArchConfig) -> dict[str, Any]:
    """Size overrides that make `arch.timm_model` the configured trunk, with no classifier."""
    return dict(
        pretrained=False,
        num_classes=0,
        global_pool="token",
        img_size=arch.img_size,
        patch_size=arch.patch_size,
        embed_dim=arch.width,
        depth=arch.depth,
        num_heads=arch.num_heads,
        mlp_ratio=arch.mlp_ratio,
    )


def build_trunk(arch: ArchConfig) -> nn.Module:
    """The timm ViT trunk with plain attention and random weights (nothing is downloaded)."""
    return timm.create_model(arch.timm_model, **timm_kwargs(arch))


class VisionTower(nn.Module):
    """Image -> feature: timm trunk (class token after the final norm), then Linear(width -> feature_dim)."""

    def __init__(self, arch: ArchConfig) -> None:
        super().__init__()
        self.trunk = build_trunk(arch)
        self.head = nn.Sequential(OrderedDict(proj=nn.Linear(arch.width, arch.feature_dim, bias=False)))

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return self.head(self.trunk(images))


# --- open_clip checkpoints ------------------------------------------------------------------------


@dataclass(frozen=True)
class OpenClipCheckpoint:
    """An open_clip model on disk: its config (model_cfg, preprocess_cfg) and safetensors weights."""

    source: str
    model_cfg: dict[str, Any]
    preprocess_cfg: dict[str, Any]
    weights: Path
    directory: Path | None  # the local directory, when the source is one


def locate_open_clip(source: str | Path) -> OpenClipCheckpoint:
    """Find config and safetensors weights of `source`: a directory (optionally `local-dir:`) or `hf-hub:` id."""
    text = str(source)
    if text.startswith(HF_HUB_PREFIX):
        return _locate_hub(text)
    directory = Path(text.removeprefix(LOCAL_DIR_PREFIX))
    if not directory.is_dir():
        raise InputError(f"{directory}: no such open_clip model directory")
    config_path = directory / OPEN_CLIP_CONFIG
    if not config_path.is_file():
        raise InputError(f"{config_path}: file not found (an open_clip model directory needs it)")
    config = read_open_clip_config(config_path)
    return OpenClipCheckpoint(
        source=text,
        model_cfg=config["model_cfg"],
        preprocess_cfg=config.get("preprocess_cfg", {}),
        weights=_find_safetensors(directory),
        directory=directory,
    )


# An open_clip config is a few kB; anything larger is not one (and is not read whole).
MAX_CONFIG_BYTES = 1 << 20


def read_open_clip_config(path: Path) -> dict[str, Any]:
    """An open_clip config (bounded size, JSON, a `model_cfg` mapping); anything else is an InputError."""
    try:
        if path.stat().st_size > MAX_CONFIG_BYTES:
            raise InputError(f"{path}: larger than {MAX_CONFIG_BYTES} bytes: not an open_clip config")
        config = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{path}: not a readable JSON file ({exc})") from None
    if not isinstance(config, dict) or not isinstance(config.get("model_cfg"), dict):
        raise InputError(f"{path}: no 'model_cfg' mapping: not an open_clip config")
    return config


def _find_safetensors(directory: Path) -> Path:
    for name in SAFETENSORS_NAMES:
        if (directory / name).is_file():
            return directory / name
    others = sorted(directory.glob("*.safetensors"))
    if len(others) == 1:
        return others[0]
    if others:
        names = [p.name for p in others]
        raise InputError(f"{directory}: several safetensors files {names}; name one of {SAFETENSORS_NAMES}")
    pickles = sorted(p.name for p in directory.iterdir() if p.suffix in (".bin", ".pth", ".pt"))
    hint = (
        f" (found pickle checkpoint(s) {pickles}: refused, they can run code when loaded; convert them with "
        f"`vce-stream import-weights {directory} --out NEW_DIR`)"
        if pickles
        else ""
    )
    raise InputError(f"{directory}: no safetensors checkpoint{hint}")


def _locate_hub(source: str) -> OpenClipCheckpoint:
    """An `hf-hub:` model from the local hub cache; downloaded only when not cached and not offline."""
    from vce_stream.model import hub_cache

    model_id = source.removeprefix(HF_HUB_PREFIX)
    config_path = hub_cache.cached_file(model_id, OPEN_CLIP_CONFIG)
    if config_path is None:
        if hub_cache.hub_offline():
            raise InputError(
                f"{source}: not in the local hub cache ({hub_cache.repo_folder(model_id)}) and HF_HUB_OFFLINE is set"
            )
        return _download_hub(source)  # pragma: no cover - needs a network
    snapshot = config_path.parent
    weights = next(
        (p for p in (hub_cache.confined_file(snapshot, n, snapshot.parent.parent) for n in SAFETENSORS_NAMES) if p),
        None,
    )
    if weights is None:
        raise InputError(
            f"{source}: the cached hub repository has no safetensors checkpoint, only pickle files, which "
            f"are refused; convert it once with `vce-stream import-weights {source} --out DIR` and use DIR"
        )
    config = read_open_clip_config(config_path)
    return OpenClipCheckpoint(source, config["model_cfg"], config.get("preprocess_cfg", {}), weights, None)


def _download_hub(source: str) -> OpenClipCheckpoint:  # pragma: no cover - needs a network
    from huggingface_hub import hf_hub_download
    from open_clip.pretrained import download_pretrained_from_hf

    model_id = source.removeprefix(HF_HUB_PREFIX)
    config = read_open_clip_config(Path(hf_hub_download(model_id, OPEN_CLIP_CONFIG)))
    weights = Path(download_pretrained_from_hf(model_id))  # prefers a safetensors alternative
    if weights.suffix != ".safetensors":
        raise InputError(
            f"{source}: the hub repository has no safetensors checkpoint; pickle files are refused; "
            f"convert it with `vce-stream import-weights {source} --out DIR` and use DIR"
        )
    return OpenClipCheckpoint(source, config["model_cfg"], config.get("preprocess_cfg", {}), weights, None)


def arch_from_open_clip(checkpoint: OpenClipCheckpoint, base: ArchConfig | None = None) -> ArchConfig:
    """`base` (default ArchConfig()) with the trunk and feature sizes of the checkpoint's image tower.

    Only timm image towers pooled by the class token with a linear projection (BiomedCLIP's) fit.
    """
    vision = checkpoint.model_cfg.get("vision_cfg", {})
    name = vision.get("timm_model_name")
    where = checkpoint.source
    if not name:
        raise InputError(f"{where}: image tower is not a timm model (no vision_cfg.timm_model_name)")
    if vision.get("timm_pool", "") not in ("", "token") or vision.get("timm_proj", "linear") != "linear":
        raise InputError(f"{where}: image tower must pool the class token with a linear projection")
    if vision.get("timm_proj_bias", False):
        raise InputError(f"{where}: image tower projection has a bias; BiomedCLIP's has none")
    with torch.device("meta"):
        trunk = timm.create_model(name, pretrained=False, num_classes=0)
    attn = trunk.blocks[0].attn
    image_size = vision.get("image_size", trunk.patch_embed.img_size[0])
    return dataclasses.replace(
        base or ArchConfig(),
        timm_model=name,
        img_size=int(image_size if isinstance(image_size, int) else image_size[0]),
        patch_size=int(trunk.patch_embed.patch_size[0]),
        width=int(trunk.embed_dim),
        depth=len(trunk.blocks),
        num_heads=int(attn.num_heads),
        mlp_ratio=trunk.blocks[0].mlp.fc1.out_features / trunk.embed_dim,
        feature_dim=int(checkpoint.model_cfg["embed_dim"]),
    )


def read_open_clip_state(checkpoint: OpenClipCheckpoint) -> dict[str, torch.Tensor]:
    """The checkpoint's tensors (safetensors; never pickle)."""
    from safetensors import SafetensorError
    from safetensors.torch import load_file

    try:
        return load_file(str(checkpoint.weights))
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{checkpoint.weights}: cannot read safetensors ({exc})") from None


@torch.no_grad()
def load_visual_weights(tower: VisionTower, state: dict[str, torch.Tensor], where: str) -> torch.Tensor | None:
    """Load the `visual.*` tensors of an open_clip state dict into a plain-attention `tower` (strict).

    Returns the checkpoint's `logit_scale` (a 0-d tensor) when it has one.
    """
    visual = {k.removeprefix("visual."): v for k, v in state.items() if k.startswith("visual.")}
    if not visual:
        raise InputError(f"{where}: no 'visual.*' tensors: not an open_clip checkpoint")
    result = tower.load_state_dict(visual, strict=False)
    if result.missing_keys or result.unexpected_keys:
        raise InputError(
            f"{where}: image tower weights do not fit the architecture "
            f"(missing {result.missing_keys[:5]}, unexpected {result.unexpected_keys[:5]})"
        )
    scale = state.get("logit_scale")
    return None if scale is None else scale.detach().reshape(())
