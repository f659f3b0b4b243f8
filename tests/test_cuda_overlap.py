"""OverlappedScorer: results come back one batch late, in order, with their indices, equal to direct
scoring; on the CPU it is a synchronous pass-through, on CUDA (marked gpu) it overlaps streams."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.engine.cuda_overlap import OverlappedScorer


class MeanColour(torch.nn.Module):
    """A real (tiny) uint8 -> probabilities model: per-channel mean brightness."""

    def forward(self, frames: torch.Tensor) -> torch.Tensor:
        return frames.float().mean(dim=(1, 2)) / 255.0


def _run(scorer: OverlappedScorer, batches: list[torch.Tensor]) -> list[tuple[object, np.ndarray]]:
    results = []
    for k, batch in enumerate(batches):
        out = scorer.submit(batch, list(range(k * 100, k * 100 + len(batch))))
        if k == 0:
            assert out is None  # the first batch has no predecessor
        else:
            results.append(out)
    last = scorer.drain()
    if batches:
        results.append(last)
    assert scorer.drain() is None
    return results


@settings(max_examples=25, deadline=None)
@given(st.lists(st.integers(1, 5), min_size=0, max_size=6), st.integers(0, 2**16))
def test_cpu_results_are_in_order_with_their_indices_and_equal_direct_scoring(sizes, seed):
    g = torch.Generator().manual_seed(seed)
    batches = [torch.randint(0, 256, (n, 4, 4, 3), dtype=torch.uint8, generator=g) for n in sizes]
    model = MeanColour()
    results = _run(OverlappedScorer(model, "cpu"), batches)
    assert len(results) == len(batches)
    for k, (indices, probs) in enumerate(results):
        assert indices == list(range(k * 100, k * 100 + sizes[k]))
        np.testing.assert_array_equal(probs, model(batches[k]).numpy())


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_overlap_matches_direct_scoring():
    g = torch.Generator().manual_seed(0)
    batches = [torch.randint(0, 256, (n, 8, 8, 3), dtype=torch.uint8, generator=g) for n in (3, 3, 5, 3, 1)]
    model = MeanColour().cuda()
    results = _run(OverlappedScorer(model, "cuda"), batches)
    for k, (_, probs) in enumerate(results):
        np.testing.assert_allclose(probs, model(batches[k].cuda()).cpu().numpy(), rtol=1e-6)


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA device")
def test_cuda_overlap_uploads_pinned_batches_in_place_and_matches_direct_scoring():
    g = torch.Generator().manual_seed(1)
    batches = [torch.randint(0, 256, (n, 8, 8, 3), dtype=torch.uint8, generator=g).pin_memory() for n in (4, 4, 2, 3)]
    expected = [MeanColour()(b).numpy() for b in batches]
    scorer = OverlappedScorer(MeanColour().cuda(), "cuda")
    results = []
    for k, batch in enumerate(batches):
        done = scorer.submit(batch, k)
        if done is not None:
            results.append(done)
            batches[done[0]].fill_(0)  # the pipeline reuses a buffer as soon as its result is back
    results.append(scorer.drain())
    assert scorer._pinned == [None, None]  # no staging buffer was needed
    assert [k for k, _ in results] == [0, 1, 2, 3]
    for k, probs in results:
        np.testing.assert_allclose(probs, expected[k], rtol=1e-6)
