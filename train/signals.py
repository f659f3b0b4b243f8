"""Stopping a training run cleanly: SIGINT/SIGTERM end it at the next step boundary with a checkpoint.

The run then raises `TrainingInterrupted` (exit status 130); `--resume` continues from the checkpoint.
"""

from __future__ import annotations

import contextlib
import signal
import threading
from collections.abc import Iterator

from vce_stream.errors import EXIT_INTERRUPTED, VceError


class TrainingInterrupted(VceError):
    """SIGINT/SIGTERM during training: the checkpoint was written; `--resume` continues."""

    exit_code = EXIT_INTERRUPTED


@contextlib.contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGINT/SIGTERM, so the loop stops at a step boundary and checkpoints."""
    requested = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        yield requested
        return
    previous = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    for sig in previous:
        signal.signal(sig, lambda *_: requested.set())
    try:
        yield requested
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
