"""The model a training run starts from: the classifier of `config.arch`, with its label prompt embeddings."""

from __future__ import annotations

import torch

from vce_stream.errors import ConfigError, InputError

from train.config import TrainConfig


def load_text_embeddings(config: TrainConfig) -> torch.Tensor | None:
    """The label prompt embeddings: a safetensors file, the pretrained text tower, or None (random)."""
    model_cfg = config.model
    if model_cfg.text_embeddings:
        from safetensors import SafetensorError
        from safetensors.torch import load_file

        try:
            tensors = load_file(model_cfg.text_embeddings)
        except (FileNotFoundError, SafetensorError, OSError) as exc:
            raise InputError(f"{model_cfg.text_embeddings}: not a readable safetensors file ({exc})") from None
        if "text_embeddings" not in tensors:
            raise InputError(f"{model_cfg.text_embeddings}: no 'text_embeddings' tensor")
        return tensors["text_embeddings"].float()
    if model_cfg.pretrained:
        from vce_stream.model.backbone import locate_open_clip
        from vce_stream.model.text import encode_prompts
        from vce_stream.model.heads import label_prompts

        return encode_prompts(locate_open_clip(model_cfg.pretrained), label_prompts(config.labels))
    return None


def build_model(config: TrainConfig) -> torch.nn.Module:
    from vce_stream.model.classifier import build_classifier

    try:
        return build_classifier(config.arch, load_text_embeddings(config), config.model.pretrained, seed=config.seed)
    except ValueError as exc:
        raise ConfigError(f"model: {exc}") from None
