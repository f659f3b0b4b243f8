"""Frame folders (Galar / RARE-VISION layout) and the Galar CSV index mapping (SPEC §4, §5)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest

from vce_stream.errors import EXIT_BAD_INPUT, EXIT_INCOMPLETE, InputError
from vce_stream.sources import FrameFolderSource, SourceConfig, StreamBroken, open_source
from vce_stream.sources.folder import describe_gaps
from vce_stream.sources.galar import read_galar_index


def write_frames(folder: Path, numbers, *, digits: int = 6, ext: str = "png", size: int = 32) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    paths = []
    for n in numbers:
        image = np.full((size, size, 3), (n * 37) % 256, dtype=np.uint8)
        lower = folder / f"tmp.{ext.lower()}"
        av.VideoFrame.from_ndarray(image, format="rgb24").save(str(lower))
        path = folder / f"frame_{n:0{digits}d}.{ext}"
        lower.rename(path)
        paths.append(path)
    return paths


def indices(source) -> list[int]:
    return [index for index, _ in source.frames()]


@pytest.mark.parametrize("digits,ext", [(6, "PNG"), (7, "png"), (0, "jpg"), (3, "JPEG")])
def test_frame_numbers_are_the_indices_whatever_the_padding_and_case(tmp_path, digits, ext):
    folder = tmp_path / "ukdd_navi_00051"
    write_frames(folder, range(49, 61), digits=digits, ext=ext)
    (folder / "notes.txt").write_text("ignored")
    source = open_source(folder)
    assert isinstance(source, FrameFolderSource)
    assert source.video_id == "ukdd_navi_00051" and source.expected_frames == 12
    assert indices(source) == list(range(49, 61))


def test_frames_decode_to_the_pixels_that_were_written(tmp_path):
    write_frames(tmp_path / "v", [0, 1])
    frames = [frame.to_ndarray(format="rgb24") for _, frame in FrameFolderSource(tmp_path / "v").frames()]
    assert np.array_equal(frames[0], np.zeros((32, 32, 3), np.uint8))
    assert np.array_equal(frames[1], np.full((32, 32, 3), 37, np.uint8))  # PNG is lossless


def test_a_galar_csv_maps_file_numbers_to_the_index_column(tmp_path):
    folder = tmp_path / "12"
    write_frames(folder, [5 * i for i in range(10)])  # Galar videos where frame = 5 x index
    csv = tmp_path / "12.csv"
    csv.write_text("index,section,frame,mouth\n" + "".join(f"{i},mouth,{5 * i},1\n" for i in range(10)))
    assert indices(FrameFolderSource(folder, labels_csv=csv)) == list(range(10))
    with pytest.raises(InputError, match="12: 36 frame.s. missing .*--labels-csv"):
        FrameFolderSource(folder)  # without the CSV, file numbers 0, 5, 10... have holes


def test_a_file_without_a_csv_row_is_named(tmp_path):
    write_frames(tmp_path / "v", [0, 1, 2])
    csv = tmp_path / "v.csv"
    csv.write_text("index,section,frame\n0,mouth,0\n1,mouth,1\n")
    with pytest.raises(InputError, match="v.csv: no row for 1 file.s. of .*frame_000002.png"):
        FrameFolderSource(tmp_path / "v", labels_csv=csv)


@pytest.mark.parametrize(
    "text,problem",
    [
        ("a,b\n1,2\n", "not a Galar label CSV"),
        ("index,section,frame\n0,mouth,zero\n", "line 2: frame and index must be whole numbers"),
        ("index,section,frame\n0,mouth,0\n0,mouth,1\n", "line 3: index 0 appears twice"),
        ("index,section,frame\n", "has no rows"),
    ],
)
def test_malformed_galar_csvs_are_refused_with_the_reason(tmp_path, text, problem):
    path = tmp_path / "labels.csv"
    path.write_text(text)
    with pytest.raises(InputError, match=f"labels.csv: {problem}"):
        read_galar_index(path)


def test_gaps_are_refused_unless_allowed_and_then_counted(tmp_path):
    write_frames(tmp_path / "v", [0, 1, 2, 5, 6, 9])
    with pytest.raises(InputError, match="v: 4 frame.s. missing between frame 0 and 9 .first missing: 3.; pass --allow-gaps") as info:
        FrameFolderSource(tmp_path / "v")
    assert info.value.exit_code == EXIT_BAD_INPUT
    source = FrameFolderSource(tmp_path / "v", SourceConfig(allow_gaps=True))
    assert indices(source) == [0, 1, 2, 5, 6, 9] and source.stats.missing == 4


def test_describe_gaps_counts_every_missing_index():
    assert describe_gaps(np.array([3, 4, 5])) == (0, None)
    assert describe_gaps(np.array([3, 6, 7, 10])) == (4, 4)


def test_empty_missing_and_duplicate_folders_are_bad_input(tmp_path):
    (tmp_path / "empty").mkdir()
    with pytest.raises(InputError, match="empty: no frame files"):
        open_source(tmp_path / "empty")
    with pytest.raises(InputError, match="gone: folder not found"):
        FrameFolderSource(tmp_path / "gone")
    write_frames(tmp_path / "dup", [1], digits=3)
    write_frames(tmp_path / "dup", [1], digits=6)
    with pytest.raises(InputError, match="frame number 1 appears twice"):
        open_source(tmp_path / "dup")


def test_an_unreadable_image_part_way_breaks_the_exam_after_the_frames_before_it(tmp_path):
    paths = write_frames(tmp_path / "v", range(6))
    paths[3].write_bytes(b"garbage")
    source = open_source(tmp_path / "v")
    got = []
    with pytest.raises(StreamBroken, match="frame_000003.png: not a readable image") as info:
        for index, _ in source.frames():
            got.append(index)
    assert got == [0, 1, 2] and info.value.exit_code == EXIT_INCOMPLETE


def test_an_unreadable_first_image_is_bad_input(tmp_path):
    paths = write_frames(tmp_path / "v", range(3))
    paths[0].write_bytes(b"garbage")
    with pytest.raises(InputError) as info:
        indices(open_source(tmp_path / "v"))
    assert info.value.exit_code == EXIT_BAD_INPUT


def test_a_resolution_change_in_a_folder_breaks_the_exam(tmp_path):
    write_frames(tmp_path / "v", range(3), size=32)
    write_frames(tmp_path / "v", [3], size=48)
    with pytest.raises(StreamBroken, match="resolution changed from 32x32 to 48x48 at frame 3"):
        indices(open_source(tmp_path / "v"))


def test_a_labels_csv_with_a_video_file_is_refused(tmp_path):
    video = tmp_path / "a.mp4"
    video.write_bytes(b"x")
    with pytest.raises(InputError, match="maps frame folders only"):
        open_source(video, labels_csv=tmp_path / "a.csv")


@pytest.mark.parametrize("number", ["99999999999999999999", "9223372036854775808", "1000000000000001"])
def test_a_frame_number_beyond_the_index_bound_is_one_line(tmp_path, number):
    """Issue 12 fault 9: a file number no int64 (or frame index) holds is an input error, no traceback."""
    folder = tmp_path / "exam"
    folder.mkdir()
    (folder / "frame_000001.png").write_bytes(b"x")
    (folder / f"frame_{number}.png").write_bytes(b"x")
    with pytest.raises(InputError, match=rf"frame_{number}\.png: frame number beyond"):
        FrameFolderSource(folder, SourceConfig(allow_gaps=True))


@pytest.mark.parametrize("offset", [99999999999999999999, -1, 10**15 + 1])
def test_frame_offset_is_bounded(offset):
    from vce_stream.errors import ConfigError

    with pytest.raises(ConfigError, match="source.frame_offset"):
        SourceConfig(frame_offset=offset)


def test_a_huge_frame_offset_on_the_command_line_is_one_line(tmp_path, capsys):
    from vce_stream.cli import main

    with pytest.raises(SystemExit) as info:
        main(["run", str(tmp_path / "x.mkv"), "--model", str(tmp_path / "b"), "--out", str(tmp_path / "e.json"), "--frame-offset", "99999999999999999999"])
    err = capsys.readouterr().err
    assert info.value.code == 2 and err.startswith("vce-stream: error: ") and "frame_offset" in err and err.count("\n") == 1
