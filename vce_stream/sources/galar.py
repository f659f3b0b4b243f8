"""Galar label CSVs as a frame-index map (SPEC §4, §5).

A Galar CSV has columns `index`, `section`, `frame`, then one 0/1 column per label. `frame` is the image
file number and `index` the frame index the ground truth uses; for some videos frame = 5 x index, so
file numbers must never stand in for indices where a CSV exists.
"""

from __future__ import annotations

import csv
import os
from pathlib import Path

from vce_stream.errors import InputError


def read_galar_index(path: str | os.PathLike[str]) -> dict[int, int]:
    """File number -> frame index, from a Galar label CSV; InputError naming the file on any defect."""
    path = Path(path)
    try:
        with open(path, newline="", encoding="utf-8-sig") as handle:
            reader = csv.DictReader(handle)
            columns = reader.fieldnames or []
            missing = [name for name in ("index", "frame") if name not in columns]
            if missing:
                raise InputError(f"{path}: not a Galar label CSV (no {' or '.join(missing)} column)")
            mapping: dict[int, int] = {}
            seen_index: set[int] = set()
            for row in reader:
                line = reader.line_num
                try:
                    number, index = int(row["frame"]), int(row["index"])
                except (TypeError, ValueError):
                    raise InputError(f"{path}: line {line}: frame and index must be whole numbers") from None
                if number in mapping:
                    raise InputError(f"{path}: line {line}: frame {number} appears twice")
                if index in seen_index:
                    raise InputError(f"{path}: line {line}: index {index} appears twice")
                mapping[number] = index
                seen_index.add(index)
    except FileNotFoundError:
        raise InputError(f"{path}: file not found") from None
    except (UnicodeDecodeError, csv.Error) as exc:
        raise InputError(f"{path}: not a readable CSV ({exc})") from None
    if not mapping:
        raise InputError(f"{path}: has no rows")
    return mapping
