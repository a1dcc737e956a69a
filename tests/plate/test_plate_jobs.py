"""Plate jobs on Dask: cluster options, jobqueue files (tested without a queue), resume, and a killed worker."""

from __future__ import annotations

import filecmp
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from vstain.errors import ConfigError
from vstain.plate.jobs import ClusterOptions, JobqueueSettings, field_threads, map_fields, open_client

DASK = Path(sys.executable).with_name("dask")


def test_cluster_options_refuse_contradictions():
    with pytest.raises(ConfigError, match="either `scheduler`"):
        ClusterOptions(scheduler="tcp://a:1", cluster="c.yaml").validate()
    with pytest.raises(ConfigError, match="`workers` must be at least 1"):
        ClusterOptions(workers=0).validate()
    with pytest.raises(ConfigError, match="expected an address like tcp://HOST:PORT"):
        ClusterOptions(scheduler="nowhere").validate()


def test_unreachable_scheduler_is_one_line():
    with pytest.raises(ConfigError, match="cannot reach the Dask scheduler at tcp://127.0.0.1:9"):
        with open_client(ClusterOptions(scheduler="tcp://127.0.0.1:9")):
            pass


SLURM = """\
system: slurm
jobs: 4
cores: 8
memory: 32GiB
walltime: "04:00:00"
queue: cpu
account: imaging
python: /opt/vstain/.venv/bin/python
job_script_prologue: ["module load hdf5"]
"""


def test_jobqueue_file_makes_the_batch_script_without_a_queue(tmp_path):
    path = tmp_path / "slurm.yaml"
    path.write_text(SLURM)
    settings = JobqueueSettings.load(path)
    cluster = settings.cluster()  # starts a local scheduler, submits nothing
    try:
        script = cluster.job_script()
    finally:
        cluster.close()
    for line in ("#SBATCH -p cpu", "#SBATCH -A imaging", "#SBATCH -n 1", "#SBATCH --cpus-per-task=8",
                 "#SBATCH -t 04:00:00", "module load hdf5", "/opt/vstain/.venv/bin/python -m distributed.cli"):
        assert line in script, line
    assert "--nthreads 8" in script and "--resources vstain_field=1" in script
    pbs = tmp_path / "pbs.yaml"
    pbs.write_text(SLURM.replace("slurm", "pbs"))
    cluster = JobqueueSettings.load(pbs).cluster()
    try:
        assert "#PBS -q cpu" in cluster.job_script()
    finally:
        cluster.close()


@pytest.mark.parametrize("text, message", [
    ("system: lsf\ncores: 1\nmemory: 1GiB\n", "system: Input should be 'slurm' or 'pbs'"),
    ("system: slurm\ncores: 1\nmemory: 1GiB\nqueues: cpu\n", "queues: Extra inputs are not permitted"),
    ("system: slurm\nmemory: 1GiB\n", "cores: Field required"),
    ("system: slurm\ncores: 0\nmemory: 1GiB\n", "cores: Input should be greater than or equal to 1"),
])
def test_jobqueue_file_errors_name_the_key(tmp_path, text, message):
    path = tmp_path / "c.yaml"
    path.write_text(text)
    with pytest.raises(ConfigError, match=f"{path}: {message}"):
        JobqueueSettings.load(path)
    with pytest.raises(ConfigError, match="no such cluster file"):
        JobqueueSettings.load(tmp_path / "absent.yaml")


def _square(x):
    return x * x, field_threads()


def test_map_fields_hands_over_each_result_once_with_the_workers_threads(monkeypatch):
    monkeypatch.setattr("vstain.plate.jobs.usable_cpus", lambda: 6)
    monkeypatch.delenv("MALLOC_TRIM_THRESHOLD_", raising=False)
    seen = {}
    with open_client(ClusterOptions(workers=2)) as client:
        assert map_fields(client, _square, list(range(7)), label=str, on_result=seen.__setitem__) == 7
        # The nanny's trim threshold would make every image array a fresh, page-faulted mmap.
        trim = client.run(os.environ.get, "MALLOC_TRIM_THRESHOLD_")
    assert seen == {x: (x * x, 3) for x in range(7)}  # 6 CPUs over 2 workers, one field at a time each
    assert len(trim) == 2 and set(trim.values()) == {None}


def _fails(x):
    if x == 3:
        raise ValueError("bad field")
    return x


def test_a_failing_field_is_named_and_earlier_results_are_kept():
    seen = {}
    with open_client() as client, pytest.raises(RuntimeError, match="3: ValueError: bad field"):
        map_fields(client, _fails, [1, 2, 3], label=str, on_result=seen.__setitem__, retries=0)
    assert set(seen) <= {1, 2}


# ------------------------------------------------------------------ a real cluster, a worker killed
def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _start(command: list[str], log: Path) -> subprocess.Popen:
    return subprocess.Popen(command, stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
                            env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})


def _stop(process: subprocess.Popen) -> None:
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=20)


def _wait_for_workers(address: str, n: int, timeout: float = 90) -> None:
    from distributed import Client

    with Client(address, timeout="30s") as client:
        client.wait_for_workers(n, timeout=timeout)


@pytest.mark.slow
def test_a_killed_worker_loses_nothing_and_tables_equal_a_one_process_run(tmp_path):
    """The issue's "done when": scheduler + 2 workers, zarr plate through --scheduler, one worker killed."""
    from vstain.plate.convert import convert_plate

    vstain = [sys.executable, "-m", "vstain"]
    plate = tmp_path / "plate"
    subprocess.run([*vstain, "synth", "--out", str(plate), "--magnification", "20x", "--wells", "2", "--fields", "4",
                    "--size", "256x256", "--seed", "3"], check=True, capture_output=True, timeout=300)
    zarr_plate = tmp_path / "plate.ome.zarr"
    convert_plate(plate, zarr_plate)
    # the reference: one process, the CV7000 form
    reference = tmp_path / "reference"
    subprocess.run([*vstain, "evaluate", "--truth", str(plate), "--pred", str(plate), "--magnification", "20x",
                    "--out", str(reference), "--report-fields", "0", "--no-progress"],
                   check=True, capture_output=True, timeout=600)

    port = _free_port()
    address = f"tcp://127.0.0.1:{port}"
    scheduler = _start([str(DASK), "scheduler", "--host", "127.0.0.1", "--port", str(port), "--no-dashboard"],
                       tmp_path / "scheduler.log")
    workers = []
    try:
        time.sleep(2)
        workers = [_start([str(DASK), "worker", address, "--nthreads", "1", "--no-dashboard", "--name", f"w{i}"],
                          tmp_path / f"worker{i}.log") for i in range(2)]
        _wait_for_workers(address, 2)
        out = tmp_path / "distributed"
        job = subprocess.Popen([*vstain, "evaluate", "--truth", str(zarr_plate), "--pred", str(zarr_plate),
                                "--out", str(out), "--report-fields", "0", "--no-progress", "--scheduler", address],
                               stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                               env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
        saved = out / "fields" / "truth" / "20x"
        deadline = time.monotonic() + 300
        while len(list(saved.glob("*.json"))) < 2 and time.monotonic() < deadline and job.poll() is None:
            time.sleep(0.1)
        done_at_kill = len(list(saved.glob("*.json")))
        os.killpg(workers[0].pid, signal.SIGKILL)  # the whole `dask worker` (nanny and worker): a lost machine
        output, _ = job.communicate(timeout=600)
        assert job.returncode == 0, output[-3000:]
        assert done_at_kill < 8, "the job ended before a worker could be killed"
        assert "Dask cluster at " + address in output
    finally:
        for process in workers + [scheduler]:
            _stop(process)
    for name in ("features_truth.csv", "features_pred.csv", "objects_truth_nuclei_no_edge.csv",
                 "objects_pred_Lipids_no_edge.csv", "objects_truth_cells_no_edge.csv"):
        assert filecmp.cmp(reference / name, out / name, shallow=False), name
    assert len(list((out / "fields" / "truth" / "20x").glob("*.json"))) == 8


def test_a_cluster_without_dashboard_leaves_port_8787_alone(recwarn):
    with socket.socket() as taken:
        taken.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            taken.bind(("", 8787))
            taken.listen()
        except OSError:
            pass  # already taken by something else: the same situation
        with open_client(ClusterOptions(workers=1)) as client:
            assert map_fields(client, _square, [3], label=str, on_result=lambda *_: None) == 1
    assert not [w for w in recwarn if "8787" in str(w.message)]
