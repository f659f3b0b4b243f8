"""vce-stream: video capsule endoscopy exams in, RARE-VISION events out, while the exam streams.

Data flow (one package per stage): sources -> batches -> engine (model) -> temporal -> events -> sinks.
"""

__version__ = "0.1.0"
