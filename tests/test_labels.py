import pytest

from vce_stream.labels import ANATOMY_ORDER, LABEL_KINDS, LABELS, LANDMARKS, NUM_LABELS, PATHOLOGIES, validate_labels


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
