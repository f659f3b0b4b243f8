"""Batch profiles: any batch is split or padded into the engine's profile, one output row per frame."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from vce_stream.engine.profile import BatchProfile, pad_to, parse_profile, plan_chunks, run_in_profile
from vce_stream.errors import ConfigError

profiles = st.tuples(st.integers(1, 9), st.integers(0, 9), st.integers(0, 9)).map(
    lambda t: BatchProfile(t[0], t[0] + t[1], t[0] + t[1] + t[2])
)


def test_parse_profile_reads_min_opt_max_and_a_single_fixed_batch():
    assert parse_profile("1,16,32") == BatchProfile(1, 16, 32)
    assert parse_profile(" 8 ") == BatchProfile(8, 8, 8)
    assert parse_profile("2,4,8").text == "2,4,8"


@pytest.mark.parametrize("text", ["1,2", "a,b,c", "4,2,8", "0,1,2", "1,2,3,4"])
def test_parse_profile_rejects_malformed_or_unordered_profiles(text):
    with pytest.raises(ConfigError):
        parse_profile(text)


@settings(max_examples=200, deadline=None)
@given(profile=profiles, batch=st.integers(0, 80))
def test_chunks_cover_the_batch_in_order_and_every_run_fits_the_profile(profile, batch):
    chunks = plan_chunks(batch, profile)
    covered = [i for start, stop, _ in chunks for i in range(start, stop)]
    assert covered == list(range(batch))
    for start, stop, run_size in chunks:
        assert profile.contains(run_size)
        assert run_size == max(stop - start, profile.min)


@settings(max_examples=60, deadline=None)
@given(profile=profiles, batch=st.integers(1, 40))
def test_run_in_profile_returns_one_row_per_frame_and_only_runs_batches_in_profile(profile, batch):
    frames = torch.arange(batch, dtype=torch.uint8).view(batch, 1, 1, 1).expand(batch, 2, 2, 3).contiguous()
    seen = []

    def row_means(chunk: torch.Tensor) -> np.ndarray:  # a real per-frame function of the pixels
        seen.append(chunk.shape[0])
        return chunk.float().mean(dim=(1, 2, 3), keepdim=False).view(-1, 1).numpy()

    out = run_in_profile(frames, profile, row_means)
    assert out.shape == (batch, 1)
    assert out[:, 0].tolist() == list(range(batch))
    assert all(profile.contains(size) for size in seen)


def test_padding_repeats_the_last_frame():
    frames = torch.stack([torch.full((2, 2, 3), v, dtype=torch.uint8) for v in (3, 7)])
    padded = pad_to(frames, 4)
    assert padded.shape[0] == 4 and padded[2:].eq(7).all() and padded[:2].equal(frames)
    assert pad_to(frames, 1) is frames
