"""The Galar-layout reader, the split by video, and the datasets (on data written in that layout)."""

from __future__ import annotations

import csv
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch

from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.errors import InputError
from vce_stream.events.jsonio import parse_submission, submission_dict
from vce_stream.labels import LABELS
from vce_stream.sources.preprocess import read_image

from train.config import AugmentConfig, DataConfig
from train.data import FrameDataset, build_augment, ground_truth_events, read_galar, split_videos
from train.synthetic_galar import write_synthetic_galar


@pytest.fixture(scope="module")
def galar(tmp_path_factory):
    root = tmp_path_factory.mktemp("galar")
    written = write_synthetic_galar(root, num_videos=4, frames=40, sizes=(36, 44), five_x=("2",), seed=5)
    return root, written


@pytest.fixture
def galar_copy(galar, tmp_path):
    root = tmp_path / "data"
    shutil.copytree(galar[0], root)
    return root


def rewrite_csv(path: Path, edit) -> None:
    with open(path, newline="") as handle:
        rows = list(csv.reader(handle))
    rows = edit(rows)
    with open(path, "w", newline="") as handle:
        csv.writer(handle).writerows(rows)


def test_reader_takes_indices_from_index_and_images_from_frame(galar):
    root, written = galar
    data = read_galar(root, DataConfig())
    assert list(data.videos) == ["1", "2", "3", "4"]
    five = data.videos["2"]
    assert five.index.tolist() == list(range(40))
    assert [p.name for p in five.files[:3]] == ["frame_000000.PNG", "frame_000005.PNG", "frame_000010.PNG"]
    for vid, video in data.videos.items():
        np.testing.assert_array_equal(video.targets, written[vid].targets)
    assert data.report.ignored_columns == ("ampulla of vater", "foreign body")
    assert data.report.rows_without_image == {} and data.report.images_without_row == {}


def test_every_kth_frame_keeps_positions_0_k_2k(galar):
    video = read_galar(galar[0], DataConfig()).videos["1"]
    assert video.every_kth(5).index.tolist() == list(range(0, 40, 5))
    assert video.every_kth(1) is video


def test_split_is_by_video_seeded_and_never_empty():
    ids = [str(i) for i in range(1, 81)]
    train, val = split_videos(ids, 0.2, seed=42)
    assert len(val) == 16 and not set(train) & set(val) and set(train) | set(val) == set(ids)
    assert split_videos(ids, 0.2, seed=42) == (train, val)
    assert split_videos(ids, 0.2, seed=43) != (train, val)
    assert split_videos(["a", "b"], 0.9, seed=0)[0]  # at least one training video
    assert split_videos(ids, 0.2, 0, val_videos=["3", "8"])[1] == ["3", "8"]
    with pytest.raises(InputError, match="not in the data"):
        split_videos(ids, 0.2, 0, val_videos=["99"])
    with pytest.raises(InputError, match="at least two videos"):
        split_videos(["1"], 0.2, 0)


def test_missing_label_column_is_an_error_naming_the_file(galar_copy):
    csv_path = galar_copy / "Labels" / "3.csv"
    rewrite_csv(csv_path, lambda rows: [row[:-3] for row in rows])  # drops "ulcer" and the extras
    with pytest.raises(InputError, match=r"Labels/3.csv: missing column\(s\) \['ulcer'\]"):
        read_galar(galar_copy, DataConfig())


def test_values_other_than_0_1_and_repeated_indices_are_errors(galar_copy):
    csv_path = galar_copy / "Labels" / "1.csv"
    rewrite_csv(csv_path, lambda rows: rows[:5] + [rows[5][:3] + ["2"] + rows[5][4:]] + rows[6:])
    with pytest.raises(InputError, match="1.csv: line 6: label values must be 0 or 1"):
        read_galar(galar_copy, DataConfig())
    rewrite_csv(csv_path, lambda rows: rows[:5] + [rows[4]] + rows[6:])
    with pytest.raises(InputError, match="frame index 3 appears more than once"):
        read_galar(galar_copy, DataConfig())


def test_row_without_image_is_an_error_or_a_counted_skip(galar_copy):
    (galar_copy / "4" / "frame_000007.PNG").unlink()
    with pytest.raises(InputError, match=r"4.csv: 1 row\(s\) have no image .* first frame 7"):
        read_galar(galar_copy, DataConfig())
    data = read_galar(galar_copy, DataConfig(missing_image="skip"))
    assert data.report.rows_without_image == {"4": 1}
    assert 7 not in data.videos["4"].index.tolist() and len(data.videos["4"]) == 39
    assert any("without an image" in w for w in data.report.warnings())


def test_image_without_row_is_counted_and_ignored(galar_copy):
    shutil.copy(galar_copy / "1" / "frame_000000.PNG", galar_copy / "1" / "frame_000999.PNG")
    data = read_galar(galar_copy, DataConfig())
    assert data.report.images_without_row == {"1": 1} and len(data.videos["1"]) == 40


def test_folder_problems_are_one_line_errors(galar_copy, tmp_path):
    with pytest.raises(InputError, match="no Labels/ folder"):
        read_galar(tmp_path, DataConfig())
    shutil.rmtree(galar_copy / "2")
    with pytest.raises(InputError, match="frame folder .* does not exist"):
        read_galar(galar_copy, DataConfig())
    with pytest.raises(InputError, match=r"no label CSV for video\(s\) \['9'\]"):
        read_galar(galar_copy, DataConfig(videos=("1", "9")))


def test_ground_truth_matches_the_tuple_segmentation_of_the_label_csv(galar):
    root, written = galar
    video = read_galar(root, DataConfig()).videos["3"]
    events = ground_truth_events(video, LABELS)
    gt = parse_submission(submission_dict({"3": events}, segmentation="tuple", order="time", frame_ranges={"3": (0, 39)}))
    # Rebuild the label matrix from the tuple events: it must equal the CSV, frame by frame.
    rebuilt = np.zeros_like(written["3"].targets)
    for ev in gt["3"]:
        for name in ev["label"]:
            rebuilt[ev["start"] : ev["end"] + 1, LABELS.index(name)] = 1
    np.testing.assert_array_equal(rebuilt, written["3"].targets)
    assert gt["3"][0]["start"] == 0 and gt["3"][-1]["end"] == 39


def test_dataset_serves_the_runtime_preparation_and_seeded_augmentation(galar):
    video = read_galar(galar[0], DataConfig()).videos["2"]
    pre = PreprocessConfig(size=32)
    plain = FrameDataset(video.files, video.targets, pre)
    frame, target = plain[4]
    expected = torch.from_numpy(read_image(video.files[4], pre)).permute(2, 0, 1)
    assert frame.dtype == torch.uint8 and torch.equal(frame, expected)
    assert target.tolist() == video.targets[4].tolist()
    augmented = FrameDataset(video.files, video.targets, pre, build_augment(AugmentConfig(), 32))
    a, _ = augmented[(4, 123)]
    b, _ = augmented[(4, 123)]
    c, _ = augmented[(4, 124)]
    assert a.shape == (3, 32, 32) and a.dtype == torch.uint8
    assert torch.equal(a, b) and not torch.equal(a, c)  # the sample's seed alone decides
    assert torch.equal(augmented[4][0], expected)  # no seed: validation, no augmentation


def test_augmented_batches_are_the_same_with_or_without_worker_processes(galar):
    from torch.utils.data import DataLoader

    from train.sampler import SqrtFrequencySampler, sqrt_frequency_weights

    video = read_galar(galar[0], DataConfig()).videos["1"]
    dataset = FrameDataset(video.files, video.targets, PreprocessConfig(size=32), build_augment(AugmentConfig(), 32))
    sampler = SqrtFrequencySampler(sqrt_frequency_weights(video.targets), num_samples=24, seed=9)
    batches = {}
    for workers in (0, 2):
        sampler.set_epoch(1, start=8)
        loader = DataLoader(dataset, batch_size=8, sampler=sampler, num_workers=workers)
        batches[workers] = [frames for frames, _ in loader]
    assert len(batches[0]) == 2
    assert all(torch.equal(a, b) for a, b in zip(batches[0], batches[2]))


def test_column_aliases_map_other_spellings_to_labels(galar_copy):
    rewrite_csv(galar_copy / "Labels" / "1.csv",
                lambda rows: [[("Lymphangiectasia" if c == "lymphangioectasis" else c) for c in rows[0]], *rows[1:]])
    with pytest.raises(InputError, match=r"missing column\(s\) \['lymphangioectasis'\]"):
        read_galar(galar_copy, DataConfig())
    data = read_galar(galar_copy, DataConfig(column_aliases={"lymphangiectasia": "lymphangioectasis"}))
    assert len(data.videos["1"]) == 40
