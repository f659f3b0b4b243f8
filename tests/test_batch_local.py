"""The local worker pool: real spawned processes, results in completion order, a dying worker fails
only its own exam, slots keep their devices, an interrupted pool leaves no worker behind."""

from __future__ import annotations

import os
import signal
import time

import pytest

from vce_stream.batch.journal import DONE, FAILED
from vce_stream.batch.local import InlineRunner, LocalPool, plan_local
from vce_stream.batch.task import ExamResult, ExamTask
from vce_stream.events.outcome import ExamOutcome
from vce_stream.pipeline.run import RunOptions


def exam_function(task: ExamTask) -> ExamResult:
    """What a worker runs here: "crash" kills its own process, "sleep" takes long, others echo."""
    if task.key == "crash":
        os.kill(os.getpid(), signal.SIGKILL)
    if task.key == "sleep":
        time.sleep(60)
    outcome = ExamOutcome(input=task.source, video_id=task.key, out="", frames=len(task.key), events=0, seconds=0.0, first_frame=0, last_frame=len(task.key) - 1)
    return ExamResult(task.key, DONE, outcome, worker=f"{os.getpid()} {task.device} {task.threads}")


# These workers run `exam_function` only (no torch), so they may fork, which saves a torch import per
# worker; the batch itself spawns (tests/test_batch_run.py and test_batch_ray.py run that path).
START = "fork"


def task(key: str) -> ExamTask:
    return ExamTask(key, f"/archive/{key}", "/bundle", "hash", RunOptions(video_id=key), threads=3)


def drain(pool, keys: list[str]) -> dict[str, ExamResult]:
    """Submit all keys, at most `capacity` in flight, and collect every result."""
    results, pending, in_flight = {}, list(keys), 0
    while pending or in_flight:
        while pending and in_flight < pool.capacity:
            pool.submit(task(pending.pop(0)))
            in_flight += 1
        result = pool.next_result()
        in_flight -= 1
        results[result.key] = result
    return results


def test_a_killed_worker_fails_its_exam_only_and_is_replaced():
    with LocalPool(exam_function, ["cpu", "cpu"], start_method=START) as pool:
        results = drain(pool, ["a", "crash", "bb", "ccc", "dddd"])
        assert results["crash"].status == FAILED and "SIGKILL" in results["crash"].error
        assert {k: r.status for k, r in results.items() if k != "crash"} == dict.fromkeys(["a", "bb", "ccc", "dddd"], DONE)
        assert [results[k].frames for k in ("a", "bb", "ccc", "dddd")] == [1, 2, 3, 4]
        assert pool.capacity == 2
        assert drain(pool, ["after"])["after"].status == DONE  # the pool still works


def test_each_worker_keeps_its_device_slot():
    with LocalPool(exam_function, ["slot-0", "slot-1"], start_method=START) as pool:
        results = drain(pool, [f"e{i}" for i in range(8)])
    by_pid: dict[str, set[str]] = {}
    for result in results.values():
        pid, device, threads = result.worker.split()
        by_pid.setdefault(pid, set()).add(device)
        assert threads == "3"
    assert all(len(devices) == 1 for devices in by_pid.values())  # a process never changes device
    assert set().union(*by_pid.values()) <= {"slot-0", "slot-1"}


def test_closing_an_interrupted_pool_stops_busy_workers():
    pool = LocalPool(exam_function, ["cpu"], start_method=START)
    pool.submit(task("sleep"))
    process = pool._workers[0].process
    time.sleep(0.5)
    start = time.perf_counter()
    pool.close(timeout=2.0)
    assert not process.is_alive() and time.perf_counter() - start < 10


def test_the_inline_runner_scores_in_this_process():
    with InlineRunner(exam_function, threads=3) as runner:
        runner.submit(task("a"))
        with pytest.raises(RuntimeError):
            runner.submit(task("b"))
        result = runner.next_result()
    assert result.worker.split()[0] == str(os.getpid())


@pytest.mark.parametrize(
    ("workers", "cpus", "gpus", "per_gpu", "exams", "devices", "threads"),
    [
        (None, 4, (), 2, None, ("cpu",) * 4, 1),
        (None, 8, ("cuda:0", "cuda:1"), 2, None, ("cuda:0", "cuda:1", "cuda:0", "cuda:1"), 2),
        (None, 8, ("cuda:0",), 3, 2, ("cuda:0", "cuda:0"), 4),
        (2, 2, (), 2, None, ("cpu", "cpu"), 1),
        (1, 2, (), 2, None, ("cpu",), 2),
        (4, 2, (), 2, 1, ("cpu",), 2),
    ],
)
def test_plan_local(workers, cpus, gpus, per_gpu, exams, devices, threads):
    plan = plan_local(workers, cpus=cpus, gpus=gpus, per_gpu=per_gpu, exams=exams)
    assert plan.devices == devices and plan.threads == threads
