"""Sources: where frames come from (video files, pipes, frame folders), and the one frame preparation.

`open_source` picks the source for an input; `preprocess.prepare_frame` turns any decoded frame into
model input, for the pipeline and for training alike.
"""

from __future__ import annotations

import os
from pathlib import Path

from vce_stream.errors import InputError
from vce_stream.sources.base import FrameSource, SourceConfig, SourceStats, StreamBroken
from vce_stream.sources.folder import FrameFolderSource
from vce_stream.sources.video import STDIN, VideoSource


def open_source(
    spec: str | os.PathLike[str], config: SourceConfig = SourceConfig(), *, labels_csv: str | os.PathLike[str] | None = None
) -> FrameSource:
    """A folder -> FrameFolderSource; "-" -> standard input; anything else -> VideoSource.

    Raises InputError (exit 2) when the input cannot start.
    """
    if str(spec) != STDIN and Path(spec).is_dir():
        return FrameFolderSource(spec, config, labels_csv=labels_csv)
    if labels_csv is not None:
        raise InputError(f"{labels_csv}: a Galar label CSV maps frame folders only, and {spec} is not a folder")
    return VideoSource(spec, config)


__all__ = ["FrameFolderSource", "FrameSource", "SourceConfig", "SourceStats", "StreamBroken", "VideoSource", "open_source"]
