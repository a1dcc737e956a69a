"""Plate jobs on Dask distributed: per-field work mapped over a :class:`distributed.Client`.

Every job that walks a plate field by field on CPUs (``vstain evaluate``, ``stats``, ``convert``,
``align``, ``predict --device cpu``) runs through :func:`open_client` and :func:`map_fields`, one code path
whatever the cluster:

* ``workers=N`` (default 1): a :class:`distributed.LocalCluster` of N worker processes on this
  machine (one in-process worker for N = 1), each with ``usable CPUs / N`` threads;
* ``scheduler="tcp://HOST:PORT"``: an existing cluster (``dask scheduler`` + ``dask worker``
  processes on any number of machines that see the same files);
* ``cluster=FILE``: a SLURM or PBS cluster started through dask-jobqueue from a YAML file
  (:class:`JobqueueSettings`; docs/performance.md has a working example).

Tasks receive *fields* (file or zarr-plane locations, never pixel arrays) and read their own
pixels. A field is computed by one task at a time on a worker; its threads are the worker's
(:func:`field_threads`), set explicitly because the nanny sets ``OMP_NUM_THREADS=1`` in worker
processes. Workers are daemonic processes: tasks start threads, never processes (no DataLoader
workers). A worker that dies mid-field has its field rescheduled on another worker by the
scheduler; callers save each result once, keyed by field, as it arrives (:func:`map_fields`), so
nothing is lost or counted twice and a killed job resumes with the fields not yet saved.

distributed is imported only when a job runs, so ``import vstain.plate`` stays light.
"""

from __future__ import annotations

import os
import sys
import threading
import uuid
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterator, Literal, Sequence, TypeVar

from pydantic import BaseModel, ConfigDict, Field as PydanticField, ValidationError

from vstain.errors import ConfigError, ConfigNotFound, VstainError

if TYPE_CHECKING:
    from distributed import Client

T = TypeVar("T")
R = TypeVar("R")

#: Worker resource that limits a worker to one field at a time (declared by the clusters vstain starts).
FIELD_RESOURCE = "vstain_field"


class JobqueueSettings(BaseModel):
    """A SLURM or PBS cluster for plate jobs (dask-jobqueue), from a YAML file given as ``--cluster``.

    Each batch job runs one Dask worker with ``cores`` threads that computes one field at a time
    with all of them; ``jobs`` batch jobs are submitted.
    """

    model_config = ConfigDict(extra="forbid")

    system: Literal["slurm", "pbs"]
    jobs: int = PydanticField(1, ge=1, description="batch jobs (workers) to submit")
    cores: int = PydanticField(ge=1, description="CPU cores per job (the worker's threads)")
    memory: str = PydanticField(description="memory per job, e.g. '16GiB'")
    walltime: str = PydanticField("02:00:00", description="wall-time limit per job")
    queue: str | None = PydanticField(None, description="partition (SLURM) or queue (PBS)")
    account: str | None = PydanticField(None, description="account/project to charge")
    python: str | None = PydanticField(None, description="python of the vstain environment on the nodes")
    job_script_prologue: list[str] = PydanticField(default_factory=list,
                                                   description="shell lines run before the worker starts")
    job_extra_directives: list[str] = PydanticField(default_factory=list,
                                                    description="extra #SBATCH/#PBS lines")
    local_directory: str | None = PydanticField(None, description="worker scratch folder on the nodes")
    log_directory: str | None = PydanticField(None, description="folder for the jobs' logs")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "JobqueueSettings":
        """Read and validate a cluster file; errors name the file and the key."""
        import yaml

        path = Path(path)
        try:
            data = yaml.safe_load(path.read_text(encoding="utf-8"))
        except FileNotFoundError:
            raise ConfigNotFound(f"{path}: no such cluster file (`cluster`)") from None
        except (OSError, yaml.YAMLError) as exc:
            raise ConfigError(f"{path}: unreadable cluster file ({exc})") from None
        try:
            return cls.model_validate(data or {})
        except ValidationError as exc:
            first = exc.errors()[0]
            where = ".".join(str(p) for p in first["loc"]) or "(top level)"
            raise ConfigError(f"{path}: {where}: {first['msg']}") from None

    def cluster(self) -> Any:
        """The dask-jobqueue cluster object (submits nothing until scaled)."""
        import dask_jobqueue

        kind = {"slurm": dask_jobqueue.SLURMCluster, "pbs": dask_jobqueue.PBSCluster}[self.system]
        options: dict[str, Any] = dict(
            cores=self.cores, processes=1, memory=self.memory, walltime=self.walltime,
            job_script_prologue=list(self.job_script_prologue),
            job_extra_directives=list(self.job_extra_directives),
            worker_extra_args=["--resources", f"{FIELD_RESOURCE}=1"],
        )
        for name in ("queue", "account", "python", "local_directory", "log_directory"):
            value = getattr(self, name)
            if value is not None:
                options[name] = value
        return kind(**options)


@dataclass(frozen=True)
class ClusterOptions:
    """Where a plate job runs: ``workers`` local processes, an existing ``scheduler``, or a jobqueue ``cluster``.

    ``scheduler`` and ``cluster`` exclude each other; with either, ``workers`` is ignored.
    """

    workers: int = 1
    scheduler: str | None = None
    cluster: str | os.PathLike[str] | None = None
    dashboard: bool = False

    def validate(self) -> "ClusterOptions":
        if self.scheduler and self.cluster:
            raise ConfigError("give either `scheduler` (an existing cluster) or `cluster` (a jobqueue file), not both")
        if self.workers < 1:
            raise ConfigError(f"`workers` must be at least 1, got {self.workers}")
        if self.scheduler is not None and "://" not in self.scheduler and ":" not in self.scheduler:
            raise ConfigError(f"`scheduler` {self.scheduler!r}: expected an address like tcp://HOST:PORT")
        return self


def usable_cpus() -> int:
    """CPUs this process may run on (the affinity mask where there is one)."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


@contextmanager
def open_client(options: ClusterOptions | None = None, *, announce: Callable[[str], None] | None = None
                ) -> Iterator["Client"]:
    """A Client for ``options``, closed (and its local or batch cluster shut down) on exit.

    ``announce`` receives one line naming the cluster and its dashboard address, when it has one.

    Raises
    ------
    ConfigError
        For contradictory options, an unreachable scheduler or an invalid cluster file.
    """
    import logging

    import dask
    from distributed import Client, LocalCluster

    options = (options or ClusterOptions()).validate()
    cluster = None
    if options.scheduler:
        try:
            client = Client(options.scheduler, timeout="20s")
        except (OSError, TimeoutError) as exc:
            raise ConfigError(f"cannot reach the Dask scheduler at {options.scheduler} (`scheduler`): {exc}") from None
        where = f"Dask cluster at {options.scheduler}, {len(client.scheduler_info()['workers'])} workers"
    elif options.cluster:
        settings = JobqueueSettings.load(options.cluster)
        cluster = settings.cluster()
        cluster.scale(jobs=settings.jobs)
        client = Client(cluster)
        where = f"{settings.system.upper()} cluster: {settings.jobs} jobs of {settings.cores} cores"
    else:
        threads = max(1, usable_cpus() // options.workers)
        # One worker: in this process (no start-up, no transfers); more: separate processes.
        # The workers' statistical profiler samples the running thread every 10 ms: measurable
        # CPU on Python-heavy fields (the dashboard's profile tab stays empty without it).
        # The nanny's MALLOC_TRIM_THRESHOLD_ (set for long-lived workers that hold many small
        # results) also switches off glibc's adaptive mmap threshold, so every image-sized array
        # of a field is a fresh mmap whose pages are faulted in and zeroed again: measured as
        # most of the workers' system time (docs/performance.md). A field job frees its arrays
        # when the field ends, so the allocator's default suits it; None unsets the variable.
        with dask.config.set({"distributed.worker.profile.enabled": False,
                              "distributed.nanny.pre-spawn-environ.MALLOC_TRIM_THRESHOLD_": None}):
            cluster = LocalCluster(
                n_workers=options.workers, threads_per_worker=threads, processes=options.workers > 1,
                resources={FIELD_RESOURCE: 1}, dashboard_address=":0" if options.dashboard else None,
                # Without a dashboard the scheduler still serves its HTTP routes, by default on
                # 8787: a second job on the machine would warn "Port 8787 is already in use".
                scheduler_kwargs=None if options.dashboard else {"dashboard_address": ":0"},
                silence_logs=logging.ERROR,
            )
        client = Client(cluster)
        where = f"local Dask cluster: {options.workers} worker{'s' if options.workers > 1 else ''} x {threads} threads"
    try:
        link = client.dashboard_link if (options.dashboard or options.scheduler or options.cluster) else None
        if announce is not None:
            announce(f"{where}" + (f"; dashboard {link}" if link else ""))
        yield client
    finally:
        client.close()
        if cluster is not None:
            cluster.close()


def map_fields(
    client: "Client",
    function: Callable[..., R],
    items: Sequence[T],
    *,
    label: Callable[[T], str],
    on_result: Callable[[T, R], None],
    arguments: tuple[Any, ...] = (),
    progress: bool = False,
    desc: str = "fields",
    retries: int = 2,
) -> int:
    """Run ``function(item, *arguments)`` for every item on the cluster; ``on_result(item, result)`` as each ends.

    Results are handed over in completion order, in this process, one at a time, exactly once per
    item, so ``on_result`` can save each atomically as it comes. A task whose worker died is
    rerun elsewhere by the scheduler (up to the scheduler's ``allowed-failures``); a task that
    raises is retried ``retries`` times, then its error is raised here (unfinished tasks are
    cancelled, finished results have been handed over).

    Returns
    -------
    int
        The number of items computed.
    """
    from distributed import as_completed
    from tqdm.auto import tqdm

    if not items:
        return 0
    run = uuid.uuid4().hex[:8]
    resources = {FIELD_RESOURCE: 1} if _all_workers_have(client, FIELD_RESOURCE) else None
    futures = {}
    for item in items:
        key = f"vstain-{desc}-{label(item)}-{run}".replace(" ", "_")
        futures[client.submit(function, item, *arguments, key=key, pure=False, retries=retries,
                              resources=resources)] = item
    bar = tqdm(total=len(items), unit="field", desc=desc, disable=not progress, file=sys.stderr)
    try:
        for future in as_completed(futures):
            item = futures[future]
            try:
                result = future.result()
            except VstainError:
                raise
            except Exception as exc:
                raise RuntimeError(f"{label(item)}: {exc.__class__.__name__}: {exc}") from exc
            on_result(item, result)
            future.release()
            bar.update(1)
    finally:
        bar.close()
        pending = [f for f in futures if not f.done()]
        if pending:
            client.cancel(pending)
    return len(items)


def _all_workers_have(client: "Client", resource: str) -> bool:
    workers = client.scheduler_info().get("workers", {})
    return bool(workers) and all(resource in (w.get("resources") or {}) for w in workers.values())


def field_threads() -> int:
    """Threads one field may use where this runs: the worker's threads per concurrent field.

    On a worker that declares the ``vstain_field`` resource (every cluster vstain starts), a field
    has all the worker's threads; on other workers (``dask worker --nthreads K``), which run K
    fields at once, one each. Outside a worker: every usable CPU.
    """
    try:
        from distributed import get_worker

        worker = get_worker()
    except (ImportError, ValueError):
        return usable_cpus()
    nthreads = worker.state.nthreads
    concurrent = worker.state.total_resources.get(FIELD_RESOURCE, nthreads)
    return max(1, int(nthreads // max(1, concurrent)))


_WORKER_STATE: dict[Any, Any] = {}
_WORKER_LOCK = threading.Lock()


def worker_cached(key: Any, factory: Callable[[], T]) -> T:
    """``factory()`` once per worker process for ``key`` (e.g. a model loaded once, used for every field)."""
    with _WORKER_LOCK:
        if key not in _WORKER_STATE:
            _WORKER_STATE[key] = factory()
        return _WORKER_STATE[key]
