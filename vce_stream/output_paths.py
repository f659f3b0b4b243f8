"""Checks on output paths, made before any frame is scored: nothing a user passes may overwrite an
input or another output, and an output that cannot be written is found at once, not after the exam.

An output is refused (InputError, exit 2) when it is a folder, is one of the inputs (the same file,
through any path or link), lies inside an input folder (a frame folder, the model bundle), is the same
file as another output, or its folder cannot take a new file (checked by creating and removing a
temporary file there: read-only folders, missing permissions, and a full disk that cannot even create
a file are all caught).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

from vce_stream.errors import InputError


def _real(path: str | os.PathLike[str]) -> Path:
    return Path(os.path.realpath(os.path.abspath(path)))


def _inside(path: Path, folder: Path) -> bool:
    return path == folder or folder in path.parents


def check_outputs(outputs: Sequence[tuple[str, str | os.PathLike[str]]], inputs: Sequence[str | os.PathLike[str]] = ()) -> None:
    """Refuse unusable outputs; `outputs` are (what, path) pairs, e.g. ("event JSON", "events.json").

    `inputs` are files or folders read by the run ("-" for stdin is ignored). Creates missing parent
    folders of the outputs (as writing them would).
    """
    real_inputs = [(_real(p), Path(p)) for p in inputs if str(p) != "-"]
    seen: dict[Path, str] = {}
    for what, raw in outputs:
        path = Path(raw)
        real = _real(path)
        if path.is_dir():
            raise InputError(f"{path}: is a folder; the {what} must be a file path")
        for real_input, given in real_inputs:
            if real == real_input or (path.exists() and real_input.exists() and os.path.samefile(real, real_input)):
                raise InputError(f"{path}: the {what} would overwrite the input {given}; choose another path")
            if real_input.is_dir() and _inside(real, real_input):
                raise InputError(f"{path}: the {what} would be written inside the input folder {given}; choose a path outside it")
        if real in seen:
            raise InputError(f"{path}: given as both the {seen[real]} and the {what}; each output needs its own path")
        seen[real] = what
        check_writable(path, what)


def check_writable(path: Path, what: str) -> None:
    """Create the folder of `path` if needed, then create and remove a temporary file in it."""
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        raise InputError(f"{path}: cannot write the {what} there (part of its folder path is a file)") from None
    except OSError as exc:
        raise InputError(f"{path}: cannot write the {what} there ({exc.strerror or exc})") from None
    try:
        handle, probe = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".probe", dir=path.parent)
        os.close(handle)
        os.unlink(probe)
    except OSError as exc:
        raise InputError(f"{path}: cannot write the {what} there ({exc.strerror or exc})") from None
