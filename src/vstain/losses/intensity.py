"""Pixel-intensity losses: log-squared loss and median-normalised mean absolute error.

Shapes: ``x`` (prediction) and ``y`` (target) are ``(B, C, H, W)`` float tensors on the
normalised ``[0, 1]`` scale (``C`` is 1 for a single stain). Both losses are computed in float32
whatever the input dtype, so bf16 autocast does not degrade the reduction.
"""

from __future__ import annotations

from typing import Literal, Sequence

import torch
from torch import nn

MedianScope = Literal["sample", "batch", "dataset"]
MEDIAN_SCOPES: tuple[str, ...] = ("sample", "batch", "dataset")

#: The reference's epsilon; kept only to reproduce its behaviour (one zero target pixel out of
#: four with a prediction of 0.01 costs 47.7, and the gradient at x = 0 against y = 1 is 3.7e9).
REFERENCE_LOG_EPS = 1e-8

#: Default floor of the log-squared loss and of the median. Targets are uint16 rescaled by the
#: channel's (max - min), which is 2,633 to 65,490 DN in the reference statistics (report
#: Table 1), so one DN is 1.5e-5 to 3.8e-4 on the [0, 1] scale, and exact zeros occur (min = 0
#: for C01/C02). An epsilon far below one DN makes the loss tell 0 DN from 1 DN apart by a
#: factor of 1/eps: with 1e-8 a zero pixel predicted at 0.01 costs (ln 1e6)**2 = 191, as much
#: as ~400 pixels predicted at half their true value ((ln 2)**2 = 0.48 each). 1e-3 is 2.6 DN on
#: the narrowest channel (C02 40x) and 65 DN on the widest
#: (C03 20x, whose useful range is ~3,500 DN: under 2 % of it), so "black" is treated as black.
#: It bounds the cost of a zero target pixel by ln((1 + eps) / eps)**2 = 47.7 for the worst
#: possible prediction x = 1 (339 with 1e-8), and the gradient 2 |ln| / (x + eps) by 1.4e4
#: instead of 3.7e9.
DEFAULT_EPS = 1e-3


def _check_eps(eps: float) -> float:
    if not eps > 0:
        raise ValueError(f"eps must be > 0, got {eps!r}")
    return float(eps)


def check_median_scope(median: str, reference: Sequence[float] | None) -> MedianScope:
    """Validate a median scope (and that ``"dataset"`` comes with its reference medians)."""
    if median not in MEDIAN_SCOPES:
        raise ValueError(f"median must be one of {MEDIAN_SCOPES}, got {median!r}")
    if median == "dataset" and not reference:
        raise ValueError("median='dataset' needs the per-channel reference medians of the training targets")
    return median  # type: ignore[return-value]


def reference_tensor(reference: Sequence[float] | None) -> torch.Tensor | None:
    """``reference`` as a float32 ``(C,)`` tensor (None stays None); values must be > 0."""
    if reference is None:
        return None
    values = torch.as_tensor(list(reference), dtype=torch.float32).reshape(-1)
    if not bool(torch.all(torch.isfinite(values) & (values > 0))):
        raise ValueError(f"reference medians must be finite and > 0, got {values.tolist()}")
    return values


def _check_same_shape(x: torch.Tensor, y: torch.Tensor) -> None:
    if x.shape != y.shape:
        raise ValueError(f"prediction shape {tuple(x.shape)} != target shape {tuple(y.shape)}")


def target_median(
    y: torch.Tensor,
    *,
    scope: MedianScope = "sample",
    eps: float = DEFAULT_EPS,
    reference: torch.Tensor | None = None,
) -> torch.Tensor:
    """The denominator of the median-normalised error: a median of the target, or a fixed one.

    Parameters
    ----------
    y : (B, C, H, W) tensor
        Target batch.
    scope : {"sample", "batch", "dataset"}
        ``"sample"``: one median per image (sample and channel), returned with shape
        ``(B, C, 1, 1)`` so it broadcasts against ``y``; ``"batch"`` (the reference): one median
        over every value of the batch, returned as a 0-d tensor; ``"dataset"``: the fixed
        per-channel ``reference`` (the median of the training fields' raw counts on the
        normalised scale, see :func:`dataset_reference`), returned with shape ``(1, C, 1, 1)``.
    eps : float
        Floor, so an (almost) empty target does not divide by zero.
    reference : (C,) tensor, optional
        Required for ``scope="dataset"``.

    Returns
    -------
    Tensor
        The median(s), detached (the target carries no gradient). For an even number of values
        this is the *lower* of the two middle values, as :func:`torch.median` returns (the
        reference used ``torch.median`` too).
    """
    if scope == "sample":
        # One median per image: per sample and, for multi-stain outputs, per channel.
        start = 2 if y.dim() >= 3 else 1
        med = y.detach().flatten(start).median(dim=-1).values
        med = med.view(*med.shape, *([1] * (y.dim() - med.dim())))
    elif scope == "batch":
        med = y.detach().median()
    elif scope == "dataset":
        if reference is None:
            raise ValueError("median='dataset' needs the per-channel reference medians")
        channels = y.shape[1] if y.dim() >= 2 else 1
        if reference.numel() != channels:
            raise ValueError(f"{reference.numel()} reference median(s) for {channels} target channel(s)")
        med = reference.detach().to(device=y.device, dtype=torch.float32).view(1, channels, *([1] * (y.dim() - 2)))
    else:
        raise ValueError(f"median must be one of {MEDIAN_SCOPES}, got {scope!r}")
    return med.clamp_min(eps)


def dataset_reference(raw_median: float, low: float, high: float) -> float:
    """The ``"dataset"`` denominator of one channel, on the normalised scale.

    With the target normalised as ``n = (raw - low) / (high - low)``, an error of ``d`` on the
    normalised scale is ``d * (high - low)`` raw counts, so dividing it by
    ``raw_median / (high - low)`` gives ``|raw error| / raw_median``: exactly the challenge's
    pixelwise metric (MAE over the pooled median of the raw target, offset included), per pixel.
    A per-crop median (``"sample"``) instead measures the crop's median *above ``low``*, which is
    near 0 on dark crops and let them dominate the loss (docs/training.md, "Loss scale").

    >>> dataset_reference(1000.0, 100.0, 2100.0)
    0.5
    """
    span = float(high) - float(low)
    if not span > 0:
        raise ValueError(f"empty normalisation range [{low}, {high}]")
    return float(raw_median) / span


class LogSquaredLoss(nn.Module):
    """Log-squared loss ``mean((ln((y + eps) / (x + eps)))**2)`` (report eq. 3).

    Parameters
    ----------
    eps : float
        Floor added to both images. Default :data:`DEFAULT_EPS` (1e-3); the reference used
        :data:`REFERENCE_LOG_EPS` (1e-8), which makes zero-valued target pixels dominate the
        loss and its gradient.

    Shapes: ``x``, ``y``: ``(B, C, H, W)``, values >= 0 (``x + eps`` must stay positive).
    Returns a 0-d float32 tensor.
    """

    def __init__(self, *, eps: float = DEFAULT_EPS) -> None:
        super().__init__()
        self.eps = _check_eps(eps)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_same_shape(x, y)
        x, y = x.float(), y.float()
        return (torch.log(y + self.eps) - torch.log(x + self.eps)).square().mean()

    def extra_repr(self) -> str:
        return f"eps={self.eps:g}"


class MedianMAE(nn.Module):
    """Median-normalised mean absolute error ``mean|x - y| / median(y)`` (report eq. 4).

    Parameters
    ----------
    median : {"sample", "batch", "dataset"}
        ``"sample"`` (default): each sample's MAE is divided by its own target median (per
        channel when ``C > 1``) and the ratios are averaged over the batch.
        ``"batch"``: the reference, one median over the whole batch tensor.
        ``"dataset"``: a fixed per-channel ``reference`` (see :func:`dataset_reference`), which
        makes the loss the challenge's pixelwise metric on the training crops.
        The median is the lower median (see :func:`target_median`).
    reference : sequence of float, optional
        Per-channel denominators for ``median="dataset"`` (normalised scale).
    eps : float
        The median is clamped to at least `eps` (the reference had no guard), so an all-zero
        target costs at most ``mean|x| / eps``.
    squared : float
        Weight of an added squared term (see :func:`relative_error`); 0 (default) is the plain MAE/median.

    Shapes: ``x``, ``y``: ``(B, C, H, W)``. Returns a 0-d float32 tensor.
    """

    def __init__(
        self,
        *,
        median: MedianScope = "sample",
        eps: float = DEFAULT_EPS,
        reference: Sequence[float] | None = None,
        squared: float = 0.0,
    ) -> None:
        super().__init__()
        self.median = check_median_scope(median, reference)
        self.eps = _check_eps(eps)
        self.squared = check_squared(squared)
        self.register_buffer("reference", reference_tensor(reference), persistent=False)

    def forward(self, x: torch.Tensor, y: torch.Tensor) -> torch.Tensor:
        _check_same_shape(x, y)
        x, y = x.float(), y.float()
        # Every sample has the same pixel count, so the mean of per-pixel ratios equals the batch
        # mean of per-sample MAE / median.
        med = target_median(y, scope=self.median, eps=self.eps, reference=self.reference)
        return relative_error(x - y, med, squared=self.squared).mean()

    def extra_repr(self) -> str:
        return f"median={self.median!r}, eps={self.eps:g}, squared={self.squared:g}"


def check_squared(squared: float) -> float:
    """Validate the weight of the squared term (finite, >= 0)."""
    if not (squared >= 0 and squared < float("inf")):
        raise ValueError(f"squared must be a finite number >= 0, got {squared!r}")
    return float(squared)


def relative_error(difference: torch.Tensor, median: torch.Tensor, *, squared: float = 0.0) -> torch.Tensor:
    """Per-pixel ``|r| + squared * r**2`` with ``r = difference / median``.

    With ``squared = 0`` this is the MAE/median of the challenge's pixel metric, whose gradient has
    the same size for every pixel: on a sparse stain the many background pixels, whose errors are
    noise, drown the few bright objects still missed (a nucleus is 5-10 medians above the
    background), and a network spends hundreds of steps predicting background everywhere. The
    squared term (a smooth reverse Huber, as in depth estimation's berHu loss) leaves errors below
    a median almost L1 but makes a missed nucleus pull ``2 * squared * r`` times harder, so such
    objects are learnt early; at convergence the errors are small and the L1 part, the metric, rules.
    """
    ratio = difference / median
    error = ratio.abs()
    return error + squared * ratio.square() if squared else error
