"""Overlap of host->device copies, scoring and device->host copies for a CUDA scorer.

Why: scored one batch at a time, a GPU waits for each batch's upload and the host waits for each
batch's probabilities. `OverlappedScorer` uses pinned host batches and a copy stream: batch k+1
is uploaded on the copy stream and scored on the compute stream while the probabilities of batch k
come back (non-blocking into pinned memory) and are handed to the caller.

Contract (a thin stateful stage): `submit(frames, indices)` queues one batch and returns the result of
the *previous* batch as `(indices, probabilities)` once it is ready, or None for the first batch;
`drain()` returns the last pending result (or None). Results come back in submission order, each
with the indices it was submitted with. `frames` must stay unchanged until its own result is returned
(the pipeline holds each batch buffer until then): frames already in pinned memory (the pipeline's
batch pool on CUDA) are uploaded from where they are, anything else is first copied into one of the
scorer's two pinned buffers. On the CPU (or with `device` not CUDA) it is a plain
synchronous pass-through with the same one-batch delay, so the caller's loop is the same everywhere.

`model` is a uint8-in, probabilities-out module (`FrameProbabilityModel`, an engine module) already on
`device`; `autocast` (None, torch.bfloat16 or torch.float16) runs it under `torch.autocast`, as the
torch backend's precision asks.

`batch_scorer(scorer)` gives the pipeline one interface over both: a CUDA torch scorer is overlapped,
any other scorer is called synchronously (`SynchronousScorer`, no delay).
"""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

Result = tuple[Any, np.ndarray]


class OverlappedScorer:
    """Double-buffered, stream-overlapped scoring of uint8 frame batches (see the module docstring)."""

    def __init__(self, model: torch.nn.Module, device: str | torch.device = "cpu", autocast: torch.dtype | None = None) -> None:
        self.model = model
        self.autocast = autocast
        self.device = torch.device(device)
        self.cuda = self.device.type == "cuda"
        self._pending: tuple[Any, Any] | None = None  # (indices, result handle) of the batch in flight
        self._slot = 0
        if self.cuda:
            self._copy_stream = torch.cuda.Stream(device=self.device)
            self._compute_stream = torch.cuda.Stream(device=self.device)
            self._pinned: list[torch.Tensor | None] = [None, None]
            self._host_out: list[torch.Tensor | None] = [None, None]

    def submit(self, frames: torch.Tensor, indices: Any) -> Result | None:
        """Queue `frames` (uint8 (B, H, W, 3) on the CPU); return the previous batch's result or None."""
        handle = self._launch(frames)
        previous, self._pending = self._pending, (indices, handle)
        return None if previous is None else self._finish(previous)

    def drain(self) -> Result | None:
        """The result of the last submitted batch (None when nothing is pending)."""
        previous, self._pending = self._pending, None
        return None if previous is None else self._finish(previous)

    # --- internals --------------------------------------------------------------------------------

    def _launch(self, frames: torch.Tensor) -> Any:
        if not self.cuda:
            with torch.inference_mode():
                return self.model(frames).float().cpu().numpy()
        slot, self._slot = self._slot, 1 - self._slot
        if frames.is_pinned():
            pinned = frames  # no host copy (38 MB at batch 256): the caller holds it until its result
        else:
            pinned = self._pinned[slot]
            if pinned is None or pinned.shape != frames.shape:
                pinned = self._pinned[slot] = torch.empty(frames.shape, dtype=frames.dtype, pin_memory=True)
            # The slot was last used two batches ago; its copy finished before that batch's result was read.
            pinned.copy_(frames)
        with torch.cuda.stream(self._copy_stream):
            on_device = pinned.to(self.device, non_blocking=True)
            uploaded = torch.cuda.Event()
            uploaded.record(self._copy_stream)
        with torch.cuda.stream(self._compute_stream), torch.inference_mode():
            self._compute_stream.wait_event(uploaded)
            on_device.record_stream(self._compute_stream)
            with torch.autocast("cuda", dtype=self.autocast, enabled=self.autocast is not None):
                probs = self.model(on_device).float()
            out = self._host_out[slot]
            if out is None or out.shape != probs.shape:
                out = self._host_out[slot] = torch.empty(probs.shape, dtype=torch.float32, pin_memory=True)
            out.copy_(probs, non_blocking=True)
            done = torch.cuda.Event()
            done.record(self._compute_stream)
        return out, done

    def _finish(self, pending: tuple[Any, Any]) -> Result:
        indices, handle = pending
        if not self.cuda:
            return indices, handle
        out, done = handle
        done.synchronize()
        return indices, out.numpy().copy()


class SynchronousScorer:
    """The same submit/drain interface over any FrameScorer, with no delay: `submit` returns the
    batch's own result at once (probabilities, and features when `with_features`)."""

    def __init__(self, scorer: Any, with_features: bool = False) -> None:
        self.scorer = scorer
        self.with_features = with_features

    def submit(self, frames: torch.Tensor, payload: Any) -> list[tuple[Any, np.ndarray, np.ndarray | None]]:
        if self.with_features:
            probs, features = self.scorer.score_with_features(frames)
            return [(payload, probs, features)]
        return [(payload, self.scorer.score(frames), None)]

    def drain(self) -> list[tuple[Any, np.ndarray, np.ndarray | None]]:
        return []


class _Overlapped:
    """`OverlappedScorer` behind the pipeline's submit/drain interface (results one batch late)."""

    def __init__(self, overlapped: OverlappedScorer) -> None:
        self.overlapped = overlapped

    def submit(self, frames: torch.Tensor, payload: Any) -> list[tuple[Any, np.ndarray, None]]:
        done = self.overlapped.submit(frames, payload)
        return [] if done is None else [(done[0], done[1], None)]

    def drain(self) -> list[tuple[Any, np.ndarray, None]]:
        done = self.overlapped.drain()
        return [] if done is None else [(done[0], done[1], None)]


def batch_scorer(scorer: Any, with_features: bool = False) -> SynchronousScorer | _Overlapped:
    """What the pipeline scores with: an overlapped stage for a torch scorer on a CUDA device (copy of
    batch k+1 and compute overlap the read-back of batch k), else `scorer` called synchronously."""
    from vce_stream.engine.backends.pytorch import AUTOCAST, TorchScorer

    if isinstance(scorer, TorchScorer) and scorer.device.type == "cuda" and not with_features:
        return _Overlapped(OverlappedScorer(scorer.model, scorer.device, AUTOCAST[scorer.precision]))
    return SynchronousScorer(scorer, with_features)
