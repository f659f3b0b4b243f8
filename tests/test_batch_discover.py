"""Finding exams in an archive, and output names that never leave OUTDIR."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.batch.discover import assign_names, discover, output_path, safe_component
from vce_stream.errors import InputError


def touch(path: Path, data: bytes = b"x") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


@pytest.fixture
def archive(tmp_path) -> Path:
    root = tmp_path / "archive"
    touch(root / "site_a" / "exam_1.mp4")
    touch(root / "site_a" / "notes.txt")
    touch(root / "site_b" / "ukdd_navi_00051" / "frame_0000049.png")
    touch(root / "site_b" / "ukdd_navi_00051" / "frame_0000050.png")
    touch(root / "site_b" / "ukdd_navi_00051" / "nested" / "inner.mp4")  # inside a frame folder: not an exam
    touch(root / "exam_2.MKV")
    touch(root / ".hidden" / "exam_3.mp4")
    touch(root / ".partial.mp4")
    touch(root / "Labels" / "ukdd_navi_00051.csv")
    return root


def test_finds_video_files_and_frame_folders_in_sorted_order(archive):
    found = discover(archive)
    assert [(e.key, e.kind, e.video_id) for e in found.exams] == [
        ("exam_2.MKV", "video", "exam_2"),
        ("site_a/exam_1.mp4", "video", "exam_1"),
        ("site_b/ukdd_navi_00051", "frames", "ukdd_navi_00051"),
    ]
    assert all(e.path.is_absolute() and e.path.exists() for e in found.exams)
    assert found.skipped == ()


def test_labels_dir_gives_frame_folders_their_galar_csv(archive):
    found = discover(archive, labels_dir=archive / "Labels")
    csvs = {e.key: e.labels_csv for e in found.exams}
    assert csvs["site_b/ukdd_navi_00051"] == archive / "Labels" / "ukdd_navi_00051.csv"
    assert csvs["site_a/exam_1.mp4"] is None


def test_outdir_inside_the_archive_is_not_searched(archive):
    touch(archive / "out" / "exams" / "copy.mp4")
    assert "out/exams/copy.mp4" in [e.key for e in discover(archive).exams]
    assert "out/exams/copy.mp4" not in [e.key for e in discover(archive, exclude=archive / "out").exams]


def test_an_archive_that_is_one_frame_folder_is_one_exam(tmp_path):
    folder = tmp_path / "exam_7"
    touch(folder / "frame_000000.png")
    (exam,) = discover(folder).exams
    assert (exam.key, exam.kind, exam.video_id) == (".", "frames", "exam_7")


def test_shared_video_ids_fall_back_to_relative_paths(tmp_path):
    touch(tmp_path / "p1" / "capsule.mp4")
    touch(tmp_path / "p2" / "capsule.mp4")
    touch(tmp_path / "p2" / "capsule.avi")
    touch(tmp_path / "other.mp4")
    exams = discover(tmp_path).exams
    ids = [e.video_id for e in exams]
    assert ids == ["other", "p1/capsule.mp4", "p2/capsule.avi", "p2/capsule.mp4"]
    names = [e.name for e in exams]
    assert len(set(names)) == len(names) and all("/" not in n for n in names)


def test_symbolic_links_out_of_the_archive_are_skipped_and_reported(tmp_path):
    outside = tmp_path / "elsewhere"
    touch(outside / "secret.mp4")
    touch(outside / "frames" / "frame_000001.png")
    root = tmp_path / "archive"
    touch(root / "real.mp4")
    os.symlink(outside / "secret.mp4", root / "leak.mp4")
    os.symlink(outside / "frames", root / "leak_frames")
    os.symlink(root / "real.mp4", root / "alias.mp4")  # inside the archive: fine
    os.symlink(root, root / "loop")  # a loop: never walked into
    found = discover(root)
    assert [e.key for e in found.exams] == ["alias.mp4", "real.mp4"]
    assert {s.key for s in found.skipped} == {"leak.mp4", "leak_frames"}
    assert all("outside the archive" in s.reason for s in found.skipped)


def test_missing_archive_or_a_file_is_a_one_line_input_error(tmp_path):
    with pytest.raises(InputError, match="archive folder not found"):
        discover(tmp_path / "nope")
    with pytest.raises(InputError, match="not a file"):
        discover(touch(tmp_path / "exam.mp4"))


@pytest.mark.parametrize(
    "video_id",
    ["..", ".", "../../etc/passwd", "/abs/path", "a/b", "a\\b", ".hidden", "-rf", "", "tab\there", "näive", "x" * 400, "con"],
)
def test_hostile_ids_become_single_safe_components(tmp_path, video_id):
    name = safe_component(video_id)
    path = output_path(tmp_path, name)
    assert path.parent == tmp_path and path.name == f"{name}.json"
    assert not name.startswith((".", "-")) and len(name) < 120


def test_a_changed_name_carries_a_hash_so_distinct_ids_stay_distinct():
    assert safe_component("exam_01") == "exam_01"
    assert safe_component("a/b") != safe_component("a_b")
    assert safe_component("a/b").startswith("a_b-")


def test_names_that_differ_only_in_case_are_told_apart():
    names = assign_names({"Exam.mp4": "Exam", "exam.mp4": "exam", "other.mp4": "other"})
    assert names["other.mp4"] == "other"
    assert names["Exam.mp4"].lower() != names["exam.mp4"].lower()


@pytest.mark.parametrize("name", ["..", ".", "", "a/b", "../x", ".x", "a\0b"])
def test_output_path_refuses_unsafe_names(tmp_path, name):
    with pytest.raises(ValueError):
        output_path(tmp_path, name)


@settings(max_examples=300, deadline=None)
@given(st.text(min_size=0, max_size=200))
def test_any_id_gives_a_name_directly_inside_outdir(video_id):
    root = Path("/tmp/outdir/exams")
    name = safe_component(video_id)
    path = output_path(root, name)
    assert path.parent == root
    assert name not in ("", ".", "..") and not name.startswith(".")
    assert all(c.isascii() and (c.isalnum() or c in "._-") for c in name)


@settings(max_examples=200, deadline=None)
@given(st.lists(st.text(min_size=0, max_size=30), min_size=1, max_size=12, unique=True))
def test_names_are_unique_even_ignoring_case(video_ids):
    names = assign_names({f"key{i}/{v}": v for i, v in enumerate(video_ids)})
    lowered = [n.lower() for n in names.values()]
    assert len(set(lowered)) == len(lowered)


def test_frame_files_linking_outside_the_archive_skip_their_folder_and_are_reported(tmp_path):
    outside = tmp_path / "elsewhere"
    touch(outside / "private.png")
    root = tmp_path / "archive"
    touch(root / "exam_a" / "frame_000001.png")
    touch(root / "exam_a" / "frame_000002.png")
    os.symlink(outside / "private.png", root / "exam_a" / "frame_000003.png")  # one frame leaks out
    touch(root / "exam_b" / "frame_000001.png")
    os.symlink(root / "exam_b" / "frame_000001.png", root / "exam_b" / "frame_000002.png")  # inside: fine
    touch(root / "exam_c" / "frame_000001.png")
    os.symlink(tmp_path / "gone.png", root / "exam_c" / "frame_000002.png")  # dangling: not followed either
    found = discover(root)
    assert [e.key for e in found.exams] == ["exam_b"]
    reasons = {s.key: s.reason for s in found.skipped}
    assert set(reasons) == {"exam_a", "exam_c"}
    assert "link outside the archive (first: frame_000003.png)" in reasons["exam_a"]


def test_an_archive_that_is_a_frame_folder_with_a_leaking_frame_is_skipped(tmp_path):
    touch(tmp_path / "elsewhere.png")
    root = tmp_path / "exam"
    touch(root / "frame_000001.png")
    os.symlink(tmp_path / "elsewhere.png", root / "frame_000002.png")
    found = discover(root)
    assert found.exams == () and [s.key for s in found.skipped] == ["."]


@settings(max_examples=40, deadline=None)
@given(links=st.lists(st.tuples(st.integers(0, 2), st.integers(1, 5), st.booleans()), max_size=8))
def test_no_discovered_frame_folder_holds_a_frame_file_resolving_outside(links, tmp_path_factory):
    base = tmp_path_factory.mktemp("arch")
    touch(base / "outside.png")
    root = base / "archive"
    for folder in range(3):
        touch(root / f"exam_{folder}" / "frame_000000.png")
    for folder, number, out in links:
        link = root / f"exam_{folder}" / f"frame_{number:06d}.png"
        if not link.exists() and not link.is_symlink():
            os.symlink(base / "outside.png" if out else root / f"exam_{folder}" / "frame_000000.png", link)
    found = discover(root)
    for exam in found.exams:
        for frame in exam.path.iterdir():
            frame.resolve().relative_to(root.resolve())  # raises if any frame leaves the archive
    leaking = {f"exam_{folder}" for folder, _, out in links if out}
    assert {s.key for s in found.skipped} <= leaking
    assert len(found.exams) + len(found.skipped) == 3
