"""The `vce-stream` command line (click).

Sub-commands are registered by name in `_COMMANDS` and imported only when used, so `vce-stream
evaluate` does not pay for importing torch. Each sub-command lives beside the stage it drives.
"""

from __future__ import annotations

import importlib
import os
import signal
import sys

import click

from vce_stream import __version__
from vce_stream.errors import EXIT_FAILED, EXIT_INTERRUPTED, EXIT_TERMINATED, Terminated, VceError

# name -> "module:attribute" of a click command.
_COMMANDS: dict[str, str] = {
    "calibrate": "vce_stream.commands.calibrate:calibrate_command",
    "batch": "vce_stream.batch.cli:batch",
    "build-engine": "engines.cli:build_engine_command",
    "engines": "engines.cli:engines_group",
    "demo-bundle": "vce_stream.model.cli:demo_bundle",
    "evaluate": "vce_stream.metrics.cli:evaluate",
    "index": "vce_stream.commands.embeddings:index",
    "import-weights": "vce_stream.model.import_weights:import_weights_command",
    "info": "vce_stream.model.cli:info",
    "postprocess": "vce_stream.postprocess.cli:postprocess",
    "prototypes": "vce_stream.commands.embeddings:prototypes",
    "report": "vce_stream.report.cli:report_command",
    "run": "vce_stream.pipeline.cli:run",
    "search": "vce_stream.commands.embeddings:search",
    "similar": "vce_stream.commands.embeddings:similar",
    "simulate": "vce_stream.simulate:simulate_command",
    "synth": "vce_stream.synthetic:synth_command",
    "train": "train.cli:train",
}


class LazyGroup(click.Group):
    """A click group whose commands are imported on first use (click docs, 'Lazily Loading Subcommands')."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(set(super().list_commands(ctx)) | set(_COMMANDS))

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        if cmd_name in _COMMANDS:
            module_name, attr = _COMMANDS[cmd_name].split(":")
            return getattr(importlib.import_module(module_name), attr)
        return super().get_command(ctx, cmd_name)


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(__version__, prog_name="vce-stream")
def cli() -> None:
    """Read video capsule endoscopy exams and report anatomy and rare findings as events."""


def _terminate(signum: int, frame: object) -> None:
    raise Terminated()


def _stop(message: str, status: int) -> None:
    """Leave at once after an interrupt: the outputs are already written (atomically), and a decode
    thread may still be blocked reading a pipe, which a normal interpreter shutdown would abort on."""
    click.echo(message, err=True)
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(status)


def main(argv: list[str] | None = None) -> None:
    """Console entry point: user errors become one line on stderr and their documented exit status.

    SIGTERM (kill, timeout, a batch scheduler) is handled like SIGINT: the run writes the events it has
    decided, flagged incomplete, and exits 143 (130 for SIGINT).
    """
    signal.signal(signal.SIGTERM, _terminate)
    try:
        cli.main(args=argv, prog_name="vce-stream", standalone_mode=False)
    except click.exceptions.Abort as exc:  # click turns KeyboardInterrupt (and so SIGTERM) into Abort
        if isinstance(exc.__cause__, Terminated):
            _stop("vce-stream: terminated (SIGTERM)", EXIT_TERMINATED)
        _stop("vce-stream: aborted", EXIT_INTERRUPTED)
    except click.ClickException as exc:
        exc.show()
        sys.exit(exc.exit_code)
    except VceError as exc:
        click.echo(f"vce-stream: error: {exc}", err=True)
        sys.exit(exc.exit_code)
    except Terminated:
        _stop("vce-stream: terminated (SIGTERM)", EXIT_TERMINATED)
    except KeyboardInterrupt:
        _stop("vce-stream: interrupted", EXIT_INTERRUPTED)
    except SystemExit:
        raise
    except Exception:  # a bug: show the traceback, exit 1
        import traceback

        traceback.print_exc()
        sys.exit(EXIT_FAILED)
    sys.exit(0)


if __name__ == "__main__":
    main()
