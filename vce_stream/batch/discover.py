"""Finding the exams of an archive, and naming their outputs so that no name leaves OUTDIR.

An exam is a video file (by suffix) or a frame folder (a folder holding `frame_<n>.png`/`.jpg` files;
it is a leaf: nothing under it is searched). The walk is sorted, so the same archive always gives the
same exams in the same order. It never leaves the archive: symbolic links that resolve outside it are
skipped and reported (a frame folder holding even one frame file that links outside is skipped whole:
scoring it without that frame would leave a silent hole), linked folders are not descended into (no loops), hidden entries are ignored,
and so is OUTDIR when it lies inside the archive.

An exam's identity (its journal key) is its path relative to the archive. Its video id is what `run`
would use (file stem or folder name); when several exams share one, each takes its relative path
instead, so the combined submission never holds a video twice. Output names are derived from the id
and are single, safe path components (see `safe_component`).
"""

from __future__ import annotations

import hashlib
import os
import re
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path

from vce_stream.errors import InputError
from vce_stream.sources.folder import FRAME_NAME

VIDEO_SUFFIXES = frozenset(
    {".mp4", ".m4v", ".mkv", ".webm", ".avi", ".mov", ".ts", ".mts", ".m2ts", ".mpg", ".mpeg", ".wmv", ".flv"}
)
# Output names: letters, digits, dot, dash, underscore; no leading dot or dash (hidden files, options).
_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
MAX_NAME_CHARS = 96  # leaves room for a hash suffix and ".json" within every filesystem's 255 bytes
HASH_CHARS = 10


@dataclass(frozen=True)
class Exam:
    """One exam of the archive.

    key: its path relative to the archive (POSIX separators; "." when the archive is itself a frame
        folder): its identity in the journal.
    path: the absolute path of the video file or frame folder.
    kind: "video" or "frames".
    video_id: the id written in the event JSON.
    name: the stem of its output files in OUTDIR: one safe path component, unique in the archive.
    labels_csv: a Galar label CSV mapping the folder's file numbers to frame indices, if one was found.
    """

    key: str
    path: Path
    kind: str
    video_id: str
    name: str
    labels_csv: Path | None = None


@dataclass(frozen=True)
class Skipped:
    """An archive entry that looked like an exam but is not scored, and why."""

    key: str
    reason: str


@dataclass(frozen=True)
class Discovery:
    exams: tuple[Exam, ...]
    skipped: tuple[Skipped, ...]


def short_hash(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8", "surrogateescape")).hexdigest()[:HASH_CHARS]


def safe_component(text: str) -> str:
    """`text` as one harmless file name: never empty, ".", "..", hidden, absolute or containing a separator.

    Unsafe runs become "_", and a name that had to change gets a hash of the original appended, so two
    different ids never map to the same name ("a/b" and "a_b" stay apart).
    """
    cleaned = _UNSAFE.sub("_", text).lstrip(".-")[:MAX_NAME_CHARS] or "exam"
    if cleaned != text:
        cleaned = f"{cleaned}-{short_hash(text)}"
    return cleaned


def assign_names(video_ids: dict[str, str]) -> dict[str, str]:
    """Exam key -> output name: `safe_component` of the video id, plus a hash of the key for names that
    would collide on a case-insensitive filesystem ("Exam" and "exam")."""
    base = {key: safe_component(video_id) for key, video_id in video_ids.items()}
    groups: dict[str, list[str]] = defaultdict(list)
    for key, name in base.items():
        groups[name.lower()].append(key)
    names = {}
    for keys in groups.values():
        for key in keys:
            names[key] = base[key] if len(keys) == 1 else f"{base[key]}-{short_hash(key)}"
    return names


def output_path(root: Path, name: str, suffix: str = ".json") -> Path:
    """`root/<name><suffix>`, refusing any name that would land anywhere but directly in `root`."""
    if not name or name in (".", "..") or "/" in name or "\\" in name or "\0" in name or name.startswith("."):
        raise ValueError(f"unsafe output name {name!r}")
    path = root / f"{name}{suffix}"
    if path.parent.resolve() != root.resolve() or path.name != f"{name}{suffix}":
        raise ValueError(f"output name {name!r} escapes {root}")
    return path


def _inside(path: Path, root: Path) -> bool:
    try:
        path.resolve().relative_to(root)
    except ValueError:
        return False
    return True


def _has_frames(folder: str) -> bool:
    try:
        with os.scandir(folder) as entries:
            return any(FRAME_NAME.match(e.name) and e.is_file() for e in entries)
    except OSError:
        return False


def _links_out(folder: Path, root: Path) -> str | None:
    """Why frame folder `folder` may not be scored: frame files that are links resolving outside the
    archive (or dangling), which a frame source would follow; None when every frame file stays inside."""
    outside: list[str] = []
    try:
        with os.scandir(folder) as entries:
            for entry in entries:
                if FRAME_NAME.match(entry.name) and entry.is_symlink():
                    try:
                        target = Path(entry.path).resolve(strict=True)
                        target.relative_to(root)
                    except (OSError, RuntimeError, ValueError):
                        outside.append(entry.name)
    except OSError as exc:
        return f"unreadable ({exc.strerror or exc})"
    if not outside:
        return None
    return f"{len(outside)} frame file(s) link outside the archive (first: {sorted(outside)[0]})"


def discover(
    archive: str | os.PathLike[str], *, exclude: str | os.PathLike[str] | None = None, labels_dir: str | os.PathLike[str] | None = None
) -> Discovery:
    """Every exam under `archive` (see the module docstring).

    exclude: a folder not to search (OUTDIR, when it lies inside the archive).
    labels_dir: a folder of Galar label CSVs; a frame folder `<id>` uses `<labels_dir>/<id>.csv` if present.
    Raises InputError when `archive` is not a readable folder.
    """
    root = Path(archive)
    if not root.exists():
        raise InputError(f"{root}: archive folder not found")
    if not root.is_dir():
        raise InputError(f"{root}: an archive is a folder of exams (video files and frame folders), not a file")
    root = root.resolve()
    excluded = {Path(p).resolve() for p in (exclude, labels_dir) if p is not None}
    found: list[tuple[str, Path, str]] = []  # key, path, kind
    skipped: list[Skipped] = []

    def walk_error(exc: OSError) -> None:
        skipped.append(Skipped(_relative(Path(exc.filename or root), root), f"unreadable ({exc.strerror or exc})"))

    def add_frames(key: str, path: Path) -> None:
        problem = _links_out(path, root)
        if problem is None:
            found.append((key, path, "frames"))
        else:
            skipped.append(Skipped(key, problem))

    if _has_frames(str(root)):
        add_frames(".", root)
    else:
        for dirpath, dirnames, filenames in os.walk(root, onerror=walk_error):
            here = Path(dirpath)
            dirnames.sort()
            keep = []
            for d in dirnames:
                path = here / d
                key = _relative(path, root)
                if d.startswith(".") or path.resolve() in excluded:
                    continue
                if path.is_symlink():
                    if not _inside(path, root):
                        skipped.append(Skipped(key, "symbolic link to a folder outside the archive"))
                    elif _has_frames(str(path)):
                        add_frames(key, path)
                    continue  # linked folders are never walked into
                if _has_frames(str(path)):
                    add_frames(key, path)
                else:
                    keep.append(d)
            dirnames[:] = keep
            for f in sorted(filenames):
                path = here / f
                if f.startswith(".") or path.suffix.lower() not in VIDEO_SUFFIXES:
                    continue
                key = _relative(path, root)
                if path.is_symlink() and not _inside(path, root):
                    skipped.append(Skipped(key, "symbolic link to a file outside the archive"))
                    continue
                found.append((key, path, "video"))
    found.sort(key=lambda item: item[0])
    return Discovery(_name_exams(found, root, labels_dir), tuple(sorted(skipped, key=lambda s: s.key)))


def _relative(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix() or "."
    except ValueError:
        return path.as_posix()


def _name_exams(found: list[tuple[str, Path, str]], root: Path, labels_dir: str | os.PathLike[str] | None) -> tuple[Exam, ...]:
    """Video ids (relative paths where the plain id is shared) and output names."""
    plain = {key: (root.name if key == "." else (path.stem if kind == "video" else path.name)) for key, path, kind in found}
    counts: dict[str, int] = defaultdict(int)
    for video_id in plain.values():
        counts[video_id] += 1
    video_ids = {key: (video_id if counts[video_id] == 1 else key) for key, video_id in plain.items()}
    names = assign_names(video_ids)
    exams = []
    for key, path, kind in found:
        csv = None
        if labels_dir is not None and kind == "frames":
            candidate = Path(labels_dir) / f"{path.name}.csv"
            csv = candidate if candidate.is_file() else None
        exams.append(Exam(key, path, kind, video_ids[key], names[key], csv))
    return tuple(exams)
