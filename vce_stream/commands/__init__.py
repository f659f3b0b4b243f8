"""Sub-commands that combine stages from several layers (a bundle and post-processing, embeddings and
a bundle), so they sit at the top beside `vce_stream/cli.py`. Every other sub-command lives beside the
stage it drives (`pipeline/cli.py` for `run`, `postprocess/cli.py` for `postprocess`, ...)."""
