"""What a training run reports: the per-epoch logs beside the checkpoints, the epoch line, the progress bar."""

from __future__ import annotations

import csv
import io
import json
import math
import sys
from pathlib import Path
from typing import Any

from vce_stream.atomic import atomic_write_text

LOG_CSV = "log.csv"
LOG_JSONL = "log.jsonl"
# Columns of log.csv, in order (per-class metrics are in log.jsonl).
LOG_COLUMNS = (
    "epoch", "steps", "skipped_steps", "loss", "asl", "contrastive", "lr_backbone", "lr_heads",
    "macro_ap", "macro_auc", "macro_f1", "temporal_map50", "temporal_map95", "seconds",
)


def write_logs(work_dir: Path, history: list[dict[str, Any]]) -> None:
    """log.csv (one row per epoch, LOG_COLUMNS) and log.jsonl (everything), rewritten from the history."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(LOG_COLUMNS)
    for row in history:
        writer.writerow([_csv_value(row.get(c)) for c in LOG_COLUMNS])
    atomic_write_text(work_dir / LOG_CSV, buffer.getvalue())
    atomic_write_text(work_dir / LOG_JSONL, "".join(json.dumps(row, allow_nan=True) + "\n" for row in history))


def _csv_value(value: Any) -> Any:
    return f"{value:.6g}" if isinstance(value, float) else ("" if value is None else value)


def metric_value(row: dict[str, Any], name: str) -> float:
    """An epoch's value of the selection metric; -inf when missing or NaN, so it never wins."""
    value = row.get(name)
    return float(value) if value is not None and math.isfinite(value) else float("-inf")


def epoch_line(row: dict[str, Any], select: str) -> str:
    """The one line logged after each epoch."""
    return (f"epoch {row['epoch']}: loss {row['loss']:.4f} ({row['skipped_steps']} skipped), "
            f"macro AP {row['macro_ap']:.4f}, AUC {row['macro_auc']:.4f}, F1 {row['macro_f1']:.4f}, "
            f"temporal mAP@0.5 {row['temporal_map50']:.4f} @0.95 {row['temporal_map95']:.4f} "
            f"[{select}] {row['seconds']:.1f}s")


class _NoBar:
    def __enter__(self) -> _NoBar:
        return self

    def __exit__(self, *exc: object) -> None:
        return None

    def update(self, n: int) -> None:
        return None


def progress_bar(enabled: bool, length: int, label: str) -> Any:
    """A click progress bar on stderr, or a silent stand-in with the same interface."""
    if not enabled:
        return _NoBar()
    import click

    return click.progressbar(length=length, label=label, file=sys.stderr, show_pos=True, show_eta=True)
