"""The streaming pipeline: a source decoded ahead into preallocated batches, scored, and turned into events.

`run.run_exam` is one exam end to end (the `vce-stream run` command and batch runs call it).
"""
