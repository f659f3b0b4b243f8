"""Engines at run time: what turns a batch of uint8 frames into per-frame label probabilities.

- `base`: the `FrameScorer` protocol every engine offers the pipeline;
- `backends/`: the backend table, one module per backend (`torch`, `onnxruntime`, `tensorrt`), each
  declaring its name, precisions, device rule, library versions and how to open an engine;
- `manifest`, `cache`, `device`, `profile`: what an engine directory promises, the per-machine engine
  cache, facts about this machine, batch profiles (pad and split);
- `select`: `--backend auto|...` and `--engine DIR`: choose and open an engine, refusing unfit ones.

Building engines is not here: the `engines` package (outside the runtime) registers one builder per
backend against the same table.
"""
