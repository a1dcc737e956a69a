"""The evaluation benchmark: a deterministic synthetic field, the timing hook, 1 vs default threads."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch
from skimage.measure import label

from vstain.bench.evaluation import bench_evaluation, benchmark_measure_field, synthetic_field
from vstain.bench.run import format_table


@dataclass
class FakeMeasurements:
    objects: dict


def count_nuclei(nuclei, lipids, cytoplasm, *, magnification):
    """Cheap stand-in with measure_field's contract (only the object tables are read)."""
    n = int(label(nuclei > 1000).max())
    return FakeMeasurements({"nuclei_no_edge": pd.DataFrame({"ObjectNumber": np.arange(1, n + 1)})})


def test_synthetic_field_and_timing_hook():
    images = synthetic_field((96, 128), magnification="40x", seed=0)
    assert set(images) == {"C01", "C02", "C03"}
    assert all(im.dtype == np.uint16 and im.shape == (96, 128) for im in images.values())
    assert images["C01"].max() > 1311  # nuclei above the 20x threshold floor (0.02 * 65535)
    assert np.array_equal(images["C02"], synthetic_field((96, 128), magnification="40x", seed=0)["C02"])
    timing = benchmark_measure_field((96, 128), "40x", repeats=2, measure=count_nuclei)
    assert timing["shape"] == (96, 128) and timing["repeats"] == 2 and len(timing["seconds"]) == 2
    assert timing["seconds_per_field"] > 0 and timing["objects"]["nuclei_no_edge"] >= 1


def test_bench_reports_the_evaluation_with_one_and_the_default_threads():
    from vstain.evaluation.pipeline import default_threads

    rows = bench_evaluation((96, 112), log=lambda _: None)
    assert [r["threads"] for r in rows] == sorted({1, default_threads()})
    assert all(r["field"] == "96x112" and r["seconds"] > 0 and r["cpu_seconds"] > 0 for r in rows)
    assert rows[0]["objects"] == rows[-1]["objects"]  # threads change the time, not the result
    table = format_table({"device": "cpu", "torch": torch.__version__, "evaluation": rows})
    assert "measure_field" in table and "96x112" in table
