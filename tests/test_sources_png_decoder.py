"""The fast PNG path (OpenCV) gives exactly FFmpeg's pixels, or is not taken (issue 15 item 7)."""

from __future__ import annotations

from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.errors import InputError
from vce_stream.sources.preprocess import PreprocessConfig, open_image, open_image_pyav, png_is_rgb8, prepare_frame

cv2 = pytest.importorskip("cv2")
CFG = PreprocessConfig(size=24)


@settings(max_examples=25, deadline=None)
@given(
    width=st.integers(8, 70),
    height=st.integers(8, 70),
    alpha=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_rgb_and_rgba_pngs_decode_to_ffmpegs_pixels(tmp_path_factory, width, height, alpha, seed):
    folder = tmp_path_factory.mktemp("png")
    image = np.random.default_rng(seed).integers(0, 256, (height, width, 4 if alpha else 3), dtype=np.uint8)
    path = folder / "frame_1.png"
    av.VideoFrame.from_ndarray(image, format="rgba" if alpha else "rgb24").save(str(path))
    assert png_is_rgb8(path.read_bytes()[:26])
    fast, reference = open_image(path), open_image_pyav(path)
    assert np.array_equal(fast.to_ndarray(format="rgb24"), reference.to_ndarray(format="rgb24"))
    assert np.array_equal(prepare_frame(fast, CFG), prepare_frame(reference, CFG))


@pytest.mark.parametrize("kind", ["gray", "gray16", "rgb16", "palette"])
def test_other_pngs_take_ffmpegs_path(tmp_path, kind):
    rng = np.random.default_rng(0)
    path = tmp_path / "frame_1.png"
    if kind == "palette":
        from PIL import Image

        Image.fromarray(rng.integers(0, 256, (20, 30, 3), dtype=np.uint8)).convert("P").save(path)
    else:
        dtype = np.uint16 if kind.endswith("16") else np.uint8
        shape = (20, 30, 3) if kind.startswith("rgb") else (20, 30)
        cv2.imwrite(str(path), rng.integers(0, np.iinfo(dtype).max, shape, dtype=dtype))
    assert not png_is_rgb8(path.read_bytes()[:26])
    frame = open_image(path)
    assert frame.format.name not in ("bgr24", "bgra")  # OpenCV's frames; FFmpeg's keep the file's own format
    assert frame.format.name == open_image_pyav(path).format.name
    assert np.array_equal(prepare_frame(frame, CFG), prepare_frame(open_image_pyav(path), CFG))


def test_rgb_pngs_take_opencvs_path(tmp_path):
    # the counterpart of the test above: without it, a fast path never taken would pass every test here
    path = tmp_path / "frame_1.png"
    av.VideoFrame.from_ndarray(np.zeros((6, 10, 3), np.uint8), format="rgb24").save(str(path))
    assert open_image(path).format.name == "bgr24"


def test_a_truncated_png_is_named_as_unreadable(tmp_path):
    image = np.random.default_rng(1).integers(0, 256, (64, 64, 3), dtype=np.uint8)
    whole = tmp_path / "whole.png"
    av.VideoFrame.from_ndarray(image, format="rgb24").save(str(whole))
    cut = tmp_path / "frame_7.png"
    cut.write_bytes(whole.read_bytes()[: whole.stat().st_size // 2])
    with pytest.raises(InputError, match="frame_7.png: not a readable image"):
        open_image(cut)
