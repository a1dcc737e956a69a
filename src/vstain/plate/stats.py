"""Intensity statistics per magnification, channel and plane, computed streaming over a plate.

uint16 images make exact streaming statistics cheap: one 65536-bin histogram per
(magnification, channel key) is accumulated field by field (``np.bincount``), so memory is
independent of plate size, and min, max, mean, std and percentiles are then read off the
histogram exactly (percentiles by the same "linear" interpolation as ``np.percentile``).

Channel keys are ``"C04Z01"``..``"C04Z07"`` for the brightfield planes and ``"C01"``, ``"C02"``,
``"C03"`` for the fluorescence targets (``"nuclei"`` etc. are accepted as aliases when looking up).
"""

from __future__ import annotations

import json
import math
import os
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Mapping, Sequence

import numpy as np

from vstain.atomic import atomic_path, write_text_atomic
from vstain.errors import PlateError, PlateNotFound, VstainError
from vstain.plate.images import read_image
from vstain.plate.index import Field
from vstain.vocabulary import BRIGHTFIELD_CHANNEL, MAGNIFICATIONS, PLANES, TARGET_CHANNEL_NAMES, TARGET_CHANNELS

if TYPE_CHECKING:
    from distributed import Client

    from vstain.plate.jobs import ClusterOptions

#: Percentiles computed by default (the reference's 0.01 / 99.99 plus the tails and median).
PERCENTILES: tuple[float, ...] = (0.01, 0.1, 1.0, 50.0, 99.0, 99.9, 99.99)
#: Channel keys of the 7-plane brightfield stack, in stack order.
BRIGHTFIELD_KEYS: tuple[str, ...] = tuple(f"C{BRIGHTFIELD_CHANNEL:02d}Z{z:02d}" for z in PLANES)
#: Channel keys of the fluorescence targets.
TARGET_KEYS: dict[str, str] = {t: f"C{c:02d}" for t, c in TARGET_CHANNELS.items()}

_FORMAT = "vstain.plate_stats"
_N_BINS = 1 << 16


def channel_key(key: str) -> str:
    """Canonical channel key: ``"C04Z03"`` or ``"C01"``; also accepts ``"nuclei"`` and ``"C01Z01"``.

    Raises
    ------
    PlateError
        For anything that names no channel.
    """
    if key in TARGET_KEYS:
        return TARGET_KEYS[key]
    if key in BRIGHTFIELD_KEYS or key in TARGET_KEYS.values():
        return key
    if len(key) == 6 and key[3:] == "Z01" and key[:3] in TARGET_KEYS.values():
        return key[:3]
    raise PlateError(
        f"unknown channel key {key!r}; expected C04Z01..C04Z07, C01/C02/C03 or nuclei/lipids/cytoplasm"
    )


def histogram_percentiles(histogram: np.ndarray, q: Sequence[float] | np.ndarray) -> np.ndarray:
    """Percentiles ``q`` (0-100) of the data whose value counts are ``histogram``.

    Equal to ``np.percentile(data, q)`` (default ``"linear"`` method) for the data with
    ``histogram == np.bincount(data)``, computed without the data.
    """
    counts = np.asarray(histogram, dtype=np.int64)
    n = int(counts.sum())
    if n == 0:
        raise ValueError("percentiles of an empty histogram")
    quantiles = np.true_divide(np.asarray(q, dtype=np.float64), 100)
    if np.any((quantiles < 0) | (quantiles > 1)):
        raise ValueError(f"percentiles must lie in [0, 100], got {q}")
    # Same arithmetic as numpy's "linear" method: virtual index (n-1)q, then its _lerp.
    virtual = (n - 1) * quantiles
    below = np.floor(virtual)
    above = below + 1
    at_end = virtual >= n - 1
    below[at_end] = n - 1
    above[at_end] = n - 1
    cumulative = np.cumsum(counts)
    # The k-th smallest value (0-based) is the first bin whose cumulative count exceeds k.
    a = np.searchsorted(cumulative, below, side="right").astype(np.float64)
    b = np.searchsorted(cumulative, above, side="right").astype(np.float64)
    gamma = virtual - below
    gamma[at_end] = 0.0
    diff = b - a
    return np.where(gamma >= 0.5, b - diff * (1 - gamma), a + diff * gamma)


@dataclass(frozen=True)
class ChannelStats:
    """Statistics of one channel (one brightfield plane or one target) at one magnification.

    ``mean``, ``std``, ``count`` and ``percentiles`` may be absent (None / empty) for tables that
    only give a range, such as :func:`reference_stats`.
    """

    min: float
    max: float
    mean: float | None = None
    std: float | None = None
    count: int | None = None
    percentiles: Mapping[float, float] = dataclass_field(default_factory=dict)

    @classmethod
    def from_histogram(cls, histogram: np.ndarray, *, percentiles: Sequence[float] = PERCENTILES) -> "ChannelStats":
        """Exact statistics of the uint16 data whose value counts are ``histogram`` (65536 bins)."""
        counts = np.asarray(histogram, dtype=np.int64)
        n = int(counts.sum())
        if n == 0:
            raise ValueError("statistics of an empty histogram")
        values = np.arange(counts.size, dtype=np.float64)
        present = np.flatnonzero(counts)
        mean = float(np.dot(counts, values) / n)
        variance = float(np.dot(counts, (values - mean) ** 2) / n)  # population std, like np.std
        levels = histogram_percentiles(counts, percentiles)
        return cls(
            min=float(present[0]),
            max=float(present[-1]),
            mean=mean,
            std=math.sqrt(variance),
            count=n,
            percentiles={float(q): float(v) for q, v in zip(percentiles, levels)},
        )

    def percentile(self, q: float) -> float:
        """The stored ``q``-th percentile; raises :class:`~vstain.errors.PlateError` if it was not computed."""
        for stored, value in self.percentiles.items():
            if math.isclose(stored, q):
                return value
        have = ", ".join(f"{p:g}" for p in self.percentiles) or "none"
        raise PlateError(f"percentile {q:g} was not computed (have: {have}); recompute with `vstain stats`")

    def to_dict(self) -> dict:
        """JSON-safe form (percentile keys as strings like ``"99.99"``)."""
        return {
            "min": self.min,
            "max": self.max,
            "mean": self.mean,
            "std": self.std,
            "count": self.count,
            "percentiles": {f"{q:g}": v for q, v in self.percentiles.items()},
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "ChannelStats":
        """Inverse of :meth:`to_dict`."""
        return cls(
            min=float(data["min"]),
            max=float(data["max"]),
            mean=None if data.get("mean") is None else float(data["mean"]),
            std=None if data.get("std") is None else float(data["std"]),
            count=None if data.get("count") is None else int(data["count"]),
            percentiles={float(q): float(v) for q, v in (data.get("percentiles") or {}).items()},
        )


@dataclass
class PlateStats:
    """Statistics of a plate (or a split of it): ``channels[magnification][key]``.

    ``source`` names where they come from (plate folder, split file and subset), so a model
    bundle can say which data normalised it.
    """

    channels: dict[str, dict[str, ChannelStats]]
    source: dict[str, object] = dataclass_field(default_factory=dict)

    def get(self, magnification: str, key: str) -> ChannelStats:
        """Statistics of channel ``key`` at ``magnification``; one clear error if absent."""
        key = channel_key(key)
        if magnification not in self.channels:
            have = ", ".join(self.channels) or "none"
            raise PlateError(f"no statistics for {magnification} (have: {have})")
        per_channel = self.channels[magnification]
        if key not in per_channel:
            raise PlateError(f"no statistics for {key} at {magnification} (have: {', '.join(per_channel)})")
        return per_channel[key]

    def to_dict(self) -> dict:
        """JSON-safe form, magnifications and keys in a fixed order."""
        return {
            "format": _FORMAT,
            "version": 1,
            "source": self.source,
            "stats": {
                mag: {key: self.channels[mag][key].to_dict() for key in _ordered_keys(self.channels[mag])}
                for mag in sorted(self.channels, key=_mag_order)
            },
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "PlateStats":
        """Inverse of :meth:`to_dict`."""
        if data.get("format") != _FORMAT:
            raise PlateError(f"not a vstain statistics file (format {data.get('format')!r})")
        return cls(
            channels={
                mag: {channel_key(key): ChannelStats.from_dict(value) for key, value in per_channel.items()}
                for mag, per_channel in data["stats"].items()
            },
            source=dict(data.get("source") or {}),
        )

    def save(self, path: str | os.PathLike[str]) -> Path:
        """Write as JSON, atomically."""
        return write_text_atomic(path, json.dumps(self.to_dict(), indent=2) + "\n")

    @classmethod
    def load(cls, path: str | os.PathLike[str]) -> "PlateStats":
        """Read a file written by :meth:`save`; errors name the file."""
        try:
            return cls.from_dict(json.loads(Path(path).read_text(encoding="utf-8")))
        except FileNotFoundError:
            raise PlateNotFound(f"{path}: no such statistics file") from None
        except (json.JSONDecodeError, UnicodeDecodeError) as exc:
            raise PlateError(f"{path}: not valid JSON ({exc})") from None
        except (KeyError, TypeError, ValueError, AttributeError, VstainError) as exc:
            raise PlateError(f"{path}: malformed statistics file ({exc.__class__.__name__}: {exc})") from None


def compute_stats(
    fields: Iterable[Field],
    *,
    percentiles: Sequence[float] = PERCENTILES,
    source: Mapping[str, object] | None = None,
    cluster: "ClusterOptions | Client | None" = None,
    results: str | os.PathLike[str] | None = None,
    progress: bool = False,
) -> PlateStats:
    """Exact statistics of ``fields``, one field per task, one image in memory at a time.

    Parameters
    ----------
    fields
        The fields to describe (typically the training subset of a split).
    percentiles
        Percentiles (0-100) to store for every channel.
    source
        Provenance stored with the statistics (plate, split, subset).
    cluster
        Where the fields' histograms are computed (:class:`~vstain.plate.jobs.ClusterOptions`, or
        an open ``distributed.Client``); default: here, in this process, without Dask.
    results
        Folder for each field's histograms (``<well>_F<nnn>_<mag>.npz``), saved as each field
        ends, so a killed run resumes; a saved histogram is reused only while its images are
        unchanged (name, size, modification time).
    progress
        A progress bar over fields on stderr.

    Returns
    -------
    PlateStats
        One :class:`ChannelStats` per magnification and channel key present in ``fields``.
    """
    fields = list(fields)
    histograms: dict[tuple[str, str], np.ndarray] = {}
    n_fields: dict[str, int] = {}
    store = Path(results) if results is not None else None

    def add(field: Field, counts: Mapping[str, np.ndarray]) -> None:
        if store is not None:
            _save_histograms(store, field, counts)
        n_fields[field.magnification] = n_fields.get(field.magnification, 0) + 1
        for key, values in counts.items():
            slot = (field.magnification, key)
            histograms[slot] = histograms[slot] + values if slot in histograms else values.astype(np.int64)

    todo = []
    for f in fields:
        saved = _load_histograms(store, f) if store is not None else None
        if saved is None:
            todo.append(f)
        else:
            add(f, saved)
    if todo and cluster is None:
        for f in todo:
            add(f, field_histograms(f))
    elif todo:
        from vstain.plate.jobs import ClusterOptions, map_fields, open_client

        if isinstance(cluster, ClusterOptions):
            with open_client(cluster) as client:
                map_fields(client, field_histograms, todo, label=lambda f: f.label, on_result=add,
                           progress=progress, desc="stats")
        else:
            map_fields(cluster, field_histograms, todo, label=lambda f: f.label, on_result=add,
                       progress=progress, desc="stats")
    if not histograms:
        raise PlateError("no fields to compute statistics on (empty selection)")
    channels: dict[str, dict[str, ChannelStats]] = {}
    for (mag, key), counts in sorted(histograms.items()):
        channels.setdefault(mag, {})[key] = ChannelStats.from_histogram(counts, percentiles=percentiles)
    return PlateStats(channels=channels, source={**(source or {}), "fields": n_fields})


def field_histograms(field: Field) -> dict[str, np.ndarray]:
    """The 65536-bin value counts of each image of ``field``, by channel key (one image in memory at a time)."""
    counts: dict[str, np.ndarray] = {}
    images = [*zip(BRIGHTFIELD_KEYS, field.brightfield), *((TARGET_KEYS[t], p) for t, p in field.targets.items())]
    for key, path in images:
        image = read_image(path)
        if image.dtype != np.uint16:
            raise PlateError(f"{path}: {image.dtype} data; statistics need uint16 images")
        counts[key] = np.bincount(image.ravel(), minlength=_N_BINS).astype(np.int64)
    return counts


def _histogram_file(folder: Path, field: Field) -> Path:
    return folder / f"{field.well}_F{field.field:03d}_{field.magnification}.npz"


def _save_histograms(folder: Path, field: Field, counts: Mapping[str, np.ndarray]) -> None:
    """Save a field's histograms sparsely (values present and their counts), atomically."""
    arrays = {}
    for key, values in counts.items():
        present = np.flatnonzero(values)
        arrays[f"{key}.values"] = present.astype(np.uint16)
        arrays[f"{key}.counts"] = values[present]
    with atomic_path(_histogram_file(folder, field)) as tmp, open(tmp, "wb") as handle:
        np.savez(handle, signature=np.array(field.signature()), **arrays)


def _load_histograms(folder: Path, field: Field) -> dict[str, np.ndarray] | None:
    try:
        with np.load(_histogram_file(folder, field), allow_pickle=False) as archive:
            if str(archive["signature"]) != field.signature():
                return None
            counts = {}
            for name in archive.files:
                if name.endswith(".values"):
                    key = name.removesuffix(".values")
                    values = np.zeros(_N_BINS, dtype=np.int64)
                    values[archive[name].astype(np.int64)] = archive[f"{key}.counts"]
                    counts[key] = values
            return counts
    except (OSError, ValueError, KeyError):
        return None


def reference_stats() -> PlateStats:
    """The reference solution's min/max table (its ``exp_stats/*_stats.csv``, all 8 wells).

    Only ``min`` and ``max`` are given: enough to reproduce the reference ``minmax``
    normalisation on the challenge data. The CSV values are used where the report's table has
    typos (20x C04Z02 min 185, 20x C04Z05 max 19280).
    """
    keys = (*TARGET_CHANNEL_NAMES, *BRIGHTFIELD_KEYS)
    table = {
        "20x": [(0, 24835), (0, 3467), (45, 65535), (205, 13522), (185, 14515), (123, 18461),
                (109, 19788), (134, 19280), (144, 17543), (183, 15875)],
        "40x": [(0, 17794), (0, 2633), (30, 32504), (1, 5900), (4, 5547), (7, 5151),
                (1, 4703), (13, 4362), (4, 4888), (23, 4794)],
        "60x": [(0, 15169), (0, 5328), (23, 11177), (0, 4796), (0, 4359), (0, 4166),
                (0, 4414), (0, 4417), (0, 4793), (11, 4225)],
    }  # fmt: skip
    return PlateStats(
        channels={
            mag: {key: ChannelStats(min=float(lo), max=float(hi)) for key, (lo, hi) in zip(keys, rows)}
            for mag, rows in table.items()
        },
        source={"reference": "HASTE exp_stats/{20x,40x,60x}_stats.csv (min/max over all 8 wells)"},
    )


def _mag_order(magnification: str) -> int:
    return MAGNIFICATIONS.index(magnification) if magnification in MAGNIFICATIONS else len(MAGNIFICATIONS)


def _ordered_keys(per_channel: Mapping[str, ChannelStats]) -> list[str]:
    order = [*BRIGHTFIELD_KEYS, *TARGET_KEYS.values()]
    return sorted(per_channel, key=lambda k: order.index(k) if k in order else len(order))
