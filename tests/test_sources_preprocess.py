"""The one frame preparation (FFmpeg's scaler + centre crop), shared by the pipeline and training."""

from __future__ import annotations

import shutil
import subprocess

import av
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.sources.preprocess import PreprocessConfig
from vce_stream.errors import InputError
from vce_stream.sources.preprocess import PACKED_FORMATS, crop_origin, open_image, prepare_frame, read_image, scaled_size


def _image(height: int, width: int, seed: int = 0) -> np.ndarray:
    """A smooth gradient plus noise: resizing it with different filters gives visibly different pixels."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width]
    base = np.stack([x * 255 / width, y * 255 / height, (x + y) % 64 * 4], axis=-1)
    return np.clip(base + rng.normal(0, 20, base.shape), 0, 255).astype(np.uint8)


@given(st.integers(16, 4000), st.integers(16, 4000), st.integers(8, 512))
def test_scaled_size_puts_the_short_side_at_size_and_keeps_the_aspect(width, height, size):
    w, h = scaled_size(width, height, size)
    assert min(w, h) == size
    assert max(w, h) >= size
    # the long side is the rounded aspect-preserving length
    if width <= height:
        assert abs(h - height * size / width) <= 0.5 or h == size
    else:
        assert abs(w - width * size / height) <= 0.5 or w == size


@given(st.integers(8, 600), st.integers(0, 400), st.integers(0, 400))
def test_crop_origin_centres_the_square_inside_the_image(size, extra_w, extra_h):
    x0, y0 = crop_origin(size + extra_w, size + extra_h, size)
    assert 0 <= x0 and x0 + size <= size + extra_w and abs((size + extra_w - size - x0) - x0) <= 1
    assert 0 <= y0 and y0 + size <= size + extra_h and abs((size + extra_h - size - y0) - y0) <= 1


@pytest.mark.parametrize("shape", [(480, 480), (336, 336), (240, 320), (320, 240), (225, 224)])
def test_prepare_frame_gives_uint8_rgb_squares_of_the_model_size(shape):
    frame = av.VideoFrame.from_ndarray(_image(*shape), format="rgb24")
    out = prepare_frame(frame, PreprocessConfig(size=224))
    assert out.shape == (224, 224, 3) and out.dtype == np.uint8


def test_prepare_frame_writes_into_the_given_buffer_slot():
    frame = av.VideoFrame.from_ndarray(_image(300, 400), format="rgb24")
    batch = np.zeros((3, 64, 64, 3), dtype=np.uint8)
    returned = prepare_frame(frame, PreprocessConfig(size=64), batch[1])
    assert returned is batch[1] or np.shares_memory(returned, batch)
    assert np.array_equal(batch[1], prepare_frame(frame, PreprocessConfig(size=64)))
    assert not batch[0].any() and not batch[2].any()


def test_prepare_frame_rejects_a_buffer_of_the_wrong_shape():
    frame = av.VideoFrame.from_ndarray(_image(64, 64), format="rgb24")
    with pytest.raises(ValueError):
        prepare_frame(frame, PreprocessConfig(size=32), np.zeros((31, 32, 3), np.uint8))


def test_centre_crop_keeps_the_middle_of_a_wide_frame():
    # A wide frame whose left and right quarters are black: after the crop only the white middle remains.
    image = np.zeros((100, 200, 3), np.uint8)
    image[:, 40:160] = 255
    out = prepare_frame(av.VideoFrame.from_ndarray(image, format="rgb24"), PreprocessConfig(size=50))
    assert out[:, 5:45].min() >= 250


def test_the_configured_filter_is_used_and_differs_from_pil_antialiased_bicubic():
    from PIL import Image

    image = _image(480, 480)
    frame = av.VideoFrame.from_ndarray(image, format="rgb24")
    bicubic = prepare_frame(frame, PreprocessConfig(size=224, interpolation="bicubic"))
    bilinear = prepare_frame(frame, PreprocessConfig(size=224, interpolation="bilinear"))
    assert not np.array_equal(bicubic, bilinear)  # the configured filter is the one used
    pil = np.asarray(Image.fromarray(image).resize((224, 224), Image.Resampling.BICUBIC))
    assert np.abs(bicubic.astype(int) - pil.astype(int)).max() > 1  # why training must share this path


@pytest.mark.skipif(shutil.which("ffmpeg") is None, reason="the ffmpeg command line is not installed")
def test_prepare_frame_matches_the_ffmpeg_command_line_scaler(tmp_path):
    """The same swscale bicubic the `ffmpeg` CLI uses (its scale filter's default), pixel for pixel."""
    path = tmp_path / "in.png"
    image = _image(480, 480, seed=3)
    av.VideoFrame.from_ndarray(image, format="rgb24").save(str(path))
    raw = subprocess.run(
        ["ffmpeg", "-v", "error", "-i", str(path), "-vf", "scale=224:224:flags=bicubic", "-pix_fmt", "rgb24", "-f", "rawvideo", "-"],
        check=True,
        capture_output=True,
    ).stdout
    expected = np.frombuffer(raw, np.uint8).reshape(224, 224, 3)
    ours = read_image(path, PreprocessConfig(size=224))
    assert np.abs(ours.astype(int) - expected.astype(int)).max() <= 1


def test_read_image_prepares_a_png_exactly_as_the_pipeline_prepares_the_same_frame(tmp_path):
    """Training reads PNGs, the pipeline decodes video: both go through prepare_frame, so pixels agree."""
    image = _image(336, 336, seed=1)
    png = tmp_path / "frame_000001.PNG"  # Galar's upper-case extension
    av.VideoFrame.from_ndarray(image, format="rgb24").save(str(tmp_path / "x.png"))
    (tmp_path / "x.png").rename(png)
    video = tmp_path / "lossless.mkv"
    with av.open(str(video), "w") as container:
        stream = container.add_stream("ffv1", rate=1)
        stream.width, stream.height, stream.pix_fmt = 336, 336, "bgr0"
        container.mux(stream.encode(av.VideoFrame.from_ndarray(image, format="rgb24").reformat(format="bgr0")))
        container.mux(stream.encode(None))
    with av.open(str(video)) as container:
        decoded = next(container.decode(video=0))
    cfg = PreprocessConfig(size=224)
    assert np.array_equal(read_image(png, cfg), prepare_frame(decoded, cfg))


def test_read_image_reads_jpeg_too(tmp_path):
    path = tmp_path / "frame_7.jpg"
    av.VideoFrame.from_ndarray(_image(120, 160), format="rgb24").save(str(path))
    out = read_image(path, PreprocessConfig(size=96))
    assert out.shape == (96, 96, 3) and out.std() > 10


def test_unreadable_and_missing_images_raise_input_errors_naming_the_file(tmp_path):
    broken = tmp_path / "frame_3.png"
    broken.write_bytes(b"\x89PNG\r\n\x1a\n not really a png")
    with pytest.raises(InputError, match="frame_3.png: not a readable image"):
        read_image(broken, PreprocessConfig())
    with pytest.raises(InputError, match="frame_4.png: file not found"):
        open_image(tmp_path / "frame_4.png")


@settings(max_examples=15, deadline=None)
@given(st.integers(9, 200), st.integers(9, 200))
def test_any_frame_size_becomes_the_model_size(width, height):
    width, height = width * 2, height * 2  # yuv420p needs even sizes
    frame = av.VideoFrame.from_ndarray(_image(height, width), format="rgb24").reformat(format="yuv420p")
    assert prepare_frame(frame, PreprocessConfig(size=16)).shape == (16, 16, 3)


@settings(max_examples=60, deadline=None)
@given(
    width=st.integers(1, 97),
    height=st.integers(1, 97),
    fmt=st.sampled_from(["rgb24", "bgr24", "bgra", "rgba", "argb", "abgr", "gray"]),
    size=st.sampled_from([8, 24, 32]),
    seed=st.integers(0, 2**16),
)
def test_packed_frames_and_the_plane_view_give_pyavs_own_pixels(width, height, fmt, size, seed):
    # Reference: PyAV's own copies (from_ndarray, to_ndarray), which hold the GIL; widths that are not
    # a multiple of FFmpeg's line alignment make it pad its lines, which the views must skip.
    from vce_stream.sources.preprocess import packed_frame

    channels = PACKED_FORMATS[fmt]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    theirs_in = pixels[:, :, 0] if fmt == "gray" else pixels
    ours, theirs = packed_frame(pixels, fmt), av.VideoFrame.from_ndarray(theirs_in, format=fmt)
    assert np.array_equal(ours.to_ndarray(), theirs.to_ndarray())
    cfg = PreprocessConfig(size=size)
    w, h = scaled_size(width, height, size)
    scaled = theirs.reformat(w, h, "rgb24", interpolation="BICUBIC").to_ndarray()
    x0, y0 = crop_origin(w, h, size)
    assert np.array_equal(prepare_frame(ours, cfg), scaled[y0 : y0 + size, x0 : x0 + size])


def _vflipped(pixels: np.ndarray, fmt: str) -> av.VideoFrame:
    """`pixels` through FFmpeg's vflip filter: a frame stored bottom-up (negative line size)."""
    from fractions import Fraction

    from av.filter import Graph

    graph = Graph()
    height, width = pixels.shape[:2]
    source = graph.add_buffer(width=width, height=height, format=fmt, time_base=Fraction(1, 25))
    flip, sink = graph.add("vflip"), graph.add("buffersink")
    source.link_to(flip)
    flip.link_to(sink)
    graph.configure()
    frame = av.VideoFrame.from_ndarray(pixels, format=fmt)
    frame.pts = 0
    graph.push(frame)
    return graph.pull()


@settings(max_examples=30, deadline=None)
@given(
    width=st.integers(1, 64),
    height=st.integers(1, 64),
    fmt=st.sampled_from(["rgb24", "bgr24", "rgba"]),
    size=st.sampled_from([8, 16, 32]),
    at_model_size=st.booleans(),
    seed=st.integers(0, 2**16),
)
def test_bottom_up_frames_are_prepared_the_right_way_up(width, height, fmt, size, at_model_size, seed):
    # A vflip filter hands on frames with a negative line size. When the frame is already rgb24 at the
    # model size, swscale has nothing to do and PyAV returns the frame itself: its rows run backwards
    # in memory, and must still come out top row first. Half the cases are drawn at exactly that size.
    if at_model_size:
        width = height = size
    channels = PACKED_FORMATS[fmt]
    pixels = np.random.default_rng(seed).integers(0, 256, (height, width, channels), dtype=np.uint8)
    flipped = _vflipped(pixels, fmt)
    assert flipped.planes[0].line_size < 0
    assert np.array_equal(flipped.to_ndarray(), pixels[::-1])  # PyAV's own reading of it
    cfg = PreprocessConfig(size=size)
    w, h = scaled_size(width, height, size)
    upright = av.VideoFrame.from_ndarray(np.ascontiguousarray(pixels[::-1]), format=fmt)
    expected = upright.reformat(w, h, "rgb24", interpolation="BICUBIC").to_ndarray()
    x0, y0 = crop_origin(w, h, size)
    assert np.array_equal(prepare_frame(flipped, cfg), expected[y0 : y0 + size, x0 : x0 + size])


def test_a_bottom_up_rgb_frame_at_the_model_size_is_not_read_upside_down():
    # The exact case the plane view got wrong: nothing for swscale to do, so the view saw raw memory.
    pixels = _image(32, 32)
    assert np.array_equal(prepare_frame(_vflipped(pixels, "rgb24"), PreprocessConfig(size=32)), pixels[::-1])


@pytest.mark.parametrize(
    "shape, dtype, fmt, problem",
    [
        ((4, 4, 3), np.uint16, "rgb24", "uint8"),
        ((4, 4, 3), np.float32, "rgb24", "uint8"),
        ((4, 4, 4), np.uint8, "rgb24", "(H, W, 3)"),
        ((4, 4, 3), np.uint8, "bgra", "(H, W, 4)"),
        ((4, 12), np.uint8, "rgb24", "(H, W, 3)"),
        ((0, 4, 3), np.uint8, "rgb24", "(H, W, 3)"),
        ((4, 4, 3), np.uint8, "yuv420p", "pixel format"),
        ((4, 4, 3), np.uint8, "rgb48le", "pixel format"),
    ],
)
def test_packed_frame_refuses_pixels_that_do_not_fit_the_format(shape, dtype, fmt, problem):
    from vce_stream.sources.preprocess import packed_frame

    with pytest.raises(ValueError, match=problem.replace("(", r"\(").replace(")", r"\)")):
        packed_frame(np.zeros(shape, dtype), fmt)


def test_the_plane_view_refuses_a_bottom_up_frame():
    from vce_stream.sources.preprocess import packed_rows

    with pytest.raises(ValueError, match="line size"):
        packed_rows(_vflipped(_image(8, 8), "rgb24"), 24)
