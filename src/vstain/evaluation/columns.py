"""The 102 columns of the challenge's ``Adipocytes_Image.csv``, in CellProfiler's order.

The names are data (``cellprofiler_columns.txt``, shipped with the package), not literals in code.
CellProfiler's ExportToSpreadsheet sorts the image features with Python's plain ``list.sort()``
(code-point order: upper case before lower case, ``Granularity_10`` before ``Granularity_1_``);
the file is stored in that order and checked against it on import.
"""

from __future__ import annotations

from importlib import resources
from typing import Final

#: Identify the field; the challenge metric drops exactly these three before scoring.
METADATA_COLUMNS: Final[tuple[str, ...]] = ("ImageNumber", "Metadata_FoV", "Metadata_Well")


def _load_image_columns() -> tuple[str, ...]:
    text = resources.files("vstain.evaluation").joinpath("cellprofiler_columns.txt").read_text("utf-8")
    names = tuple(line.strip() for line in text.splitlines() if line.strip())
    # A corrupted install must fail loudly here, not produce a CSV the metric misreads.
    if len(names) != 102 or len(set(names)) != 102:
        raise RuntimeError(f"cellprofiler_columns.txt holds {len(names)} names; expected 102 distinct")
    if list(names) != sorted(names):
        raise RuntimeError("cellprofiler_columns.txt is not in CellProfiler's sorted order")
    missing = set(METADATA_COLUMNS) - set(names)
    if missing:
        raise RuntimeError(f"cellprofiler_columns.txt lacks {sorted(missing)}")
    return names


#: All 102 columns of ``Adipocytes_Image.csv`` in CellProfiler's (sorted) order.
IMAGE_COLUMNS: Final[tuple[str, ...]] = _load_image_columns()

#: The 99 feature columns the metric scores, in CellProfiler's order.
FEATURE_COLUMNS: Final[tuple[str, ...]] = tuple(c for c in IMAGE_COLUMNS if c not in METADATA_COLUMNS)

#: The column groups of the features, by prefix, for reports.
COUNT_COLUMNS: Final[tuple[str, ...]] = tuple(c for c in FEATURE_COLUMNS if c.startswith("Count_"))
GRANULARITY_COLUMNS: Final[tuple[str, ...]] = tuple(c for c in FEATURE_COLUMNS if c.startswith("Granularity_"))
