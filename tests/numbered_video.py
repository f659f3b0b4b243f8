"""Test helper: videos whose frames carry their own number in big blocks, read back after decoding.

The number is written as 12 bits plus their 12 complements in a 5x5 grid of flat grey blocks (black or
white), so it survives lossy coding, and a picture that is not one clean frame (concealed damage, a
blend of two frames) reads as None instead of as a wrong number.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
import numpy as np

BITS = 12
GRID = 5


def numbered_image(number: int, size: int = 64) -> np.ndarray:
    """An RGB (size, size, 3) picture that encodes `number` (0 <= number < 4096)."""
    bits = [(number >> k) & 1 for k in range(BITS)]
    bits += [1 - b for b in bits]
    image = np.full((size, size, 3), 128, np.uint8)
    cell = size // GRID
    for i, bit in enumerate(bits):
        y, x = divmod(i, GRID)
        image[y * cell : (y + 1) * cell, x * cell : (x + 1) * cell] = 235 if bit else 20
    return image


def read_number(image: np.ndarray) -> int | None:
    """The number `numbered_image` wrote into an RGB picture, or None if the picture is not a clean one."""
    size = image.shape[0]
    cell = size // GRID
    grey = image.astype(np.float32).mean(axis=2)
    inset = cell // 4
    means = np.array(
        [grey[y * cell + inset : (y + 1) * cell - inset, x * cell + inset : (x + 1) * cell - inset].mean() for y in range(GRID) for x in range(GRID)]
    )[: 2 * BITS]
    if ((means > 64) & (means < 192)).any():
        return None
    bits = (means > 128).astype(int)
    if not (bits[BITS:] == 1 - bits[:BITS]).all():
        return None
    return int(sum(int(b) << k for k, b in enumerate(bits[:BITS])))


def write_numbered_video(
    path: Path, count: int, *, size: int = 64, rate: int = 25, fmt: str | None = None, gop: int | None = None, pts: list[int] | None = None
) -> Path:
    """Encode frames 0..count-1 (each showing its number) with libx264; `pts` (in frames) may leave holes."""
    with av.open(str(path), "w", format=fmt) as container:
        stream = container.add_stream("libx264", rate=rate)
        stream.width = stream.height = size
        stream.pix_fmt = "yuv420p"
        if gop is not None:
            stream.codec_context.gop_size = gop
        for i in range(count):
            frame = av.VideoFrame.from_ndarray(numbered_image(i, size), format="rgb24")
            frame.pts = i if pts is None else pts[i]
            frame.time_base = Fraction(1, rate)
            container.mux(stream.encode(frame))
        container.mux(stream.encode(None))
    return path


def damage(data: bytes, start: int, length: int, seed: int = 0) -> bytes:
    """`data` with `length` random bytes written from `start` (clipped to the end)."""
    out = bytearray(data)
    end = min(len(out), start + length)
    out[start:end] = np.random.default_rng(seed).integers(0, 256, end - start, dtype=np.uint8).tobytes()
    return bytes(out)
