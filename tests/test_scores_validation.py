"""A scores file is validated as strictly as a bundle (issue 12, faults 3, 8, 9, 10): non-finite or
out-of-range probabilities, unknown labels, frame numbers that wrap or are fractional, malformed arrays
and headers that claim more data than the file holds are refused with one line naming the file (exit 2)."""

from __future__ import annotations

import io
import subprocess
import sys
import zipfile

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from numpy.lib import format as npformat

from vce_stream.errors import InputError
from vce_stream.labels import LABELS
from vce_stream.limits import MAX_FRAME_INDEX
from vce_stream.probabilities import ProbabilityError, check_probabilities
from vce_stream.scores import FORMAT, load_scores, save_scores


def npy_bytes(array: np.ndarray) -> bytes:
    buffer = io.BytesIO()
    npformat.write_array(buffer, np.asarray(array), allow_pickle=False)
    return buffer.getvalue()


def write_npz(path, members: dict) -> None:
    """A scores-like .npz written member by member, so that any member can be malformed."""
    with zipfile.ZipFile(path, "w") as archive:
        for name, value in members.items():
            archive.writestr(f"{name}.npy", value if isinstance(value, bytes) else npy_bytes(value))


def good_members(n: int = 40, labels=LABELS) -> dict:
    rng = np.random.default_rng(0)
    return {
        "format": np.array(FORMAT),
        "labels": np.array(list(labels)),
        "video_ids": np.array(["e1000"]),
        "frames_0": np.arange(100, 100 + n, dtype=np.int64),
        "probs_0": rng.random((n, len(labels))).astype(np.float32),
    }


def cli(*args):
    return subprocess.run([sys.executable, "-m", "vce_stream", *map(str, args)], capture_output=True, text=True)


# -- probabilities ---------------------------------------------------------------------------------

BAD_VALUES = st.sampled_from([np.nan, np.inf, -np.inf, -1e-6, 1.0 + 1e-6, -3.0, 7.5])


@settings(max_examples=200, deadline=None)
@given(
    probs=hnp.arrays(np.float32, st.tuples(st.integers(1, 30), st.integers(1, 17)), elements=st.floats(0, 1, width=32)),
    start=st.integers(0, 10**12),
    data=st.data(),
)
def test_check_probabilities_names_the_first_bad_frame(probs, start, data):
    frames = start + 3 * np.arange(probs.shape[0], dtype=np.int64)
    check_probabilities(probs, frames, "batch")  # every value finite in [0, 1]: accepted
    bad = data.draw(st.lists(st.tuples(st.integers(0, probs.shape[0] - 1), st.integers(0, probs.shape[1] - 1), BAD_VALUES), min_size=1, max_size=5))
    for row, col, value in bad:
        probs[row, col] = value
    first = min(row for row, _, _ in bad)
    with pytest.raises(ProbabilityError, match=rf"^batch: frame {frames[first]}: probability of") as info:
        check_probabilities(probs, frames, "batch", exit_code=3)
    assert info.value.exit_code == 3 and "\n" not in str(info.value)


@pytest.mark.parametrize("value", [np.nan, np.inf, -np.inf, -0.5, 1.5])
def test_scores_file_with_bad_probability_is_refused_naming_file_video_and_frame(tmp_path, value):
    members = good_members()
    members["probs_0"][7, 15] = value
    write_npz(tmp_path / "s.npz", members)
    with pytest.raises(InputError, match=r"s\.npz: video 'e1000': frame 107: probability of polyp is"):
        load_scores(tmp_path / "s.npz")
    result = cli("postprocess", tmp_path / "s.npz", "--out", tmp_path / "e.json")
    assert result.returncode == 2 and not (tmp_path / "e.json").exists()
    assert result.stderr.count("\n") == 1 and "frame 107" in result.stderr and "Traceback" not in result.stderr


# -- malformed files -------------------------------------------------------------------------------


def huge_header(rows: int, cols: int = 17) -> bytes:
    buffer = io.BytesIO()
    npformat.write_array_header_1_0(buffer, {"descr": "<f4", "fortran_order": False, "shape": (rows, cols)})
    return buffer.getvalue() + b"\0" * 64


def object_header() -> bytes:
    buffer = io.BytesIO()
    npformat.write_array_header_1_0(buffer, {"descr": "|O", "fortran_order": False, "shape": (17,)})
    return buffer.getvalue() + b"\0" * 200


MALFORMED = {
    "unknown label": (lambda m: m.update(labels=np.array(["polyps", *LABELS[1:]])), "unknown label"),
    "repeated label": (lambda m: m.update(labels=np.array([LABELS[0], *LABELS[:-1]])), "repeats a label"),
    "uint64 frames that wrap": (
        lambda m: m.update(frames_0=np.arange(40, dtype=np.uint64) + np.uint64(2**63 + 5)), "outside"),
    "frames beyond the bound": (lambda m: m.update(frames_0=np.arange(40) + MAX_FRAME_INDEX), "outside"),
    "negative frames": (lambda m: m.update(frames_0=np.arange(40) - 3), "outside"),
    "fractional frames": (lambda m: m.update(frames_0=np.arange(40) + 0.5), "whole numbers"),
    "integral float frames": (lambda m: m.update(frames_0=np.arange(40, dtype=np.float64)), "whole numbers"),
    "2-D video ids": (lambda m: m.update(video_ids=np.array([["e1000"]])), "flat list of strings"),
    "numeric video ids": (lambda m: m.update(video_ids=np.array([1000])), "flat list of strings"),
    "duplicate frame": (lambda m: m["frames_0"].__setitem__(5, m["frames_0"][4]), "repeats 104"),
    "decreasing frames": (lambda m: m["frames_0"].__setitem__(5, 3), "goes back to 3"),
    "frames shaped (N, 1)": (lambda m: m.update(frames_0=m["frames_0"].reshape(-1, 1)), "flat list"),
    "label count vs columns": (lambda m: m.update(probs_0=m["probs_0"][:, :16]), "do not fit 40 frames x 17 labels"),
    "integer probabilities": (lambda m: m.update(probs_0=m["probs_0"].astype(np.int64)), "floating-point"),
    "missing probs": (lambda m: m.pop("probs_0"), "missing"),
    "extra array": (lambda m: m.update(frames_1=np.arange(3)), "unexpected"),
    "header claims 10^11 rows": (lambda m: m.update(probs_0=huge_header(10**11)), "claims shape"),
    "header claims 10^11 frames": (lambda m: m.update(frames_0=huge_header(10**11, 1)), "claims shape"),
    "object array": (lambda m: m.update(labels=object_header()), "objects"),
    "wrong format": (lambda m: m.update(format=np.array("vce-stream-scores/0")), "expected format"),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_scores_file_is_refused_with_one_line(tmp_path, case):
    change, message = MALFORMED[case]
    members = good_members()
    change(members)
    write_npz(tmp_path / "s.npz", members)
    with pytest.raises(InputError, match=message) as info:
        load_scores(tmp_path / "s.npz")
    assert str(info.value).startswith(f"{tmp_path / 's.npz'}:") and "\n" not in str(info.value)


@pytest.mark.parametrize("case", ["unknown label", "uint64 frames that wrap", "header claims 10^11 rows", "2-D video ids"])
def test_postprocess_and_calibrate_refuse_malformed_scores_with_status_2(tmp_path, case, official_gt_path):
    members = good_members()
    MALFORMED[case][0](members)
    write_npz(tmp_path / "s.npz", members)
    for args in (("postprocess", tmp_path / "s.npz", "--out", tmp_path / "e.json"),
                 ("calibrate", tmp_path / "s.npz", official_gt_path, "--out", tmp_path / "c.yaml")):  # fmt: skip
        result = cli(*args)
        assert result.returncode == 2, result.stderr
        assert result.stderr.startswith("vce-stream: error: ") and result.stderr.count("\n") == 1
    assert not (tmp_path / "e.json").exists() and not (tmp_path / "c.yaml").exists()


def test_valid_file_written_by_save_scores_still_loads(tmp_path):
    members = good_members()
    save_scores(tmp_path / "s.npz", {"e1000": (members["frames_0"], members["probs_0"])}, LABELS)
    labels, videos = load_scores(tmp_path / "s.npz")
    assert labels == LABELS
    np.testing.assert_array_equal(videos["e1000"][0], members["frames_0"])
