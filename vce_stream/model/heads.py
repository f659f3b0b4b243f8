"""Label heads on the image feature (SPEC §9): excitation + linear classifier, and contrastive logits.

The contrastive path compares the normalised image feature with frozen text embeddings of one prompt
per label. The embeddings are a buffer: computed once (training or bundle creation), saved with the
weights, so inference never needs the text tower or a tokenizer.
"""

from __future__ import annotations

import re

from collections.abc import Sequence
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import nn

# The paper's prompt (SPEC §9).
PROMPT_TEMPLATE = "a video capsule endoscopy image showing {label}"


def label_prompts(labels: tuple[str, ...] | list[str], template: str = PROMPT_TEMPLATE) -> list[str]:
    """One text prompt per label."""
    return [template.format(label=label) for label in labels]


def _names(prompt: str, label: str) -> bool:
    """Whether `prompt` mentions `label` as a whole phrase (case-insensitive; "z-line" is one word)."""
    return re.search(rf"(?<![\w-]){re.escape(label)}(?![\w-])", prompt, re.IGNORECASE) is not None


def prompt_mismatch(labels: Sequence[str], prompts: Sequence[str]) -> str | None:
    """Why `prompts` do not belong to `labels` (one per label, in the same order), or None if they do.

    The text embeddings stored beside the classifier are the encoded prompts, so a label list edited
    without its prompts (two labels swapped) would silently report one finding under another's name.
    Each prompt must name its own label (as the template does); a prompt may name others too.
    """
    if len(prompts) != len(labels):
        return f"{len(prompts)} prompts for {len(labels)} labels"
    for i, (label, prompt) in enumerate(zip(labels, prompts)):
        if not _names(prompt, label):
            named = [other for other in labels if other != label and _names(prompt, other)]
            hint = f" but names {named[0]!r} (labels and prompts out of step)" if named else ""
            return f"prompt {i} {prompt!r} does not name its label {label!r}{hint}"
    return None


def random_text_embeddings(num_labels: int, dim: int, seed: int = 0) -> torch.Tensor:
    """Seeded random unit vectors (num_labels, dim): stand-in text embeddings for random models."""
    generator = torch.Generator().manual_seed(seed)
    return F.normalize(torch.randn(num_labels, dim, generator=generator), dim=-1)


class ClassifierOutput(NamedTuple):
    """Both heads' outputs, (B, L) each: classifier logits (for probabilities) and contrastive logits."""

    logits: torch.Tensor
    contrastive_logits: torch.Tensor


class ExcitationBlock(nn.Module):
    """Squeeze-and-excitation on a feature vector: x * sigmoid(W2 relu(W1 x)), then BatchNorm1d."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.fc1 = nn.Linear(dim, hidden)
        self.fc2 = nn.Linear(hidden, dim)
        self.bn = nn.BatchNorm1d(dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.fc2(F.relu(self.fc1(x))))
        return self.bn(x * gate)


class LabelHeads(nn.Module):
    """feature (B, D) -> ClassifierOutput.

    logits = Linear(dropout(excitation(feature))); contrastive = exp(tau) * normalise(feature) . text^T
    with exp(tau) clamped to at most exp(logit_scale_max).
    """

    def __init__(
        self,
        feature_dim: int,
        num_labels: int,
        *,
        se_hidden: int,
        dropout: float,
        text_embeddings: torch.Tensor,
        logit_scale_init: float,
        logit_scale_max: float,
    ) -> None:
        super().__init__()
        if tuple(text_embeddings.shape) != (num_labels, feature_dim):
            raise ValueError(
                f"text embeddings have shape {tuple(text_embeddings.shape)}, expected ({num_labels}, {feature_dim})"
            )
        self.excitation = ExcitationBlock(feature_dim, se_hidden)
        self.dropout = nn.Dropout(dropout)
        self.classifier = nn.Linear(feature_dim, num_labels)
        self.register_buffer("text_embeddings", F.normalize(text_embeddings.detach().float(), dim=-1).clone())
        self.logit_scale = nn.Parameter(torch.tensor(float(logit_scale_init)))
        self.logit_scale_max = float(logit_scale_max)

    def forward(self, features: torch.Tensor) -> ClassifierOutput:
        logits = self.classifier(self.dropout(self.excitation(features)))
        scale = self.logit_scale.clamp(max=self.logit_scale_max).exp()
        contrastive = scale * F.normalize(features, dim=-1) @ self.text_embeddings.t()
        return ClassifierOutput(logits, contrastive)
