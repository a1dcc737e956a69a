"""Thread safety of the measurement: centrosome's lazily built shrink tables (issue 16, item 1).

The race needs the lookup tables to be unbuilt, which only a fresh process sees; each test here
resets them to ``None`` first (and puts the built ones back afterwards), then has two threads
reach the shrink step with staggered starts.
"""

from __future__ import annotations

import threading
import time
from pathlib import Path

import numpy as np
import pytest
import tifffile
from centrosome import cpmorphology

from vstain.evaluation import reconstruction
from vstain.evaluation.objects import find_maxima
from vstain.evaluation.pipeline import measure_field

FIXTURES = Path(__file__).parent / "fixtures"
FOOTPRINT = np.ones((3, 3), bool)
#: What centrosome builds on binary_shrink's first call (centrosome/cpmorphology.py).
SHRINK_TABLES = (
    "erode_table",
    "binary_shrink_ulr_table",
    "binary_shrink_urb_table",
    "binary_shrink_lrl_table",
    "binary_shrink_llt_table",
)


@pytest.fixture()
def fresh_tables():
    """A function that resets the lazy state to what a fresh process has; restored afterwards."""
    cpmorphology.binary_shrink(np.zeros((3, 3), bool))
    built = {name: getattr(cpmorphology, name) for name in SHRINK_TABLES}
    checks = dict(reconstruction._SELF_CHECK)

    def reset() -> None:
        for name in SHRINK_TABLES:
            setattr(cpmorphology, name, None)
        reconstruction._SELF_CHECK.clear()

    yield reset
    for name, table in built.items():
        setattr(cpmorphology, name, table)
    reconstruction._SELF_CHECK.clear()
    reconstruction._SELF_CHECK.update(checks)


def _blobs(seed: int, size: int = 48) -> tuple[np.ndarray, np.ndarray]:
    """A smooth image with a few bright blobs and its foreground labels."""
    rng = np.random.default_rng(seed)
    yy, xx = np.mgrid[:size, :size]
    image = np.zeros((size, size))
    for cy, cx in rng.uniform(6, size - 6, (5, 2)):
        image += np.exp(-((yy - cy) ** 2 + (xx - cx) ** 2) / 18.0)
    labels = (image > 0.2).astype(np.int32)
    return image, labels


def _run_two(first, second, stagger: float | None) -> list[BaseException]:
    """Run ``first`` and ``second`` in two threads, the second ``stagger`` s later (None: as
    soon as centrosome has set ``erode_table``, the start of the unsafe window). Returns errors."""
    errors: list[BaseException] = []
    start = threading.Barrier(2)

    def call(job, delay):
        start.wait()
        if delay is None:
            deadline = time.perf_counter() + 5
            while cpmorphology.erode_table is None and time.perf_counter() < deadline:
                time.sleep(0)
        elif delay:
            time.sleep(delay)
        try:
            job()
        except BaseException as exc:  # noqa: BLE001 - collected for the assertion
            errors.append(exc)

    threads = [threading.Thread(target=call, args=(first, 0.0)), threading.Thread(target=call, args=(second, stagger))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    return errors


def _build_seconds(reset) -> float:
    reset()
    started = time.perf_counter()
    cpmorphology.binary_shrink(np.zeros((3, 3), bool))
    return time.perf_counter() - started


def test_find_maxima_in_two_threads_on_fresh_tables_never_fails(fresh_tables):
    """The shrink step both branches run, started with staggers across the tables' build time."""
    build = _build_seconds(fresh_tables)
    image, labels = _blobs(0)
    expected = find_maxima(image, labels, FOOTPRINT, 1.0)
    results: list[np.ndarray] = []

    def job():
        results.append(find_maxima(image, labels, FOOTPRINT, 1.0))

    staggers = [None] * 6 + list(np.linspace(0.0, 1.5 * build, 30))
    failures = []
    for stagger in staggers:
        fresh_tables()
        failures += _run_two(job, job, stagger)
    assert not failures, f"{len(failures)} of {2 * len(staggers)} calls failed, e.g. {failures[0]!r}"
    assert len(results) == 2 * len(staggers)
    for result in results:
        np.testing.assert_array_equal(result, expected)
    assert all(getattr(cpmorphology, name) is not None for name in SHRINK_TABLES)


def test_a_slow_table_build_is_waited_for(fresh_tables, monkeypatch):
    """With the build slowed down, the second thread starts inside the unsafe window every time."""
    make_table = cpmorphology.make_table

    def slow_make_table(*args, **kwargs):
        time.sleep(0.005)
        return make_table(*args, **kwargs)

    monkeypatch.setattr(cpmorphology, "make_table", slow_make_table)
    image, labels = _blobs(1)
    failures = []
    for _ in range(3):
        fresh_tables()
        failures += _run_two(
            lambda: find_maxima(image, labels, FOOTPRINT, 1.0), lambda: find_maxima(image, labels, FOOTPRINT, 1.0), None
        )
    assert not failures, f"{len(failures)} of 6 calls failed, e.g. {failures[0]!r}"


def _crop(magnification: str, size: int) -> list[np.ndarray]:
    folder = FIXTURES / magnification
    return [
        tifffile.imread(folder / f"AssayPlate_Greiner_#655090_B02_T0001F001L01A{c:02d}Z01C{c:02d}.tif")[:size, :size]
        for c in (1, 2, 3)
    ]


def test_measure_field_with_two_threads_on_fresh_state_is_stable(fresh_tables):
    """measure_field(threads=2) repeatedly from a fresh state equals the one-thread result."""
    # At this size the two branches reach the shrink step close together: on the unguarded
    # code 6 of 8 such runs failed (2-core machine), so 12 passing runs are meaningful.
    images = _crop("20x", 192)
    reference = measure_field(*images, magnification="20x", threads=1).features
    for _ in range(12):
        fresh_tables()
        features = measure_field(*images, magnification="20x", threads=2).features
        assert features.keys() == reference.keys()
        np.testing.assert_array_equal(np.array(list(features.values())), np.array(list(reference.values())))


def test_build_lazy_state_builds_every_table_once(fresh_tables):
    from vstain.evaluation.lazy_state import build_lazy_state, shrink_tables_ready

    fresh_tables()
    assert not shrink_tables_ready()
    build_lazy_state()
    assert shrink_tables_ready()
    tables = [getattr(cpmorphology, name) for name in SHRINK_TABLES]
    build_lazy_state()  # a second call keeps the same tables
    assert all(getattr(cpmorphology, name) is table for name, table in zip(SHRINK_TABLES, tables, strict=True))
    assert reconstruction._SELF_CHECK  # the reconstruction loop's self-check ran too
