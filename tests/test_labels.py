import pytest

from vce_stream.labels import (
    ANATOMY_ORDER,
    LABEL_KINDS,
    LABELS,
    LANDMARKS,
    NUM_LABELS,
    PATHOLOGIES,
    RARE_VISION,
    LabelKind,
    LabelSet,
    validate_labels,
)


def test_seventeen_labels_in_spec_order_and_spelling():
    assert NUM_LABELS == 17
    assert LABELS[0] == "mouth" and LABELS[3] == "small intestine" and LABELS[5] == "z-line"
    assert LABELS[14] == "lymphangioectasis" and LABELS[-1] == "ulcer"
    assert all(name == name.lower() for name in LABELS)


def test_kinds_partition_the_labels():
    assert ANATOMY_ORDER == ("mouth", "esophagus", "stomach", "small intestine", "colon")
    assert LANDMARKS == ("z-line", "pylorus", "ileocecal valve")
    assert len(PATHOLOGIES) == 9
    assert set(ANATOMY_ORDER) | set(LANDMARKS) | set(PATHOLOGIES) == set(LABELS) == set(LABEL_KINDS)


def test_validate_labels_rejects_misspellings_and_repeats():
    assert validate_labels(["polyp", "ulcer"]) == ("polyp", "ulcer")
    with pytest.raises(ValueError, match="lymphangiectasia"):
        validate_labels(["lymphangiectasia"])
    with pytest.raises(ValueError, match="repeats"):
        validate_labels(["polyp", "polyp"])


def test_a_label_set_from_names_keeps_known_kinds_and_calls_the_rest_pathology_like():
    assert LabelSet.from_names(LABELS) == RARE_VISION
    subset = LabelSet.from_names(["stomach", "z-line", "polyp", "bubbles"])
    assert subset.kinds == (LabelKind.ANATOMY, LabelKind.LANDMARK, LabelKind.PATHOLOGY, LabelKind.PATHOLOGY)
    assert subset.anatomy_order == ("stomach",) and dict(subset.landmark_sections) == {"z-line": "stomach"}
    with pytest.raises(ValueError, match="repeats"):
        LabelSet.from_names(["polyp", "polyp"])
    with pytest.raises(ValueError, match="bubbles"):
        validate_labels(subset.names)
    assert validate_labels(subset.names, subset) == subset.names
