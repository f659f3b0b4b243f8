"""The square-root frequency sampler (SPEC §9), resumable to the exact sample.

Each training frame is drawn, with replacement, with weight 1 / sqrt(frequency of its rarest active
label): a frame showing a rare finding is drawn more often, but less aggressively than 1 / frequency
would (which over-fits a handful of frames). Frames with no active label count as one more group
whose frequency is the number of such frames.

An epoch's draw is a pure function of (seed, epoch), and so is every sample's augmentation seed; the
sampler's whole state is therefore (epoch, samples already consumed), which a checkpoint stores as two
integers, and a resumed run sees exactly the samples the killed run would have seen.
"""

from __future__ import annotations

from collections.abc import Iterator

import numpy as np
from torch.utils.data import Sampler


def label_frequencies(targets: np.ndarray) -> np.ndarray:
    """Positive frames per label (L,) of a (N, L) 0/1 matrix."""
    return np.asarray(targets, dtype=bool).sum(axis=0).astype(np.int64)


def sqrt_frequency_weights(targets: np.ndarray) -> np.ndarray:
    """Per-frame weights (N,) = 1 / sqrt(count of the rarest label active on the frame).

    `targets` is (N, L) 0/1. Frames without labels use the count of label-less frames.
    """
    active = np.asarray(targets, dtype=bool)
    counts = label_frequencies(active).astype(np.float64)
    # The rarest active label's count per frame: inf where inactive, so min picks active labels only.
    per_label = np.where(active, counts[None, :], np.inf)
    rarest = per_label.min(axis=1) if active.shape[1] else np.full(active.shape[0], np.inf)
    empty = ~active.any(axis=1)
    rarest[empty] = max(int(empty.sum()), 1)
    return 1.0 / np.sqrt(rarest)


def epoch_seed(seed: int, epoch: int) -> int:
    """The 63-bit seed of one epoch's draw, decorrelated across epochs (numpy SeedSequence)."""
    return int(np.random.SeedSequence([seed, epoch]).generate_state(1, dtype=np.uint64)[0] >> 1)


class SqrtFrequencySampler(Sampler[tuple[int, int]]):
    """Yields (frame position, augmentation seed) pairs: `num_samples` draws per epoch, with replacement.

    `set_epoch(epoch, start)` chooses the epoch and skips the first `start` samples (a resume).
    """

    def __init__(self, weights: np.ndarray, num_samples: int, seed: int) -> None:
        weights = np.asarray(weights, dtype=np.float64)
        if weights.ndim != 1 or weights.size == 0 or not np.all(np.isfinite(weights)) or np.any(weights < 0):
            raise ValueError("sampler weights must be a non-empty vector of finite non-negative numbers")
        if weights.sum() <= 0:
            raise ValueError("sampler weights sum to zero")
        self.probabilities = weights / weights.sum()
        self.num_samples = int(num_samples)
        self.seed = int(seed)
        self.epoch = 0
        self.start = 0

    def set_epoch(self, epoch: int, start: int = 0) -> None:
        if not 0 <= start <= self.num_samples:
            raise ValueError(f"start {start} outside 0..{self.num_samples}")
        self.epoch, self.start = int(epoch), int(start)

    def draw(self, epoch: int) -> tuple[np.ndarray, np.ndarray]:
        """The whole epoch: frame positions (num_samples,) and per-sample augmentation seeds."""
        rng = np.random.default_rng(epoch_seed(self.seed, epoch))
        positions = rng.choice(self.probabilities.size, size=self.num_samples, replace=True, p=self.probabilities)
        seeds = rng.integers(0, 2**31 - 1, size=self.num_samples, dtype=np.int64)
        return positions, seeds

    def __iter__(self) -> Iterator[tuple[int, int]]:
        positions, seeds = self.draw(self.epoch)
        for position, seed in zip(positions[self.start :].tolist(), seeds[self.start :].tolist()):
            yield position, seed

    def __len__(self) -> int:
        return self.num_samples - self.start
