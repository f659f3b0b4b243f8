"""The RARE-VISION label set (SPEC §1): the one place that defines labels, their order and kinds.

Model outputs, score files and event JSON all use this order. A model bundle may carry its own label
list, but the scorer only accepts these seventeen spellings.
"""

from __future__ import annotations

from enum import Enum


class LabelKind(str, Enum):
    ANATOMY = "anatomy"
    LANDMARK = "landmark"
    PATHOLOGY = "pathology"


# (label, kind) in model output order. Spellings are part of the scorer's contract.
_LABELS_AND_KINDS: tuple[tuple[str, LabelKind], ...] = (
    ("mouth", LabelKind.ANATOMY),
    ("esophagus", LabelKind.ANATOMY),
    ("stomach", LabelKind.ANATOMY),
    ("small intestine", LabelKind.ANATOMY),
    ("colon", LabelKind.ANATOMY),
    ("z-line", LabelKind.LANDMARK),
    ("pylorus", LabelKind.LANDMARK),
    ("ileocecal valve", LabelKind.LANDMARK),
    ("active bleeding", LabelKind.PATHOLOGY),
    ("angiectasia", LabelKind.PATHOLOGY),
    ("blood", LabelKind.PATHOLOGY),
    ("erosion", LabelKind.PATHOLOGY),
    ("erythema", LabelKind.PATHOLOGY),
    ("hematin", LabelKind.PATHOLOGY),
    ("lymphangioectasis", LabelKind.PATHOLOGY),
    ("polyp", LabelKind.PATHOLOGY),
    ("ulcer", LabelKind.PATHOLOGY),
)

LABELS: tuple[str, ...] = tuple(name for name, _ in _LABELS_AND_KINDS)
LABEL_KINDS: dict[str, LabelKind] = dict(_LABELS_AND_KINDS)
LABEL_INDEX: dict[str, int] = {name: i for i, name in enumerate(LABELS)}
NUM_LABELS: int = len(LABELS)

# The capsule passes the anatomical sections in this order.
ANATOMY_ORDER: tuple[str, ...] = tuple(n for n, k in _LABELS_AND_KINDS if k is LabelKind.ANATOMY)
LANDMARKS: tuple[str, ...] = tuple(n for n, k in _LABELS_AND_KINDS if k is LabelKind.LANDMARK)
PATHOLOGIES: tuple[str, ...] = tuple(n for n, k in _LABELS_AND_KINDS if k is LabelKind.PATHOLOGY)


def validate_labels(labels: list[str] | tuple[str, ...]) -> tuple[str, ...]:
    """Return `labels` as a tuple if every name is one of the seventeen and none repeats; else ValueError."""
    unknown = [name for name in labels if name not in LABEL_INDEX]
    if unknown:
        raise ValueError(f"unknown label(s) {unknown}; known labels are {list(LABELS)}")
    if len(set(labels)) != len(labels):
        raise ValueError(f"label list repeats a label: {list(labels)}")
    return tuple(labels)
