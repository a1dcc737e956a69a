"""CellProfiler-equivalent measurements and the challenge metric; never imports torch.

Main entry points (imported lazily, so ``import vstain.evaluation`` stays light):

* :func:`vstain.evaluation.folders.evaluate_folders` — a prediction folder against the truth:
  tables, challenge score, ``report.html`` (what ``vstain evaluate`` runs);
* :func:`vstain.evaluation.pipeline.measure_field` — the 99 features of one C01/C02/C03 field;
* :func:`vstain.evaluation.nuclei.segment_nuclei` — the pipeline's nuclei labels (training masks);
* :mod:`vstain.evaluation.settings` — the three pipelines' settings as data;
* :mod:`vstain.evaluation.threshold`, :mod:`~vstain.evaluation.objects`,
  :mod:`~vstain.evaluation.secondary`, :mod:`~vstain.evaluation.measure` — the building blocks.
"""

from __future__ import annotations

from typing import Any

_LAZY = {
    "evaluate_folders": "vstain.evaluation.folders",
    "measure_field": "vstain.evaluation.pipeline",
    "FieldMeasurements": "vstain.evaluation.pipeline",
    "segment_nuclei": "vstain.evaluation.nuclei",
    "pipeline_settings": "vstain.evaluation.settings",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'vstain.evaluation' has no attribute {name!r}")
