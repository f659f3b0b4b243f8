"""Anatomy as one monotone path: Viterbi over the sections with a left-to-right transition structure.

The capsule passes mouth, esophagus, stomach, small intestine and colon in that order, so the decoded
path assigns every row exactly one section and never goes back; a section may be skipped. A path's score
is the sum of its rows' emissions minus `penalty` per change of section. Emissions are section logits
(`section_emissions`): for independent sigmoid outputs, logit(p_k) is the log-likelihood ratio of
"section k and no other" up to a per-row constant.

Two forms with the same optimum:
- `monotone_viterbi`: whole video, vectorised over time (one running maximum per section), O(rows x K);
- `OnlineMonotoneViterbi`: streaming with a fixed lag; each row is final `lag` rows after it arrives.
  Decisions never go back: once a row is committed to section k, later rows are constrained to >= k.
  With a lag longer than the video it returns `monotone_viterbi`'s path.
Ties go to the earlier change and the lower section in both forms; paths whose scores differ by less
than floating-point rounding may be told apart differently, since the two forms sum in different orders.
"""

from __future__ import annotations

from collections import deque

import numpy as np

from vce_stream.postprocess.runs import Runs


def section_emissions(probs: np.ndarray, eps: float) -> np.ndarray:
    """(rows, K) logits of the section probabilities, clipped to [eps, 1 - eps]."""
    p = np.clip(np.asarray(probs, dtype=np.float64), eps, 1.0 - eps)
    return np.log(p) - np.log1p(-p)


def path_score(emissions: np.ndarray, path: np.ndarray, penalty: float) -> float:
    """Score of a path: its emissions minus `penalty` per change of section."""
    rows = np.arange(path.size)
    return float(emissions[rows, path].sum() - penalty * np.count_nonzero(np.diff(path)))


def monotone_viterbi(emissions: np.ndarray, penalty: float) -> np.ndarray:
    """The best monotone (non-decreasing) section path for (rows, K) emissions, as (rows,) int64."""
    e = np.asarray(emissions, dtype=np.float64)
    n, k_count = e.shape
    if n == 0:
        return np.zeros(0, np.int64)
    prefix = np.concatenate([np.zeros((1, k_count)), np.cumsum(e, axis=0)])  # prefix[t] = sum of rows < t
    positions = np.arange(n)
    best_at = np.full((k_count, n + 1), -np.inf)  # best_at[k, t]: best score of rows < t ending in k
    start_of = np.zeros((k_count, n + 1), np.int64)  # first row of the final section of that path
    below = np.full(n, -np.inf)  # max over sections < k of best_at[., s] - penalty (s >= 1); start at s=0 free
    below_arg = np.zeros(n, np.int64)
    entry_from = np.zeros((k_count, n), np.int64)  # section before k when k is entered at row s
    below[0] = 0.0
    for k in range(k_count):
        candidate = below - prefix[:n, k]
        running = np.maximum.accumulate(candidate)
        previous = np.concatenate([[-np.inf], running[:-1]])
        is_new = candidate > previous  # strict: ties keep the earlier entry
        start_of[k, 1:] = np.maximum.accumulate(np.where(is_new, positions, 0))
        best_at[k, 1:] = prefix[1:, k] + running
        entry_from[k] = below_arg
        # Entering section k + 1 at row s (s >= 1) comes from the best section <= k at s.
        better = best_at[k, 1:n] - penalty > below[1:]
        below[1:] = np.where(better, best_at[k, 1:n] - penalty, below[1:])
        below_arg[1:] = np.where(better, k, below_arg[1:])
    path = np.empty(n, np.int64)
    k = int(np.argmax(best_at[:, n]))
    t = n
    while True:
        s = int(start_of[k, t])
        path[s:t] = k
        if s == 0:
            return path
        k, t = int(entry_from[k, s]), s


class OnlineMonotoneViterbi:
    """Fixed-lag streaming form of `monotone_viterbi`.

    `push(emissions)` returns the sections of the rows that became final (row `t - lag` once row `t`
    has arrived); `flush()` returns the rest and resets for a new video. Memory is O(lag x K).
    """

    def __init__(self, num_sections: int, penalty: float, lag: int) -> None:
        if lag < 1:
            raise ValueError(f"lag must be >= 1, got {lag}")
        self.num_sections = num_sections
        self.penalty = float(penalty)
        self.lag = lag
        self._reset()

    def _reset(self) -> None:
        self._rows = 0  # rows pushed
        self._decided = 0  # rows returned
        self._floor = 0  # lowest section still allowed (the last committed one)
        self._best = np.full(self.num_sections, -np.inf)
        self._start = np.zeros(self.num_sections, np.int64)
        # Per row still needed for backtracking: (row, start per section, section entered from).
        self._history: deque[tuple[int, np.ndarray, np.ndarray]] = deque()

    def push(self, emissions: np.ndarray) -> np.ndarray:
        decided: list[int] = []
        for row in np.asarray(emissions, dtype=np.float64).reshape(-1, self.num_sections):
            self._step(row)
            if self._rows - 1 - self._decided >= self.lag:
                section = max(self._section_at(self._decided), self._floor)
                self._commit(section)
                decided.append(section)
        return np.asarray(decided, dtype=np.int64)

    def flush(self) -> np.ndarray:
        """Sections of every row not yet returned (the best path's tail); then the state is empty."""
        rest = [max(self._section_at(r), self._floor) for r in range(self._decided, self._rows)]
        self._reset()
        return np.maximum.accumulate(np.asarray(rest, dtype=np.int64)) if rest else np.zeros(0, np.int64)

    # -- internals --------------------------------------------------------------------------------------

    def _step(self, e: np.ndarray) -> None:
        t = self._rows
        entered = np.zeros(self.num_sections, np.int64)
        if t == 0:
            best = e.copy()
            start = np.zeros(self.num_sections, np.int64)
        else:
            best, start = self._best.copy(), self._start.copy()
            running, running_arg = -np.inf, 0
            for k in range(self.num_sections):
                # Entering k at row t from the best section < k at row t - 1.
                if k > 0 and running - self.penalty > self._best[k]:
                    best[k], start[k], entered[k] = running - self.penalty, t, running_arg
                if self._best[k] > running:
                    running, running_arg = self._best[k], k
            best = best + e
        best[: self._floor] = -np.inf
        self._best, self._start = best, start
        self._history.append((t, start.copy(), entered))
        self._rows += 1

    def _row(self, r: int) -> tuple[np.ndarray, np.ndarray]:
        first = self._history[0][0]
        _, start, entered = self._history[r - first]
        return start, entered

    def _section_at(self, r: int) -> int:
        """Section of row r on the best path ending at the newest row."""
        k = int(np.argmax(self._best))
        s = int(self._start[k])
        while s > r:
            _, entered = self._row(s)
            k = int(entered[k])
            s = int(self._row(s - 1)[0][k])
        return k

    def _commit(self, section: int) -> None:
        self._decided += 1
        if section > self._floor:
            self._floor = section
            self._best[:section] = -np.inf
        # Rows before the newest decided one are never read again (backtracking stops at s - 1 >= r).
        while self._history and self._history[0][0] < self._decided - 1:
            self._history.popleft()


def section_runs(path: np.ndarray, num_sections: int) -> list[Runs]:
    """Per section, its run on a monotone path (one run, or none if skipped)."""
    out: list[Runs] = []
    for k in range(num_sections):
        rows = np.flatnonzero(path == k)
        if rows.size:
            out.append((np.array([rows[0]], np.int64), np.array([rows[-1]], np.int64)))
        else:
            out.append((np.zeros(0, np.int64), np.zeros(0, np.int64)))
    return out
