"""Errors users see, and the exit status each one maps to.

Every error a user can cause carries a one-line message naming the input and the problem. The CLI
turns them into `vce-stream: error: <message>` on stderr and the exit status below.
"""

from __future__ import annotations

# Exit statuses (documented in the README's CLI reference).
EXIT_OK = 0
EXIT_FAILED = 1  # an unexpected internal error (a bug): traceback printed
EXIT_BAD_INPUT = 2  # bad arguments or an input that cannot be used at all; nothing scored
EXIT_INCOMPLETE = 3  # the input (or a decode worker) broke part way; events decided so far were written, flagged incomplete
EXIT_SOME_FAILED = 4  # a batch run where at least one exam failed; the others were written
EXIT_OUTPUT_FAILED = 5  # an output could not be written at the end; the other outputs were written
EXIT_INTERRUPTED = 130  # SIGINT (Ctrl-C): decided events written, flagged incomplete
EXIT_TERMINATED = 143  # SIGTERM (kill, timeout, a batch scheduler): the same as SIGINT


class VceError(Exception):
    """An error caused by input or configuration; its message is one line for the user."""

    exit_code: int = EXIT_BAD_INPUT

    def __init__(self, message: str, *, exit_code: int | None = None) -> None:
        super().__init__(" ".join(str(message).split()))
        if exit_code is not None:
            self.exit_code = exit_code


class ConfigError(VceError):
    """A configuration file or option is invalid."""


class SubmissionError(VceError):
    """An event JSON fails the scorer's sanity checks (SPEC §3 step 1)."""


class FrameOrderError(VceError, ValueError):
    """Frame indices went backwards or repeated: a broken source, never silently reordered."""


class InputError(VceError):
    """An input (video, frame folder, bundle, scores file) is missing, unreadable or malformed."""


class ScorerOutputError(VceError):
    """The engine returned probabilities that are not finite numbers in [0, 1] (or the wrong shape): the
    exam stops at that batch, its decided events are kept (exit 3), and the message names the frame."""

    exit_code = EXIT_INCOMPLETE


class OutputError(VceError):
    """An output could not be written at the end (disk full, folder removed); the others were written."""

    exit_code = EXIT_OUTPUT_FAILED


class Terminated(KeyboardInterrupt):
    """SIGTERM, raised in the main thread so a terminated run keeps its work exactly as Ctrl-C does."""
