"""Files of a Hugging Face hub repository, found in the local hub cache without any network.

huggingface_hub keeps a downloaded repository as

    <cache>/models--<owner>--<name>/refs/<branch>        a file holding the commit hash
    <cache>/models--<owner>--<name>/snapshots/<commit>/  the files, as links into ../../blobs/

(huggingface_hub docs, "Manage the cache"). The cache folder is resolved when asked, from the same
environment variables huggingface_hub reads (HF_HUB_CACHE, else HF_HOME/hub, else
XDG_CACHE_HOME/huggingface/hub, else ~/.cache/huggingface/hub), so a test or a user can point it
anywhere. The revision read from `refs/` is checked to be a plain name and every file found must lie
inside the repository's folder (a link out of it is refused).
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from vce_stream.errors import InputError

_REVISION = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,127}$")
_REPO_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,95}/[A-Za-z0-9][A-Za-z0-9._-]{0,95}$")
_MAX_REF_BYTES = 256


def hub_cache_dir() -> Path:
    """The hub cache folder huggingface_hub would use now (environment read at call time)."""
    if os.environ.get("HF_HUB_CACHE"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HUB_CACHE"])))
    if os.environ.get("HF_HOME"):
        return Path(os.path.expandvars(os.path.expanduser(os.environ["HF_HOME"]))) / "hub"
    xdg = os.environ.get("XDG_CACHE_HOME") or os.path.join(os.path.expanduser("~"), ".cache")
    return Path(xdg) / "huggingface" / "hub"


def hub_offline() -> bool:
    """True when HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) asks for no network, read at call time."""
    value = os.environ.get("HF_HUB_OFFLINE") or os.environ.get("TRANSFORMERS_OFFLINE") or ""
    return value.strip().upper() in ("1", "ON", "YES", "TRUE")


def repo_folder(repo_id: str, cache: Path | None = None) -> Path:
    """`<cache>/models--owner--name` for `owner/name` (the folder need not exist)."""
    if not _REPO_ID.match(repo_id):
        raise InputError(f"{repo_id!r}: not a hub model id of the form owner/name")
    return (cache or hub_cache_dir()) / ("models--" + repo_id.replace("/", "--"))


def is_repo_folder(path: Path) -> bool:
    """Whether `path` looks like a cached repository folder (`models--*` with `snapshots/`)."""
    return path.name.startswith("models--") and (path / "snapshots").is_dir()


def enclosing_repo(folder: Path) -> Path | None:
    """The cached repository folder when `folder` is one of its snapshots (`models--*/snapshots/<rev>`)."""
    repo = folder.parent.parent
    return repo if folder.parent.name == "snapshots" and is_repo_folder(repo) else None


def snapshot_folder(repo: Path, revision: str = "main") -> Path:
    """The snapshot folder of `revision` (a branch in `refs/` or a commit hash) in cached repository `repo`."""
    if not _REVISION.match(revision):
        raise InputError(f"{revision!r}: not a plain revision name")
    ref = repo / "refs" / revision
    commit = revision
    if ref.is_file():
        try:
            with open(ref, "rb") as handle:
                commit = handle.read(_MAX_REF_BYTES + 1).decode("ascii", "replace").strip()
        except OSError as exc:
            raise InputError(f"{ref}: cannot read ({exc.strerror})") from None
        if not _REVISION.match(commit):
            raise InputError(f"{ref}: does not hold a commit hash")
    snapshot = repo / "snapshots" / commit
    if not snapshot.is_dir():
        raise InputError(f"{snapshot}: no such snapshot in the hub cache (revision {revision!r})")
    return snapshot


def confined_file(folder: Path, name: str, root: Path) -> Path | None:
    """`folder/name` if it is a file whose real location lies inside `root`; None if absent.

    A name with a folder part, or a link that leads out of `root`, is an InputError.
    """
    if Path(name).name != name or name in (".", ".."):
        raise InputError(f"{name!r}: not a plain file name")
    candidate = folder / name
    if not candidate.exists():
        return None
    real = candidate.resolve()
    if not real.is_relative_to(root.resolve()):
        raise InputError(f"{candidate}: leads outside {root} (refused)")
    return candidate if real.is_file() else None


def cached_file(repo_id: str, filename: str, revision: str = "main") -> Path | None:
    """`filename` of hub repository `repo_id` in the local cache, or None when it is not cached."""
    repo = repo_folder(repo_id)
    if not repo.is_dir():
        return None
    try:
        snapshot = snapshot_folder(repo, revision)
    except InputError:
        if (repo / "refs" / revision).exists() or (repo / "snapshots" / revision).exists():
            raise
        return None
    return confined_file(snapshot, filename, repo)
