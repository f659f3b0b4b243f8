"""Metric-aware decoding (issue 8): which labels a video has, anatomy in order, ranked events.

Modules: `config` (settings), `runs` (the paper's per-class filter as run bounds), `gating` (per-class
presence gates), `anatomy` (monotone Viterbi, offline and fixed-lag online), `landmarks`, `ranking`
(tuple cuts and confidences), `decode` (the composition), `fastmap` (per-label AP for searches),
`calibrate` (tuning with cross-validation) and `cli` (`vce-stream calibrate`).

This package's `__init__` imports nothing: `vce_stream.config` imports `decoding.config`.
"""
