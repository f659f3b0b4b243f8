"""The one frame preparation used by `run` and by training: FFmpeg's scaler, then a centre crop.

Why one function: FFmpeg's bicubic scaler (swscale) and PIL's antialiased bicubic give different
pixels, and a model trained on one and run on the other loses accuracy for no reason. So training reads
its PNG/JPG frames through `read_image`, which decodes them with PyAV and calls `prepare_frame`, the very
function the streaming pipeline calls on decoded video frames.

Contract: the short side is scaled to `cfg.size` by swscale with `cfg.interpolation` (colour conversion
to RGB in the same pass, honouring the frame's colour space and range), then the centre
`size` x `size` square is kept. Output: uint8 (size, size, 3) RGB. Normalisation is not done here: it
belongs to the engine (on the device).
"""

from __future__ import annotations

import os
import threading
from dataclasses import dataclass
from pathlib import Path

import av
import numpy as np
from av.video.reformatter import Interpolation, VideoReformatter

from vce_stream.errors import ConfigError, InputError
from vce_stream.limits import MAX_IMAGE_SIDE, check_maxima
from vce_stream.sources.base import ffmpeg_reason

@dataclass(frozen=True)
class PreprocessConfig:
    """How a decoded frame becomes model input (SPEC §7): short side to `size` with `interpolation`,
    centre crop `size` x `size`, uint8 RGB; then (x / 255 - mean) / std inside the model or engine."""

    size: int = 224
    interpolation: str = "bicubic"
    mean: tuple[float, float, float] = (0.48145466, 0.4578275, 0.40821073)
    std: tuple[float, float, float] = (0.26862954, 0.26130258, 0.27577711)

    def __post_init__(self) -> None:
        check_maxima(self, "preprocess.", {"size": MAX_IMAGE_SIDE})
        if self.size < 8:
            raise ConfigError(f"preprocess.size must be >= 8, got {self.size}")
        if len(self.mean) != 3 or len(self.std) != 3 or min(self.std) <= 0:
            raise ConfigError("preprocess.mean and preprocess.std need three values each, std > 0")


# PreprocessConfig.interpolation -> swscale algorithm. "bicubic" is what the ffmpeg CLI's scale filter uses.
INTERPOLATIONS: dict[str, Interpolation] = {
    "bicubic": Interpolation.BICUBIC,
    "bilinear": Interpolation.BILINEAR,
    "area": Interpolation.AREA,
    "lanczos": Interpolation.LANCZOS,
}

_local = threading.local()


def scaled_size(width: int, height: int, size: int) -> tuple[int, int]:
    """(width, height) with the short side equal to `size` and the aspect ratio kept (long side rounded)."""
    if width <= height:
        return size, max(size, round(height * size / width))
    return max(size, round(width * size / height)), size


def crop_origin(width: int, height: int, size: int) -> tuple[int, int]:
    """Top-left corner (x, y) of the centred `size` square inside a `width` x `height` image."""
    return (width - size) // 2, (height - size) // 2


def _reformatter() -> VideoReformatter:
    """One reformatter per thread: it caches its swscale context, which a fresh one per frame rebuilds."""
    reformatter = getattr(_local, "reformatter", None)
    if reformatter is None:
        reformatter = _local.reformatter = VideoReformatter()
    return reformatter


def _interpolation(cfg: PreprocessConfig) -> Interpolation:
    try:
        return INTERPOLATIONS[cfg.interpolation]
    except KeyError:
        raise ConfigError(f"preprocess.interpolation must be one of {sorted(INTERPOLATIONS)}, got {cfg.interpolation!r}") from None


def prepare_frame(
    frame: av.VideoFrame, cfg: PreprocessConfig, out: np.ndarray | None = None, *, threads: int = 1
) -> np.ndarray:
    """A decoded frame as model input: uint8 (S, S, 3) RGB, S = cfg.size (see the module docstring).

    out: a C-contiguous uint8 (S, S, 3) array to write into (a slot of a preallocated batch); returned.
    threads: swscale threads for this frame (1 keeps the decode thread on one core; 0 = all cores).
    """
    size = cfg.size
    width, height = scaled_size(frame.width, frame.height, size)
    scaled = _reformatter().reformat(
        frame, width, height, "rgb24", interpolation=_interpolation(cfg), threads=threads
    )
    x0, y0 = crop_origin(width, height, size)
    crop = _rgb_rows(scaled, width)[y0 : y0 + size, 3 * x0 : 3 * (x0 + size)].reshape(size, size, 3)
    if out is None:
        return np.array(crop, dtype=np.uint8, copy=True)
    if out.shape != (size, size, 3) or out.dtype != np.uint8:
        raise ValueError(f"out must be uint8 {(size, size, 3)}, got {out.dtype} {out.shape}")
    np.copyto(out, crop)
    return out


def open_image(path: str | os.PathLike[str]) -> av.VideoFrame:
    """Decode one PNG/JPG file; InputError naming the file.

    8-bit RGB/RGBA PNGs (what capsule exams ship) are decoded by OpenCV when it is installed: PNG is
    lossless, so the RGB values are the very ones FFmpeg's decoder gives (tested), and OpenCV's libpng
    path is about 1.3x faster here. OpenCV's BGR(A) order is handed to swscale as it is (`bgr24`,
    `bgra`): the scaler reorders the channels in the pass it makes anyway, with the same pixels (tested),
    and a frame costs one full-size pass less. Everything else (JPEG, whose IDCTs differ between decoders; grey,
    palette or 16-bit PNGs, whose conversion swscale does itself; files OpenCV cannot read) goes through
    PyAV, FFmpeg's decoders, as for videos. Training reads frames through this function too.
    """
    path = Path(path)
    if not path.is_file():
        raise InputError(f"{path}: file not found")
    frame = _png_frame_rgb8(path)
    return frame if frame is not None else open_image_pyav(path)


def png_is_rgb8(header: bytes) -> bool:
    """True for the first 26 bytes of an 8-bit RGB or RGBA PNG (IHDR bit depth 8, colour type 2 or 6)."""
    return len(header) >= 26 and header[:8] == b"\x89PNG\r\n\x1a\n" and header[12:16] == b"IHDR" and header[24] == 8 and header[25] in (2, 6)


def _png_frame_rgb8(path: Path) -> av.VideoFrame | None:
    """An 8-bit RGB/RGBA PNG decoded by OpenCV, as a `bgr24`/`bgra` frame (swscale drops the alpha, as it
    does for FFmpeg's `rgba`); None when OpenCV is absent or the file is anything else."""
    if path.suffix.lower() != ".png":
        return None
    try:
        import cv2
    except ImportError:
        return None
    try:
        with open(path, "rb") as handle:
            header = handle.read(26)
    except OSError as exc:
        raise InputError(f"{path}: cannot read ({exc.strerror or exc})") from None
    if not png_is_rgb8(header):
        return None
    data = cv2.imread(str(path), cv2.IMREAD_UNCHANGED)
    if data is None or data.dtype != np.uint8 or data.ndim != 3 or data.shape[2] not in (3, 4):
        return None  # PyAV decodes it, or names what is wrong with it
    return packed_frame(data, "bgr24" if data.shape[2] == 3 else "bgra")


PACKED_FORMATS: dict[str, int] = {"rgb24": 3, "bgr24": 3, "rgba": 4, "bgra": 4, "argb": 4, "abgr": 4, "gray": 1}
"""The packed 8-bit pixel formats `packed_frame` builds, with their channels per pixel."""


def packed_frame(pixels: np.ndarray, pixel_format: str) -> av.VideoFrame:
    """A frame of packed uint8 pixels (H, W, C) in `pixel_format` (one of PACKED_FORMATS), copied by numpy.

    Why not `av.VideoFrame.from_ndarray`: it copies the pixels holding the GIL (measured here: 165 µs of
    a 480x480 frame's 165 µs, py-spy --gil), which caps how many decode workers can run at once; numpy's
    copy releases it (5 µs of 61 µs held). Same pixels (tested). ValueError for anything else than
    uint8 pixels whose channels match the format, as from_ndarray would."""
    channels = PACKED_FORMATS.get(pixel_format)
    if channels is None:
        raise ValueError(f"packed_frame: pixel format must be one of {sorted(PACKED_FORMATS)}, got {pixel_format!r}")
    if pixels.dtype != np.uint8:
        raise ValueError(f"packed_frame: pixels must be uint8, got {pixels.dtype}")
    if pixels.ndim == 2 and channels == 1:
        pixels = pixels[:, :, None]
    if pixels.ndim != 3 or pixels.shape[2] != channels or pixels.shape[0] == 0 or pixels.shape[1] == 0:
        raise ValueError(f"packed_frame: {pixel_format} needs (H, W, {channels}) pixels, got shape {pixels.shape}")
    height, width, _ = pixels.shape
    frame = av.VideoFrame(width, height, pixel_format)
    np.copyto(packed_rows(frame, width * channels), pixels.reshape(height, width * channels))
    return frame


def packed_rows(frame: av.VideoFrame, row_bytes: int) -> np.ndarray:
    """The first plane of a packed-pixel frame as a writable uint8 view (height, row_bytes), without the
    padding FFmpeg may add at the end of each line. The view holds a reference to the frame's buffer, so
    the pixels stay valid while the view lives.

    Only for frames stored top row first (positive line size: every frame FFmpeg allocates itself, e.g.
    `av.VideoFrame(w, h, fmt)` or a scaler's output). A filter such as `vflip` hands on frames with a
    negative line size, whose rows run backwards in memory; how PyAV exposes their buffer has changed
    between versions, so those are refused here (ValueError) and read through PyAV's own `to_ndarray`."""
    plane = frame.planes[0]
    if plane.line_size < row_bytes:
        raise ValueError(f"packed_rows: line size {plane.line_size} < {row_bytes} bytes per row (a bottom-up frame?)")
    return np.frombuffer(plane, np.uint8).reshape(frame.height, plane.line_size)[:, :row_bytes]


def _rgb_rows(frame: av.VideoFrame, width: int) -> np.ndarray:
    """An rgb24 frame's pixels as uint8 rows (height, 3 * width), top row first.

    Usually a view of the scaler's output (no `to_ndarray`, whose copy holds the GIL), copied by the
    caller with numpy. When swscale has nothing to do (the frame is already rgb24 at the target size)
    PyAV returns the input frame itself, which may be stored bottom-up (negative line size, e.g. after a
    `vflip` filter): PyAV's `to_ndarray` reads those rows in display order."""
    if frame.planes[0].line_size >= 3 * width:
        return packed_rows(frame, 3 * width)
    return frame.to_ndarray().reshape(frame.height, 3 * width)


def open_image_pyav(path: str | os.PathLike[str]) -> av.VideoFrame:
    """Decode one image file with PyAV (FFmpeg's decoders); InputError naming the file."""
    path = Path(path)
    try:
        with av.open(str(path)) as container:
            for frame in container.decode(video=0):
                return frame
    except (av.error.FFmpegError, IndexError, ValueError) as exc:
        raise InputError(f"{path}: not a readable image ({ffmpeg_reason(exc)})") from None
    raise InputError(f"{path}: not a readable image (no picture in it)")


def read_image(path: str | os.PathLike[str], cfg: PreprocessConfig) -> np.ndarray:
    """A frame file prepared exactly as the pipeline prepares video frames: uint8 (S, S, 3) RGB."""
    return prepare_frame(open_image(path), cfg)
