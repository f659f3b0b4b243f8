"""`vce-stream batch --ray`: the same archive through the local pool and through Ray tasks gives the same
outputs. Ray is real: a local instance started here (2 CPUs, no dashboard), joined by the batch command
as a separate driver, the way a user joins a cluster."""

from __future__ import annotations

import csv
import os
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from vce_stream.batch.journal import DONE, FAILED, read_journal
from vce_stream.cli import main
from vce_stream.batch.ray_runner import check_reachable
from vce_stream.errors import EXIT_SOME_FAILED, InputError
from vce_stream.model.random_bundle import create_random_bundle
from vce_stream.synthetic import SyntheticConfig, make_exam

ray = pytest.importorskip("ray")


@pytest.fixture(scope="module")
def ray_address():
    ray.init(num_cpus=2, include_dashboard=False, logging_level="WARNING")
    try:
        yield ray.get_runtime_context().gcs_address
    finally:
        ray.shutdown()


@pytest.fixture(scope="module")
def bundle(tmp_path_factory) -> Path:
    return create_random_bundle(tmp_path_factory.mktemp("bundle") / "tiny", "tiny", seed=1)


@pytest.fixture(scope="module")
def archive(tmp_path_factory) -> Path:
    root = tmp_path_factory.mktemp("archive")
    make_exam(root / "a" / "exam_1.mkv", SyntheticConfig(frames=120, width=64, height=64, seed=11))
    make_exam(root / "b" / "exam_2", SyntheticConfig(frames=100, width=64, height=64, seed=12))
    make_exam(root / "exam_3.mp4", SyntheticConfig(frames=140, width=64, height=64, seed=13))
    (root / "broken.mkv").write_bytes(b"garbage" * 300)
    return root


def outputs(out: Path) -> dict[str, bytes]:
    files = {p.relative_to(out).as_posix(): p.read_bytes() for p in (out / "exams").iterdir()}
    files["submission.json"] = (out / "submission.json").read_bytes()
    return files


def statuses(out: Path) -> dict[str, tuple[str, str, str]]:
    with open(out / "summary.csv", newline="") as handle:
        return {row["exam"]: (row["status"], row["frames"], row["events"]) for row in csv.DictReader(handle)}


def test_ray_tasks_and_the_local_pool_write_identical_outputs(ray_address, archive, bundle, tmp_path):
    local, on_ray = tmp_path / "local", tmp_path / "ray"
    with pytest.raises(SystemExit) as info:
        main([str(a) for a in ["batch", archive, "--model", bundle, "--out", local, "--workers", 2, "--threads", 1, "-q"]])
    assert info.value.code == EXIT_SOME_FAILED
    command = [sys.executable, "-m", "vce_stream", "batch", str(archive), "--model", str(bundle), "--out", str(on_ray), "--ray", ray_address, "--cpus-per-exam", "1"]
    result = subprocess.run(command, capture_output=True, text=True, timeout=300)
    assert result.returncode == EXIT_SOME_FAILED, result.stderr
    assert f"Ray cluster {ray_address}: 2 exam slot(s), 1 CPU and 0 GPU per exam" in result.stderr
    assert "broken.mkv" in result.stderr and "vce-stream: error: 1 of 4 exams not done" in result.stderr
    assert outputs(on_ray) == outputs(local)
    assert statuses(on_ray) == statuses(local)
    assert statuses(on_ray)["broken.mkv"][0] == FAILED
    assert [s[0] for k, s in statuses(on_ray).items() if k != "broken.mkv"] == [DONE] * 3
    # The exams ran in Ray's worker processes, not in the driver.
    driver_pids = {r["pid"] for r in read_journal(on_ray) if r["event"] == "run"}
    worker_pids = {int(r["worker"].rsplit(":", 1)[1]) for r in read_journal(on_ray) if r["event"] == DONE}
    assert worker_pids and not worker_pids & driver_pids and os.getpid() not in worker_pids


def test_ray_resumes_from_the_journal_of_a_local_run(ray_address, archive, bundle, tmp_path, capsys):
    out = tmp_path / "out"
    with pytest.raises(SystemExit):
        main([str(a) for a in ["batch", archive, "--model", bundle, "--out", out, "--workers", 0, "--threads", 1, "-q"]])
    before = outputs(out)
    with pytest.raises(SystemExit) as info:  # this process is already connected: the runner joins, not restarts
        main([str(a) for a in ["batch", archive, "--model", bundle, "--out", out, "--ray", "auto"]])
    err = capsys.readouterr().err
    assert info.value.code == EXIT_SOME_FAILED
    assert "3 kept from earlier runs, 1 to score" in err and "[1/1] broken.mkv: failed" in err
    assert outputs(out) == before
    assert ray.is_initialized()  # a connection the batch did not open is left alone


def test_an_address_where_no_cluster_listens_fails_at_once(ray_address):
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]  # free again once closed: nothing listens there
    with pytest.raises(InputError, match=f"--ray 127.0.0.1:{port}: no Ray cluster answers there"):
        check_reachable(f"127.0.0.1:{port}")
    check_reachable(ray_address)  # the live cluster answers
    check_reachable("auto")  # not a host:port: left to Ray


def test_a_cluster_without_room_for_one_exam_is_a_one_line_input_error(ray_address):
    from vce_stream.batch.ray_runner import RayConfig, RayRunner
    from vce_stream.batch.task import score_exam

    if ray.cluster_resources().get("GPU", 0) >= 1:
        pytest.skip("the test cluster has a GPU: one exam fits")
    with pytest.raises(InputError, match=f"--ray {ray_address}: the cluster has no room for one exam"):
        RayRunner(score_exam, RayConfig(address=ray_address, gpus_per_exam=1))
    assert ray.is_initialized()  # a connection the runner did not open is left alone
