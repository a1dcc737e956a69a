"""Lazily built library state the measurement threads share, built once under a lock.

:func:`vstain.evaluation.pipeline.measure_field` runs the lipid branch in a second thread beside
the nuclei/cell branch, and both segment objects. The one piece of module state they build on
first use is in centrosome: ``centrosome.cpmorphology.binary_shrink`` (used to thin local
maxima to points when declumping) fills five lookup tables the first time it is called, and it
assigns ``erode_table`` *before* the four shrink tables. A second thread arriving in between
sees ``erode_table`` set, skips the build and reads a shrink table that is still ``None``
(``AttributeError: 'NoneType' object has no attribute 'astype'``). The build is pure Python
(512 small labelings), so under the GIL it lasts long enough for this to happen on most runs of
a small plate.

The rest was checked by snapshotting every module global of centrosome, scikit-image, SciPy,
NumPy and vstain before and after a first measurement at each magnification: no other global
changes, no module is imported on first use and no ``functools`` cache fills, apart from
:mod:`vstain.evaluation.reconstruction`'s self-check of scikit-image's private loop, a
dictionary entry whose concurrent first computation is harmless (same value) but which is built
here as well so that threads only ever read.

:func:`build_lazy_state` is called before any thread starts; :func:`binary_shrink` also calls it,
so a caller that starts its own threads is safe too.
"""

from __future__ import annotations

import threading

import numpy as np
from centrosome import cpmorphology

from vstain.evaluation.reconstruction import _fast_loop_usable

#: The tables ``centrosome.cpmorphology.binary_shrink`` builds on its first call.
SHRINK_TABLES = (
    "erode_table",
    "binary_shrink_ulr_table",
    "binary_shrink_urb_table",
    "binary_shrink_lrl_table",
    "binary_shrink_llt_table",
)

_LOCK = threading.Lock()


def shrink_tables_ready() -> bool:
    """Whether all of centrosome's ``binary_shrink`` tables are built.

    A table the installed centrosome does not have counts as ready (a release that builds them
    differently needs nothing from here).
    """
    return all(getattr(cpmorphology, name, "absent") is not None for name in SHRINK_TABLES)


def build_lazy_state() -> None:
    """Build every lazily built table the measurement threads read, once, under a lock.

    Cheap after the first call (a lock and a few attribute reads). Safe to call from any
    thread: a thread that arrives while another is building waits for it to finish.
    """
    with _LOCK:
        if not shrink_tables_ready():
            cpmorphology.binary_shrink(np.zeros((3, 3), bool))
        _fast_loop_usable()


def binary_shrink(image: np.ndarray) -> np.ndarray:
    """``centrosome.cpmorphology.binary_shrink(image)`` (shrink until idempotent), thread-safe.

    Parameters
    ----------
    image
        2-D boolean image.

    Returns
    -------
    numpy.ndarray
        Boolean image of the same shape, every object shrunk to a point or a thin line.
    """
    build_lazy_state()
    return cpmorphology.binary_shrink(image)
