"""Temporal post-processing: per-frame probabilities -> per-class events (SPEC §6).

`filters` holds the offline reference as small pure functions; `streaming` holds `MedianGapState`, the
incremental state machine that must give the same events while seeing each frame once.
"""
