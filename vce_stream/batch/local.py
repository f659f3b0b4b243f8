"""A pool of worker processes on this machine, one exam per worker at a time.

Each worker is a spawned process (no fork: the driver may hold torch threads) that loads the model
once and scores the exams it is sent, on its own device slot: "cpu", or "cuda:N" (several slots may
share one GPU, so that the decoding of several exams feeds one device). A worker that dies (a decoder
crash, the OOM killer) fails only the exam it held and is replaced; the pool goes on. Workers ignore
SIGINT (the driver decides what an interrupt means) and leave when the driver's pipe closes, so a
killed driver leaves no worker behind for longer than the exam in hand.
"""

from __future__ import annotations

import multiprocessing
import os
import signal
from collections.abc import Callable, Sequence
from dataclasses import dataclass, replace
from multiprocessing.connection import Connection, wait

from vce_stream.batch.task import ExamResult, ExamTask, failed_result

ExamFunction = Callable[[ExamTask], ExamResult]


@dataclass(frozen=True)
class LocalPlan:
    """How a local pool is laid out: one device per worker, and torch threads per worker."""

    devices: tuple[str, ...]
    threads: int


def plan_local(
    workers: int | None, *, cpus: int, gpus: Sequence[str] = (), per_gpu: int = 2, exams: int | None = None, threads: int | None = None
) -> LocalPlan:
    """Worker slots for this machine.

    gpus: the CUDA devices to use ("cuda:0", ...); with some, `per_gpu` workers per device (the decoding
    of several exams feeding each one), assigned in turn. Without: one worker per CPU. `workers`
    overrides the count; never more workers than exams. The CPUs are shared out as torch threads (at
    least one each) unless `threads` is given.
    """
    if workers is None:
        workers = len(gpus) * per_gpu if gpus else cpus
    if exams is not None:
        workers = min(workers, exams)
    workers = max(1, workers)
    devices = tuple(gpus[i % len(gpus)] for i in range(workers)) if gpus else ("cpu",) * workers
    return LocalPlan(devices, threads or max(1, cpus // workers))


def available_cpus() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def _worker_main(conn: Connection, fn: ExamFunction, device: str) -> None:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    while True:
        try:
            task = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        if task is None:
            return
        result = fn(replace(task, device=device))
        try:
            conn.send(result)
        except (BrokenPipeError, OSError):
            return


def _death_note(exitcode: int | None) -> str:
    if exitcode is not None and exitcode < 0:
        try:
            return f"worker process killed by {signal.Signals(-exitcode).name}"
        except ValueError:
            pass
    return f"worker process died (exit status {exitcode})"


class _Worker:
    def __init__(self, context: multiprocessing.context.BaseContext, fn: ExamFunction, device: str) -> None:
        self.conn, child = context.Pipe(duplex=True)
        self.process = context.Process(target=_worker_main, args=(child, fn, device), daemon=True, name=f"vce-batch-{device}")
        self.process.start()
        child.close()
        self.task: ExamTask | None = None

    def stop(self, timeout: float) -> None:
        if self.process.is_alive() and self.task is None:
            try:
                self.conn.send(None)
            except OSError:
                pass
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.terminate()
            self.process.join(timeout)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.conn.close()


class LocalPool:
    """`submit` an exam to an idle worker (at most `capacity` in flight); `next_result` waits for one."""

    def __init__(self, fn: ExamFunction, devices: Sequence[str], *, threads: int = 1, start_method: str = "spawn") -> None:
        if not devices:
            raise ValueError("a pool needs at least one worker")
        self.threads = threads
        self.device = devices[0]  # tasks run on their worker's own device
        self._fn = fn
        self._context = multiprocessing.get_context(start_method)
        self._devices = tuple(devices)
        self._workers = [_Worker(self._context, fn, d) for d in self._devices]

    @property
    def capacity(self) -> int:
        return len(self._workers)

    @property
    def description(self) -> str:
        return f"local pool of {len(self._workers)} worker(s) on {', '.join(sorted(set(self._devices)))}"

    def submit(self, task: ExamTask) -> None:
        worker = next((w for w in self._workers if w.task is None), None)
        if worker is None:
            raise RuntimeError("no idle worker: wait for a result before submitting more")
        worker.task = task
        try:
            worker.conn.send(task)
        except OSError:
            pass  # the worker died before taking it: next_result reports the death for this exam

    def next_result(self) -> ExamResult:
        """The next finished exam (in completion order); a dead worker's exam comes back failed."""
        busy = [w for w in self._workers if w.task is not None]
        if not busy:
            raise RuntimeError("no exam in flight")
        while True:
            ready = set(wait([w.conn for w in busy] + [w.process.sentinel for w in busy]))
            for worker in busy:
                if worker.conn in ready:
                    try:
                        result = worker.conn.recv()
                    except (EOFError, OSError):
                        return self._replace_dead(worker)
                    worker.task = None
                    return result
            for worker in busy:
                if worker.process.sentinel in ready and not worker.conn.poll():
                    return self._replace_dead(worker)

    def _replace_dead(self, worker: _Worker) -> ExamResult:
        worker.process.join()
        task = worker.task
        assert task is not None
        result = failed_result(task, _death_note(worker.process.exitcode), worker=f"pid {worker.process.pid}")
        worker.task = None
        worker.stop(timeout=1.0)
        index = self._workers.index(worker)
        self._workers[index] = _Worker(self._context, self._fn, self._devices[index])
        return result

    def close(self, timeout: float = 5.0) -> None:
        """Stop the workers: idle ones are asked to leave, busy ones (an interrupted run) are terminated."""
        for worker in self._workers:
            worker.stop(timeout)

    def __enter__(self) -> LocalPool:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class InlineRunner:
    """Scores in the driver's own process, one exam at a time (`--workers 0`): for debugging, and for
    archives so small that starting worker processes costs more than the work."""

    capacity = 1

    def __init__(self, fn: ExamFunction, device: str = "cpu", *, threads: int = 1) -> None:
        self.device = device
        self.threads = threads
        self.description = f"the driver process ({device})"
        self._fn = fn
        self._task: ExamTask | None = None

    def submit(self, task: ExamTask) -> None:
        if self._task is not None:
            raise RuntimeError("one exam at a time")
        self._task = task

    def next_result(self) -> ExamResult:
        if self._task is None:
            raise RuntimeError("no exam in flight")
        task, self._task = self._task, None
        return self._fn(task)

    def close(self) -> None:
        self._task = None

    def __enter__(self) -> InlineRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
