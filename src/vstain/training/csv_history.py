"""A CSV metrics logger whose ``metrics.csv`` survives a resumed run.

Lightning's :class:`~lightning.pytorch.loggers.CSVLogger` deletes an existing ``metrics.csv``
when it starts, so resuming a killed run (``vstain train --resume``) lost every epoch logged
before the kill. :class:`ResumableCSVLogger` keeps the rows logged before the checkpoint the run
resumes from and drops only those logged after it (the resumed run logs them again), so the
file reads as if the run had never stopped.
"""

from __future__ import annotations

import csv
import io
import os
from typing import Any

from lightning.fabric.loggers.logger import rank_zero_experiment
from lightning.pytorch.loggers import CSVLogger
from lightning.pytorch.loggers.csv_logs import ExperimentWriter

from vstain.atomic import write_text_atomic


def resume_step(checkpoint: dict[str, Any]) -> int:
    """The logging step a resumed run continues from: rows at earlier steps are history.

    Lightning logs with the count of batches that stepped (``_batches_that_stepped``, kept in
    the fit loop's state), which differs from ``global_step`` when a batch steps several
    optimisers (the GAN recipe); ``global_step`` is the fallback.
    """
    loop = checkpoint.get("loops", {}).get("fit_loop", {}).get("epoch_loop.state_dict", {})
    step = loop.get("_batches_that_stepped", checkpoint.get("global_step", 0))
    return int(step)


class _HistoryWriter(ExperimentWriter):
    """Lightning's CSV writer, keeping the rows logged before ``keep_before_step``."""

    def __init__(self, log_dir: str, keep_before_step: int) -> None:
        self._keep_before_step = keep_before_step
        super().__init__(log_dir=log_dir)

    def _check_log_dir_exists(self) -> None:  # called by the base __init__ instead of deleting
        if not os.path.isfile(self.metrics_file_path):
            return
        with open(self.metrics_file_path, newline="") as handle:
            reader = csv.DictReader(handle)
            header = list(reader.fieldnames or [])
            rows = [row for row in reader if _step(row) < self._keep_before_step]
        text = io.StringIO()
        writer = csv.DictWriter(text, fieldnames=header)  # csv's \r\n, as Lightning writes
        writer.writeheader()
        writer.writerows(rows)
        write_text_atomic(self.metrics_file_path, text.getvalue())
        # New columns are merged with these by the base writer's header rewrite.
        self.metrics_keys = header


def _step(row: dict[str, str]) -> float:
    try:
        return float(row.get("step") or "inf")
    except ValueError:
        return float("inf")


class ResumableCSVLogger(CSVLogger):
    """:class:`~lightning.pytorch.loggers.CSVLogger` that keeps the history of a resumed run.

    Parameters
    ----------
    *args, **kwargs
        As for ``CSVLogger``.
    keep_before_step
        The step the run resumes from (:func:`resume_step`); rows logged before it are kept,
        later ones dropped. None (a fresh run) behaves exactly as ``CSVLogger``.
    """

    def __init__(self, *args: Any, keep_before_step: int | None = None, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._keep_before_step = keep_before_step

    @property
    @rank_zero_experiment
    def experiment(self) -> ExperimentWriter:
        if self._experiment is not None:
            return self._experiment
        if self._keep_before_step is None:
            return super().experiment
        self._fs.makedirs(self.root_dir, exist_ok=True)
        self._experiment = _HistoryWriter(self.log_dir, self._keep_before_step)
        return self._experiment
