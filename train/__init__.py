"""Training: Galar-layout data -> a model bundle with per-class thresholds (SPEC §5, §9).

Modules: `config` (TrainConfig), `data` (Galar reader, split by video, datasets), `sampler`
(square-root frequency sampler), `losses` (ASL + contrastive BCE), `mixup`, `ema`, `validate`
(frame metrics, thresholds, temporal mAP, the presence rule, through `vce_stream.postprocess.tuning`),
`model` and `optim` (what trains), `inference` (validation probabilities), `logs`, `signals` (a clean
stop), `checkpoint`, `trainer` (the run), `cli` (`vce-stream train`), `synthetic_galar` (a small data
set in the Galar layout for tests).
"""
