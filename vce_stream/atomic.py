"""Atomic writes: a reader sees the old file (or directory) or the whole new one, never half of it.

Files: `atomic_open` and its two shorthands. Directories (a model bundle, an engine): `atomic_directory`
stages a fresh directory beside the target and renames it into place; `check_replaceable` and
`replace_directory` are its two halves, for a caller that stages the directory itself.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import IO

from vce_stream.errors import InputError


def _umask() -> int:
    umask = os.umask(0o022)
    os.umask(umask)
    return umask


_DEFAULT_MODE = 0o666 & ~_umask()


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike[str], mode: str = "w", encoding: str | None = "utf-8") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync it and rename it over `path`.

    On an exception the temporary file is removed and `path` is left untouched.
    """
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    binary = "b" in mode
    try:
        os.chmod(tmp_name, _DEFAULT_MODE)  # mkstemp makes 0600; give the file a normal file's mode
        with os.fdopen(fd, mode, encoding=None if binary else encoding) as handle:
            yield handle
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp_name, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)
        raise


def atomic_write_text(path: str | os.PathLike[str], text: str) -> None:
    with atomic_open(path, "w") as handle:
        handle.write(text)


def atomic_write_bytes(path: str | os.PathLike[str], data: bytes) -> None:
    with atomic_open(path, "wb") as handle:
        handle.write(data)


def check_replaceable(target: Path, marker: str, what: str) -> None:
    """Refuse (InputError) to replace `target` unless it is absent, an empty directory, or a directory
    holding `marker` (the file that makes it `what`, e.g. "a model bundle": the old one may go)."""
    if target.exists():
        if not target.is_dir():
            raise InputError(f"{target}: exists and is not a directory; refusing to overwrite it with {what}")
        if any(target.iterdir()) and not (target / marker).is_file():
            raise InputError(f"{target}: exists, is not empty and is not {what}; refusing to overwrite it")


def replace_directory(staged: Path, target: Path, *, marker: str, what: str, temp_prefix: str) -> None:
    """Rename the finished directory `staged` over `target` (checked with `check_replaceable`).

    An old `target` is first renamed aside (into a `temp_prefix` directory beside it) and removed only
    after the new one is in place, so `target` is always a whole old or a whole new directory.
    """
    check_replaceable(target, marker, what)
    old = None
    if target.exists():
        old = Path(tempfile.mkdtemp(prefix=f"{temp_prefix}old.", dir=target.parent))
        os.replace(target, old / "old")
    os.replace(staged, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)
    _fsync_dir(target.parent)


@contextlib.contextmanager
def atomic_directory(target: str | os.PathLike[str], *, marker: str, what: str, temp_prefix: str | None = None) -> Iterator[Path]:
    """Yield a fresh empty directory beside `target` to fill; on success it replaces `target` whole.

    `target` is checked first (`check_replaceable`); on an exception the staged directory is removed and
    `target` is left untouched. temp_prefix names the staged directories (default ".<target name>.").
    """
    target = Path(target)
    check_replaceable(target, marker, what)
    prefix = temp_prefix if temp_prefix is not None else f".{target.name}."
    target.parent.mkdir(parents=True, exist_ok=True)
    staged = Path(tempfile.mkdtemp(prefix=prefix, suffix=".tmp", dir=target.parent))
    try:
        os.chmod(staged, 0o777 & ~_umask())  # mkdtemp makes it private; give it a normal directory's mode
        yield staged
        replace_directory(staged, target, marker=marker, what=what, temp_prefix=prefix)
    except BaseException:
        shutil.rmtree(staged, ignore_errors=True)
        raise


def write_file_synced(path: Path, data: bytes) -> None:
    """Write `data` to a new file and fsync it (inside a staged directory, before it is renamed)."""
    with open(path, "wb") as handle:
        handle.write(data)
        handle.flush()
        os.fsync(handle.fileno())


def _fsync_dir(path: Path) -> None:
    """Make a rename in `path` durable (best effort: not every file system lets a directory be fsynced)."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)
