"""Intensity normalisation with an exact inverse: ``forward(x) = x * scale + offset`` per channel.

Two kinds:

* ``minmax`` — the reference behaviour: ``(x - min) / (max - min)``, clipped to [0, 1] by
  default, exactly as the reference clipped (its stats came from all wells, so nothing
  in-distribution was clipped; its cytoplasm target used only ~5 % of [0, 1]).
* ``percentile`` — robust: ``(x - p_low) / (p_high - p_low)`` with p_low / p_high the 0.01th /
  99.99th percentiles by default, so one hot pixel or a saturated spot does not squeeze the
  whole range. **Not clipped by default**: the top 0.01 % (saturated cytoplasm, the brightest
  nuclei) carries real signal and CellProfiler's max/integrated intensity features see it;
  clipping would erase it and break the inverse for those pixels. Values slightly above 1 are
  harmless for regression heads; pass ``clip=True`` where a bounded output (sigmoid) needs it.

The transform is stored as ``scale`` and ``offset`` vectors (one entry per channel), so torch
code applies it as ``x * scale.view(1, C, 1, 1) + offset.view(1, C, 1, 1)`` without this module
importing torch. :meth:`Normalizer.to_dict` / :meth:`Normalizer.from_dict` carry it in model
bundles.
"""

from __future__ import annotations

from typing import Literal, Mapping, Sequence

import numpy as np

from vstain.errors import ConfigError
from vstain.plate.stats import BRIGHTFIELD_KEYS, PlateStats, channel_key, reference_stats

Kind = Literal["minmax", "percentile"]
KINDS: tuple[str, ...] = ("minmax", "percentile")
DEFAULT_PERCENTILES: tuple[float, float] = (0.01, 99.99)

__all__ = ["DEFAULT_PERCENTILES", "KINDS", "Normalizer", "reference_stats"]


class Normalizer:
    """Per-channel affine map of raw counts to roughly [0, 1], and back.

    Parameters
    ----------
    low, high
        Raw values mapped to 0 and 1, one per channel (``high > low``).
    channels
        Channel keys, in the order of the channel axis (e.g. ``C04Z01``..``C04Z07``).
    kind
        ``"minmax"`` or ``"percentile"`` (how ``low``/``high`` were chosen; recorded for bundles).
    clip
        Clip the forward output to [0, 1]. Default: True for ``minmax`` (the reference), False
        for ``percentile`` (see module docstring).
    percentiles
        The (low, high) percentiles used, for ``percentile``.
    magnification
        The magnification the statistics belong to, recorded for bundles.
    """

    def __init__(
        self,
        low: Sequence[float] | np.ndarray,
        high: Sequence[float] | np.ndarray,
        *,
        channels: Sequence[str],
        kind: Kind = "minmax",
        clip: bool | None = None,
        percentiles: tuple[float, float] | None = None,
        magnification: str | None = None,
    ) -> None:
        if kind not in KINDS:
            raise ConfigError(f"unknown normalisation {kind!r}; expected one of {', '.join(KINDS)}")
        self.low = np.asarray(low, dtype=np.float64).reshape(-1)
        self.high = np.asarray(high, dtype=np.float64).reshape(-1)
        self.channels = tuple(channels)
        if not (len(self.channels) == self.low.size == self.high.size):
            raise ConfigError(
                f"normaliser needs one low and one high per channel: {len(self.channels)} channels, "
                f"{self.low.size} lows, {self.high.size} highs"
            )
        span = self.high - self.low
        for name, lo, hi, s in zip(self.channels, self.low, self.high, span):
            if not (np.isfinite(lo) and np.isfinite(hi) and s > 0):
                where = f" at {magnification}" if magnification else ""
                raise ConfigError(
                    f"channel {name}{where}: range [{lo:g}, {hi:g}] is empty; cannot normalise a constant channel"
                )
        self.kind: Kind = kind
        self.clip = (kind == "minmax") if clip is None else bool(clip)
        self.percentiles = tuple(percentiles) if percentiles is not None else None
        self.magnification = magnification
        self.span = span

    # -- construction -----------------------------------------------------------------------

    @classmethod
    def from_stats(
        cls,
        stats: PlateStats,
        magnification: str,
        channels: Sequence[str] = BRIGHTFIELD_KEYS,
        *,
        kind: Kind = "minmax",
        percentiles: tuple[float, float] = DEFAULT_PERCENTILES,
        clip: bool | None = None,
    ) -> "Normalizer":
        """Normaliser for ``channels`` at ``magnification`` from plate statistics.

        ``channels`` defaults to the 7 brightfield planes (``C04Z01``..``C04Z07``), each with its
        own range; use e.g. ``("C02",)`` or ``("lipids",)`` for a target.
        """
        keys = tuple(channel_key(c) for c in channels)
        entries = [stats.get(magnification, k) for k in keys]
        if kind == "minmax":
            low = [e.min for e in entries]
            high = [e.max for e in entries]
            used = None
        elif kind == "percentile":
            lo_q, hi_q = percentiles
            if not 0 <= lo_q < hi_q <= 100:
                raise ConfigError(f"percentiles {percentiles} must satisfy 0 <= low < high <= 100")
            low = [e.percentile(lo_q) for e in entries]
            high = [e.percentile(hi_q) for e in entries]
            used = (float(lo_q), float(hi_q))
        else:
            raise ConfigError(f"unknown normalisation {kind!r}; expected one of {', '.join(KINDS)}")
        return cls(low, high, channels=keys, kind=kind, clip=clip, percentiles=used, magnification=magnification)

    # -- the transform -----------------------------------------------------------------------

    @property
    def scale(self) -> np.ndarray:
        """Per-channel factor (``1 / (high - low)``), shape ``(C,)``, float64."""
        return 1.0 / self.span

    @property
    def offset(self) -> np.ndarray:
        """Per-channel offset (``-low / (high - low)``), shape ``(C,)``, float64."""
        return -self.low / self.span

    def forward(self, image: np.ndarray, *, dtype: type | np.dtype = np.float32) -> np.ndarray:
        """Normalise ``image``: ``(C, H, W)``, ``(B, C, H, W)``, or ``(H, W)`` for one channel.

        Computed in ``dtype`` (float32 by default; float64 for an exact inverse).
        """
        dtype = np.dtype(dtype)
        if dtype.kind != "f":
            raise ValueError(f"forward output dtype must be floating, got {dtype}")
        # (x - low) * scale equals x * scale + offset, but subtracting first is exact for integer
        # counts, so the low end maps to exactly 0 and float32 loses nothing to cancellation.
        low, scale = self._broadcast(image, self.low, dtype), self._broadcast(image, self.scale, dtype)
        out = (np.asarray(image, dtype=dtype) - low) * scale
        if self.clip:
            np.clip(out, 0.0, 1.0, out=out)
        return out

    __call__ = forward

    def inverse(self, normalised: np.ndarray, *, dtype: type | np.dtype = np.float64) -> np.ndarray:
        """Map normalised values back to raw counts (``y * (high - low) + low``).

        With ``dtype=np.uint16`` the counts are rounded and clipped to 0-65535, ready for a TIFF.
        """
        dtype = np.dtype(dtype)
        work = np.dtype(np.float64) if dtype.kind != "f" else dtype
        span = self._broadcast(normalised, self.span, work)
        low = self._broadcast(normalised, self.low, work)
        raw = np.asarray(normalised, dtype=work) * span + low
        if dtype.kind in "ui":
            info = np.iinfo(dtype)
            return np.clip(np.rint(raw), info.min, info.max).astype(dtype)
        return raw

    def _broadcast(self, image: np.ndarray, values: np.ndarray, dtype: np.dtype) -> np.ndarray | np.floating:
        ndim = np.ndim(image)
        n = len(self.channels)
        if ndim == 2:
            if n != 1:
                raise ValueError(
                    f"a 2-D image has one channel but this normaliser has {n} ({', '.join(self.channels)})"
                )
            return dtype.type(values[0])
        if ndim < 2 or np.shape(image)[-3] != n:
            raise ValueError(
                f"expected (C, H, W) or (B, C, H, W) with C={n} ({', '.join(self.channels)}), "
                f"got shape {np.shape(image)}"
            )
        return values.astype(dtype).reshape(n, 1, 1)

    # -- persistence -------------------------------------------------------------------------

    def to_dict(self) -> dict:
        """JSON-safe description (for model bundles)."""
        return {
            "kind": self.kind,
            "channels": list(self.channels),
            "low": self.low.tolist(),
            "high": self.high.tolist(),
            "clip": self.clip,
            "percentiles": list(self.percentiles) if self.percentiles is not None else None,
            "magnification": self.magnification,
        }

    @classmethod
    def from_dict(cls, data: Mapping) -> "Normalizer":
        """Inverse of :meth:`to_dict`; a missing key is named in the error."""
        try:
            percentiles = data.get("percentiles")
            return cls(
                data["low"],
                data["high"],
                channels=data["channels"],
                kind=data["kind"],
                clip=data.get("clip"),
                percentiles=tuple(percentiles) if percentiles is not None else None,  # type: ignore[arg-type]
                magnification=data.get("magnification"),
            )
        except KeyError as exc:
            raise ConfigError(f"normaliser description lacks key {exc.args[0]!r}") from None

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Normalizer) and self.to_dict() == other.to_dict()

    def __repr__(self) -> str:
        where = f" {self.magnification}" if self.magnification else ""
        return f"Normalizer({self.kind}{where}, channels={list(self.channels)}, clip={self.clip})"
