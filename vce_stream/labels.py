"""Label sets: which labels a model outputs, in which order, and what kind each one is.

A `LabelSet` is configuration: a model bundle carries one (its manifest lists the names; the kinds and
the landmark -> section map follow from them, see `LabelSet.from_names`) and the code that needs kinds
or the anatomy order takes one as an argument. `RARE_VISION` is the default instance: the seventeen
labels of SPEC §1, in model output order. Those seventeen are also the only spellings the RARE-VISION
scorer accepts, so `validate_labels` (which admits only them) belongs where RARE-VISION output is
asked for: the event JSON and its evaluation.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from enum import Enum
from types import MappingProxyType


class LabelKind(str, Enum):
    ANATOMY = "anatomy"
    LANDMARK = "landmark"
    PATHOLOGY = "pathology"


@dataclass(frozen=True)
class LabelSet:
    """Label names in model output order, each one's kind, and where each landmark sits.

    names: the labels, in output order, none repeated.
    kinds: one LabelKind per name.
    anatomy_order: the anatomy labels in the order the capsule passes them (not necessarily output order).
    landmark_sections: landmark -> the section it marks the entrance of (z-line -> stomach); the section
    need not be in the set (then no anatomy path can place the landmark).
    """

    names: tuple[str, ...]
    kinds: tuple[LabelKind, ...]
    anatomy_order: tuple[str, ...]
    landmark_sections: Mapping[str, str] = field(default_factory=dict, hash=False)

    def __post_init__(self) -> None:
        if not self.names:
            raise ValueError("a label set needs at least one label")
        if len(set(self.names)) != len(self.names):
            raise ValueError(f"label list repeats a label: {list(self.names)}")
        if len(self.kinds) != len(self.names):
            raise ValueError(f"{len(self.kinds)} kinds for {len(self.names)} labels")
        anatomy = {n for n, k in zip(self.names, self.kinds) if k is LabelKind.ANATOMY}
        if set(self.anatomy_order) != anatomy or len(self.anatomy_order) != len(anatomy):
            raise ValueError(f"anatomy_order {list(self.anatomy_order)} must list each anatomy label once")
        not_landmarks = [n for n in self.landmark_sections if self.kind(n) is not LabelKind.LANDMARK]
        if not_landmarks:
            raise ValueError(f"landmark_sections names labels that are not landmarks: {not_landmarks}")
        object.__setattr__(self, "landmark_sections", MappingProxyType(dict(self.landmark_sections)))

    def __len__(self) -> int:
        return len(self.names)

    @property
    def index(self) -> dict[str, int]:
        """Label name -> output column."""
        return {name: i for i, name in enumerate(self.names)}

    def kind(self, name: str) -> LabelKind:
        try:
            return self.kinds[self.names.index(name)]
        except ValueError:
            raise KeyError(name) from None

    def of_kind(self, kind: LabelKind) -> tuple[str, ...]:
        """The labels of `kind`, in output order."""
        return tuple(n for n, k in zip(self.names, self.kinds) if k is kind)

    @property
    def landmarks(self) -> tuple[str, ...]:
        return self.of_kind(LabelKind.LANDMARK)

    @property
    def pathologies(self) -> tuple[str, ...]:
        return self.of_kind(LabelKind.PATHOLOGY)

    @classmethod
    def from_names(cls, names: Sequence[str], known: LabelSet | None = None) -> LabelSet:
        """The label set of a list of names (what a bundle manifest holds), kinds taken from `known`.

        Names `known` has (default: RARE_VISION) keep their kind, anatomy order and landmark section;
        any other name is a pathology-like finding. Repeats and an empty list are ValueErrors.
        """
        known = known or RARE_VISION
        names = tuple(names)
        kinds = tuple(known.kind(n) if n in known.names else LabelKind.PATHOLOGY for n in names)
        return cls(
            names=names,
            kinds=kinds,
            anatomy_order=tuple(n for n in known.anatomy_order if n in names),
            landmark_sections={lm: s for lm, s in known.landmark_sections.items() if lm in names},
        )

    def check_names(self, labels: Sequence[str]) -> tuple[str, ...]:
        """`labels` as a tuple if every name belongs to this set and none repeats; else ValueError."""
        unknown = [name for name in labels if name not in self.names]
        if unknown:
            raise ValueError(f"unknown label(s) {unknown}; known labels are {list(self.names)}")
        if len(set(labels)) != len(labels):
            raise ValueError(f"label list repeats a label: {list(labels)}")
        return tuple(labels)


# The seventeen labels of SPEC §1 in model output order. Spellings are part of the scorer's contract.
RARE_VISION = LabelSet(
    names=(
        "mouth", "esophagus", "stomach", "small intestine", "colon",
        "z-line", "pylorus", "ileocecal valve",
        "active bleeding", "angiectasia", "blood", "erosion", "erythema", "hematin", "lymphangioectasis",
        "polyp", "ulcer",
    ),
    kinds=(LabelKind.ANATOMY,) * 5 + (LabelKind.LANDMARK,) * 3 + (LabelKind.PATHOLOGY,) * 9,
    # The capsule passes the sections in this order.
    anatomy_order=("mouth", "esophagus", "stomach", "small intestine", "colon"),
    # Each landmark marks the entrance of a section.
    landmark_sections={"z-line": "stomach", "pylorus": "small intestine", "ileocecal valve": "colon"},
)

# The default instance's fields, under the names most callers use.
LABELS: tuple[str, ...] = RARE_VISION.names
LABEL_KINDS: dict[str, LabelKind] = dict(zip(RARE_VISION.names, RARE_VISION.kinds))
LABEL_INDEX: dict[str, int] = RARE_VISION.index
NUM_LABELS: int = len(RARE_VISION)
ANATOMY_ORDER: tuple[str, ...] = RARE_VISION.anatomy_order
LANDMARKS: tuple[str, ...] = RARE_VISION.landmarks
PATHOLOGIES: tuple[str, ...] = RARE_VISION.pathologies


def validate_labels(labels: Sequence[str], label_set: LabelSet = RARE_VISION) -> tuple[str, ...]:
    """`labels` as a tuple if every name is one of `label_set`'s (default: the seventeen the scorer
    accepts) and none repeats; else ValueError."""
    return label_set.check_names(labels)
