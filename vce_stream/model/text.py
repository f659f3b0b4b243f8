"""The text tower, offline: arbitrary text -> L2-normalised embeddings in the image-feature space.

BiomedCLIP's text tower is open_clip's `HFTextEncoder`: a Hugging Face BERT (BiomedBERT), the class
token of its last hidden state, an MLP projection 768 -> 640 -> 512 (SPEC §7). open_clip builds it from
the BERT's `config.json` and tokenizer on the hub, even when the checkpoint is local. Here it is built
from a local folder instead:

    MODEL_DIR/                        an open_clip model directory (`vce-stream import-weights` writes one)
      open_clip_config.json           model_cfg.text_cfg: hf_proj_type, hf_pooler_type, context_length
      open_clip_model.safetensors     the `text.*` tensors (only these are read)
      text/                           the BERT's config.json and tokenizer files (no weights)

The very same open_clip classes run (`HFTextEncoder`, `HFTokenizer`), so the embeddings are the ones
open_clip computes. Nothing is loaded until the first `encode_texts`; `transformers` (the `train`
extra) is imported only then.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch

from vce_stream.model.backbone import LOCAL_DIR_PREFIX, OpenClipCheckpoint, locate_open_clip
from vce_stream.errors import InputError

TEXT_DIR_NAME = "text"
TEXT_CONFIG_NAME = "config.json"
# Files a tokenizer may need; one of VOCAB_FILES must be present.
VOCAB_FILES = ("tokenizer.json", "vocab.txt", "vocab.json", "spiece.model", "sentencepiece.bpe.model")
TOKENIZER_FILES = ("tokenizer_config.json", "special_tokens_map.json", "added_tokens.json", "merges.txt", *VOCAB_FILES)
# The folder name under which a model bundle may carry its text model (an import-weights directory).
BUNDLE_TEXT_MODEL_DIR = "text_model"
MAX_CONTEXT_LENGTH = 4096
MAX_TEXTS = 100_000
POSITION_IDS = "transformer.embeddings.position_ids"  # a buffer older transformers saved; newer ones do not
_BATCH = 64


@dataclass(frozen=True)
class TextTowerConfig:
    """The text tower's settings from `model_cfg` of an open_clip config (`text_cfg.hf_*` keys)."""

    output_dim: int
    context_length: int
    proj_type: str | None
    pooler_type: str | None
    tokenizer_mode: str | None = None
    tokenizer_kwargs: dict[str, Any] = field(default_factory=dict)


def text_tower_config(model_cfg: dict[str, Any], where: str) -> TextTowerConfig:
    """The HF text tower settings of `model_cfg`; InputError if the text tower is not a Hugging Face model."""
    text_cfg = model_cfg.get("text_cfg")
    if not isinstance(text_cfg, dict) or not text_cfg.get("hf_model_name"):
        raise InputError(f"{where}: the text tower is not a Hugging Face model (no text_cfg.hf_model_name)")
    dim, context = model_cfg.get("embed_dim"), text_cfg.get("context_length", 77)
    if not isinstance(dim, int) or dim < 1:
        raise InputError(f"{where}: model_cfg.embed_dim must be a positive integer, got {dim!r}")
    if not isinstance(context, int) or not 2 <= context <= MAX_CONTEXT_LENGTH:
        raise InputError(f"{where}: text_cfg.context_length must be an integer in [2, {MAX_CONTEXT_LENGTH}]")
    kwargs = text_cfg.get("tokenizer_kwargs", {})
    if not isinstance(kwargs, dict):
        raise InputError(f"{where}: text_cfg.tokenizer_kwargs must be a mapping")
    return TextTowerConfig(
        output_dim=dim,
        context_length=context,
        proj_type=text_cfg.get("hf_proj_type"),
        pooler_type=text_cfg.get("hf_pooler_type"),
        tokenizer_mode=text_cfg.get("tokenizer_mode"),
        tokenizer_kwargs=dict(kwargs),
    )


def check_text_dir(text_dir: Path) -> None:
    """InputError unless `text_dir` holds a readable BERT-style config.json and a tokenizer vocabulary."""
    if not text_dir.is_dir():
        raise InputError(f"{text_dir}: no such text model folder (it holds the text model's config.json and tokenizer)")
    config = text_dir / TEXT_CONFIG_NAME
    if not config.is_file():
        raise InputError(f"{config}: file not found (the text tower is built from it)")
    try:
        data = json.loads(config.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise InputError(f"{config}: not a readable JSON file ({exc})") from None
    if not isinstance(data, dict) or not isinstance(data.get("model_type"), str):
        raise InputError(f"{config}: no 'model_type': not a Hugging Face model config")
    if not any((text_dir / name).is_file() for name in VOCAB_FILES):
        raise InputError(f"{text_dir}: no tokenizer vocabulary (expected one of {list(VOCAB_FILES)})")


def check_texts(texts: list[str]) -> list[str]:
    """The texts, checked: a non-empty list of non-blank strings (each problem one InputError)."""
    if isinstance(texts, str):
        raise InputError("texts must be a list of strings, not one string")
    texts = list(texts)
    if not texts:
        raise InputError("no text given: nothing to encode")
    if len(texts) > MAX_TEXTS:
        raise InputError(f"{len(texts)} texts: at most {MAX_TEXTS} at once")
    for i, text in enumerate(texts):
        if not isinstance(text, str):
            raise InputError(f"text {i} is a {type(text).__name__}, not a string")
        if not text.strip():
            raise InputError(f"text {i} is empty: give some words to search for")
    return texts


class TextEncoder:
    """texts -> (n, D) float32, L2-normalised, from an open_clip model directory's HF text tower.

    model_dir: an open_clip model directory (config + safetensors), e.g. `vce-stream import-weights`'s.
    text_dir: the text model's config.json and tokenizer; default `model_dir/text`.
    Construction checks the files (cheap); the model is built on the first `encode_texts`.
    """

    def __init__(self, model_dir: str | Path, text_dir: str | Path | None = None, *, device: str = "cpu") -> None:
        self.checkpoint = locate_open_clip(Path(model_dir))
        self.config = text_tower_config(self.checkpoint.model_cfg, str(self.checkpoint.directory))
        self.text_dir = Path(text_dir) if text_dir is not None else Path(model_dir) / TEXT_DIR_NAME
        check_text_dir(self.text_dir)
        self.device = device
        self._model: Any = None
        self._tokenizer: Any = None

    @property
    def feature_dim(self) -> int:
        return self.config.output_dim

    @property
    def context_length(self) -> int:
        return self.config.context_length

    def tokenize(self, texts: list[str]) -> Any:
        """Token ids (n, context_length), truncated and padded to the context length (open_clip's HFTokenizer)."""
        texts = check_texts(texts)
        if self._tokenizer is None:
            self._tokenizer = self._build_tokenizer()
        return self._tokenizer(texts)

    def encode_texts(self, texts: list[str]) -> np.ndarray:
        """(len(texts), feature_dim) float32, each row of unit length; same texts, same rows."""
        import torch

        tokens = self.tokenize(texts)
        if self._model is None:
            self._model = self._build_model()
        rows = []
        with torch.inference_mode():
            for start in range(0, len(tokens), _BATCH):
                features = self._model(tokens[start : start + _BATCH].to(self.device)).float()
                rows.append(torch.nn.functional.normalize(features, dim=-1).cpu())
        return torch.cat(rows).numpy()

    # --- building ---------------------------------------------------------------------------------

    def _build_tokenizer(self) -> Any:
        _require_transformers()
        from open_clip.tokenizer import HFTokenizer

        try:
            return HFTokenizer(
                str(self.text_dir),
                context_length=self.context_length,
                tokenizer_mode=self.config.tokenizer_mode,
                local_files_only=True,
                **self.config.tokenizer_kwargs,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{self.text_dir}: cannot build the tokenizer ({_first_line(exc)})") from None

    def _build_model(self) -> Any:
        _require_transformers()
        from open_clip.hf_model import HFTextEncoder

        try:
            model = HFTextEncoder(
                str(self.text_dir),
                output_dim=self.config.output_dim,
                pooler_type=self.config.pooler_type,
                proj_type=self.config.proj_type,
                pretrained=False,
            )
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise InputError(f"{self.text_dir}: cannot build the text tower ({_first_line(exc)})") from None
        load_text_weights(model, read_text_state(self.checkpoint.weights), str(self.checkpoint.weights))
        return model.to(self.device).eval()


def read_text_state(weights: Path) -> dict[str, Any]:
    """The `text.*` tensors of a safetensors checkpoint, prefix removed (the image tower is not read)."""
    from safetensors import SafetensorError, safe_open

    try:
        with safe_open(str(weights), framework="pt") as handle:
            state = {key.removeprefix("text."): handle.get_tensor(key) for key in handle.keys() if key.startswith("text.")}
    except (SafetensorError, OSError) as exc:
        raise InputError(f"{weights}: not a readable safetensors file ({exc})") from None
    if not state:
        raise InputError(f"{weights}: no 'text.*' tensors: the checkpoint carries no text tower")
    return state


def load_text_weights(model: Any, state: dict[str, Any], where: str) -> None:
    """Load `state` into `model` strictly (an old `position_ids` buffer is dropped, as open_clip does)."""
    state = dict(state)
    if POSITION_IDS in state and POSITION_IDS not in model.state_dict():
        del state[POSITION_IDS]
    expected = {key: tuple(t.shape) for key, t in model.state_dict().items()}
    given = {key: tuple(t.shape) for key, t in state.items()}
    problem = key_mismatch(expected, given)
    if problem:
        raise InputError(f"{where}: text tower weights do not fit the text model's config: {problem}")
    model.load_state_dict(state, strict=True)


def key_mismatch(expected: dict[str, tuple[int, ...]], given: dict[str, tuple[int, ...]]) -> str:
    """'' when the names and shapes agree, else a short description (first keys of each kind)."""
    missing = sorted(set(expected) - set(given))
    unexpected = sorted(set(given) - set(expected))
    wrong = sorted(k for k in set(expected) & set(given) if expected[k] != given[k])
    kinds = (("missing", missing), ("unexpected", unexpected), ("wrong shape", wrong))
    return "; ".join(f"{label} {keys[:3]}{' ...' if len(keys) > 3 else ''}" for label, keys in kinds if keys)


def open_text_encoder(bundle_dir: str | Path, feature_dim: int, text_model: str | Path | None = None) -> TextEncoder:
    """The text encoder `search --text` uses for the bundle at `bundle_dir`.

    text_model: an open_clip model directory with a `text/` folder (`vce-stream import-weights` output);
    default: the bundle's own `text_model/` folder, which must lie inside the bundle (a link out of it is
    refused). Its feature size must equal the bundle's image-feature size `feature_dim`.
    """
    bundle = Path(bundle_dir)
    if text_model is None:
        candidate = bundle / BUNDLE_TEXT_MODEL_DIR
        if not candidate.is_dir():
            raise InputError(
                f"{bundle}: the bundle carries no text model ({BUNDLE_TEXT_MODEL_DIR}/); give --text-model DIR "
                f"(an open_clip model directory written by `vce-stream import-weights`)"
            )
        if not candidate.resolve().is_relative_to(bundle.resolve()):
            raise InputError(f"{candidate}: leads outside the bundle (refused)")
        text_model = candidate
    encoder = TextEncoder(text_model)
    if encoder.feature_dim != feature_dim:
        raise InputError(
            f"{text_model}: text features have {encoder.feature_dim} dimensions but the bundle's image "
            f"features have {feature_dim}: not the model the bundle was built from"
        )
    return encoder


def _require_transformers() -> None:
    import importlib.util

    if importlib.util.find_spec("transformers") is None:
        raise InputError("the text tower needs `transformers`: pip install 'vce-stream[train]'")


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return text[0] if text else type(exc).__name__


@torch.no_grad()
def encode_prompts(checkpoint: OpenClipCheckpoint, prompts: list[str]) -> torch.Tensor:
    """L2-normalised text embeddings (len(prompts), feature_dim) from the checkpoint's text tower.

    Builds the whole open_clip model and its tokenizer. For a model whose text tower is a Hugging Face
    model (BiomedCLIP's BiomedBERT) this needs `transformers` and the text model's config from the hub
    or the local HF cache: run it once, where that is available, when creating a bundle. A local
    directory with the text model's files in `text/` (`vce-stream import-weights`) needs no hub.
    """
    if checkpoint.directory is not None:
        if (checkpoint.directory / TEXT_DIR_NAME / TEXT_CONFIG_NAME).is_file():
            return torch.from_numpy(TextEncoder(checkpoint.directory).encode_texts(prompts))
    import open_clip

    name = checkpoint.source if checkpoint.directory is None else f"{LOCAL_DIR_PREFIX}{checkpoint.directory}"
    model = open_clip.create_model(name, device="cpu")
    tokenizer = open_clip.get_tokenizer(name)
    model.eval()
    return model.encode_text(tokenizer(prompts), normalize=True).float()
