"""Post-processing: per-frame probabilities -> events (SPEC §6 and the metric-aware decoding).

The data flow, one module each:
- `config`: every setting of this stage (`PostprocessConfig`, `TemporalConfig`, `DecodingConfig`) and
  `with_command_line`;
- `filters`: the SPEC §6 filter as small pure functions (the offline reference the tests use);
- `streaming`: `MedianGapState`, the incremental form of `filters` (push/flush, equal to the reference);
- `runs`, `gating`, `anatomy`, `landmarks`, `ranking`, `decode`: the metric-aware decoding of a whole
  video; `live`: its streaming form for `run --follow`;
- `video`: `video_events`, the one whole-video decision `run`, `postprocess`, `calibrate` and training use;
- `fastmap`, `tuning`, `calibrate`: per-label AP for searches, the one F1/gate/evaluation toolbox, and
  the calibration search; `cli`: the `postprocess` command (`calibrate` is in `vce_stream/commands/`).

This package's `__init__` imports nothing, so importing one module does not import them all.
"""
