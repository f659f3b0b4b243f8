"""The batch on a Ray cluster: one Ray task per exam, the same `score_exam` as the local pool.

The driver connects with `ray.init(address)` ("auto": `ray.init()`, which joins the cluster named by
RAY_ADDRESS or the latest one started on this machine, else starts a local instance), keeps at most as
many exams in flight as the cluster has slots, and receives results as they finish; the journal and
the outputs stay with the driver. Each task asks for one GPU where the cluster has GPUs (fractions let
several exams share a device), else `cpus_per_exam` CPUs. The archive and the bundle must be readable
at the same paths on every node (a shared filesystem), and vce-stream installed there.
"""

from __future__ import annotations

import math
import re
import socket
from dataclasses import dataclass
from typing import Any

from vce_stream.batch.local import ExamFunction
from vce_stream.batch.task import ExamResult, ExamTask, failed_result
from vce_stream.errors import ConfigError, InputError
from vce_stream.limits import MAX_THREADS, check_maxima

CONNECT_TIMEOUT_S = 10.0
_HOST_PORT = re.compile(r"^(?:ray://)?(\[[^\]]+\]|[^:/\s]+):(\d+)$")


@dataclass(frozen=True)
class RayConfig:
    """address: "auto" or a cluster address ("host:port", "ray://host:port", "local").
    cpus_per_exam: CPUs each task reserves, and its torch threads.
    gpus_per_exam: GPUs each task reserves; None: 1 where the cluster has GPUs, else 0.
    max_retries: Ray's retries of a task whose worker process or node died.
    """

    address: str = "auto"
    cpus_per_exam: float = 1.0
    gpus_per_exam: float | None = None
    max_retries: int = 1

    def __post_init__(self) -> None:
        check_maxima(self, "ray ", {"cpus_per_exam": MAX_THREADS, "gpus_per_exam": 64, "max_retries": 100})
        if self.cpus_per_exam <= 0:
            raise ConfigError(f"cpus per exam must be > 0, got {self.cpus_per_exam}")
        if self.gpus_per_exam is not None and self.gpus_per_exam < 0:
            raise ConfigError(f"gpus per exam must be >= 0, got {self.gpus_per_exam}")


def check_reachable(address: str, timeout: float = CONNECT_TIMEOUT_S) -> None:
    """Fail fast on a "host:port" nobody listens on (Ray itself retries such an address for minutes)."""
    match = _HOST_PORT.match(address)
    if match is None:
        return  # "auto", "local" and other forms: Ray resolves them itself
    host, port = match.group(1).strip("[]"), int(match.group(2))
    try:
        socket.create_connection((host, port), timeout=timeout).close()
    except OSError as exc:
        raise InputError(f"--ray {address}: no Ray cluster answers there ({exc.strerror or exc})") from None


def connect(address: str) -> bool:
    """Connect this process to Ray (unless it already is); True when this call started the connection."""
    import ray

    if ray.is_initialized():
        return False
    check_reachable(address)
    try:
        ray.init(address=None if address == "auto" else address, include_dashboard=False, logging_level="WARNING")
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise InputError(f"--ray {address}: cannot connect to a Ray cluster ({str(exc).splitlines()[0]})") from None
    return True


class RayRunner:
    """The local pool's interface (`capacity`, `submit`, `next_result`, `close`) over Ray tasks."""

    def __init__(self, fn: ExamFunction, config: RayConfig = RayConfig()) -> None:
        import ray

        self._ray = ray
        self._pending: dict[Any, ExamTask] = {}
        self._owns_connection = connect(config.address)
        resources = ray.cluster_resources()
        gpus = config.gpus_per_exam
        if gpus is None:
            gpus = 1.0 if resources.get("GPU", 0) >= 1 else 0.0
        if gpus > 0:
            slots = math.floor(resources.get("GPU", 0) / gpus + 1e-9)
        else:
            slots = math.floor(resources.get("CPU", 0) / config.cpus_per_exam + 1e-9)
        if slots < 1:
            self.close()
            raise InputError(f"--ray {config.address}: the cluster has no room for one exam ({dict(resources)})")
        self.capacity = slots
        self.device = "cuda" if gpus > 0 else "cpu"
        self.threads = max(1, int(config.cpus_per_exam))
        self._remote = ray.remote(fn).options(num_cpus=config.cpus_per_exam, num_gpus=gpus, max_retries=config.max_retries)
        self.description = (
            f"Ray cluster {ray.get_runtime_context().gcs_address}: {slots} exam slot(s), "
            f"{config.cpus_per_exam:g} CPU and {gpus:g} GPU per exam"
        )

    def submit(self, task: ExamTask) -> None:
        if len(self._pending) >= self.capacity:
            raise RuntimeError("all slots busy: wait for a result before submitting more")
        self._pending[self._remote.remote(task)] = task

    def next_result(self) -> ExamResult:
        if not self._pending:
            raise RuntimeError("no exam in flight")
        ready, _ = self._ray.wait(list(self._pending), num_returns=1)
        ref = ready[0]
        task = self._pending.pop(ref)
        try:
            return self._ray.get(ref)
        except self._ray.exceptions.RayError as exc:  # the task's worker or node died (after retries)
            return failed_result(task, f"Ray task failed: {type(exc).__name__}: {str(exc).strip().splitlines()[0] if str(exc).strip() else ''}")

    def close(self) -> None:
        """Cancel exams still in flight (an interrupted run) and leave a connection this runner opened."""
        for ref in list(self._pending):
            try:
                self._ray.cancel(ref, force=True)
            except Exception:  # noqa: BLE001  best effort: the task may have finished meanwhile
                pass
        self._pending.clear()
        if self._owns_connection and self._ray.is_initialized():
            self._ray.shutdown()

    def __enter__(self) -> RayRunner:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
