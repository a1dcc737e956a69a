"""The options every plate job shares: where it runs (``--workers``, ``--scheduler``, ``--cluster``).

Not a command: the job commands (evaluate, stats, convert, align, predict) add these with
:func:`add_cluster_arguments` and turn them into :class:`vstain.plate.jobs.ClusterOptions`.
"""

from __future__ import annotations

import argparse

CLUSTER_HELP = """\
where the job runs (one of):
  --workers N                 N local worker processes (default 1)
  --scheduler tcp://HOST:PORT an existing Dask cluster (dask scheduler + dask worker processes
                              on machines that see the same files)
  --cluster FILE.yaml         a SLURM or PBS cluster started through dask-jobqueue (docs/performance.md)
"""


def add_cluster_arguments(parser: argparse.ArgumentParser, *, what: str = "fields") -> None:
    """Add ``--workers``, ``--scheduler``, ``--cluster`` and ``--dashboard`` to ``parser``."""
    group = parser.add_argument_group("where the job runs (Dask)")
    group.add_argument("--workers", type=int, default=1, metavar="N",
                       help=f"local worker processes computing {what} (default 1)")
    where = group.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="ADDRESS",
                       help="address of an existing Dask scheduler, e.g. tcp://10.0.0.5:8786")
    where.add_argument("--cluster", metavar="YAML",
                       help="SLURM/PBS cluster file for dask-jobqueue (see docs/performance.md)")
    group.add_argument("--dashboard", action="store_true",
                       help="serve the Dask dashboard of a local cluster (its address is printed)")


def cluster_options(args: argparse.Namespace):
    """The :class:`~vstain.plate.jobs.ClusterOptions` the parsed arguments ask for."""
    from vstain.plate.jobs import ClusterOptions

    return ClusterOptions(workers=args.workers, scheduler=args.scheduler, cluster=args.cluster,
                          dashboard=args.dashboard).validate()
