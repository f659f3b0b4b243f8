"""Per-class presence gates: decide per video whether a label is written at all (SPEC §3).

The scorer gives an absent label a free AP of 1.0 when nothing of it is predicted and 0.0 when anything
is, while for a present label the runs ranked after its true events cost nothing. So the decision that
matters is per (video, label): present or not. A label is present when its most convincing run reaches
the label's gate; then all its runs are kept, otherwise none.
"""

from __future__ import annotations

import numpy as np

from vce_stream.postprocess.runs import Runs, empty_runs


def gate_runs(runs: Runs, evidence: np.ndarray, gate: float) -> Runs:
    """All of `runs` if some run's evidence reaches `gate`, else none."""
    if evidence.size and float(evidence.max()) >= gate:
        return runs
    return empty_runs()


class PresenceGate:
    """The causal form, for live output: runs arrive one by one as the temporal stage closes them.

    `observe(c, evidence)` returns True when the run is final (its label is already present, or this run
    makes it present) and False when it is provisional: it will be written only if a later run of the
    label passes the gate, which the final file decides.
    """

    def __init__(self, gates: tuple[float, ...]) -> None:
        self.gates = gates
        self.present = [False] * len(gates)

    def observe(self, column: int, evidence: float) -> bool:
        if not self.present[column] and evidence >= self.gates[column]:
            self.present[column] = True
        return self.present[column]
