"""The compute core of inference: networks × tiler × precision × TTA, with an OOM fallback.

:class:`StainNetworks` runs several networks on the same input and concatenates their image
outputs, so the tiler cuts, pads and blends once for all stains. :class:`FieldEngine` applies it
to one normalised field and knows nothing of files or normalisers: the predictor and the
benchmark share it.
"""

from __future__ import annotations

import contextlib
import logging
from typing import Sequence

import torch
from torch import nn

from vstain.errors import ConfigError, VstainError
from vstain.inference.tiler import Tiler
from vstain.vocabulary import TTA_CHOICES

__all__ = ["StainNetworks", "FieldEngine", "dihedral", "undo_dihedral", "is_out_of_memory", "PRECISIONS"]

log = logging.getLogger(__name__)

PRECISIONS: tuple[str, ...] = ("fp32", "bf16")
#: Number of dihedral transforms (4 rotations × optional flip): the larger TTA setting.
DIHEDRAL = TTA_CHOICES[-1]


def dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Transform ``k`` (0-7) of the dihedral group D4 on the last two axes: rotate k%4 × 90°, then flip if k >= 4."""
    x = torch.rot90(x, k % 4, dims=(-2, -1))
    return torch.flip(x, dims=(-1,)) if k >= 4 else x


def undo_dihedral(x: torch.Tensor, k: int) -> torch.Tensor:
    """Inverse of :func:`dihedral` ``k``."""
    if k >= 4:
        x = torch.flip(x, dims=(-1,))
    return torch.rot90(x, -(k % 4), dims=(-2, -1))


def is_out_of_memory(exc: BaseException) -> bool:
    """True for CUDA (and other accelerators') out-of-memory errors."""
    return isinstance(exc, torch.OutOfMemoryError) or (
        isinstance(exc, RuntimeError) and "out of memory" in str(exc).lower()
    )


class StainNetworks(nn.Module):
    """Several networks on one input; their image outputs concatenated along channels.

    Parameters
    ----------
    networks
        Each maps ``(B, C, H, W)`` to an image ``(B, k, H, W)`` or to a tuple holding it.
    output_indices
        Per network, which tuple element is the image (None: the last one, as LUPI's
        ``(segmentation, image)``).
    channels_last
        Feed the networks channels-last tensors (faster convolutions on tensor cores / oneDNN).
    """

    def __init__(
        self,
        networks: Sequence[nn.Module],
        *,
        output_indices: Sequence[int | None] | None = None,
        channels_last: bool = False,
    ) -> None:
        super().__init__()
        self.networks = nn.ModuleList(networks)
        self.output_indices = list(output_indices or [None] * len(self.networks))
        self.channels_last = channels_last

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        images = []
        for network, index in zip(self.networks, self.output_indices):
            out = network(x)
            if isinstance(out, (tuple, list)):
                out = out[-1 if index is None else index]
            images.append(out)
        return torch.cat(images, dim=1) if len(images) > 1 else images[0]


class FieldEngine:
    """Run :class:`StainNetworks` over normalised fields.

    Parameters
    ----------
    network
        The (eval-mode) network(s); moved to ``device``.
    device
        ``"cpu"``, ``"cuda"``, ``"cuda:1"``, ...
    tiler
        How to cover a field (see :class:`~vstain.inference.tiler.Tiler`).
    precision
        ``"fp32"`` or ``"bf16"`` (autocast; blending stays float32).
    channels_last, compile
        Memory format and ``torch.compile`` of the network.
    tta
        1 (off) or 8 (the dihedral transforms, averaged).
    batch_size
        Tiles per network call.

    After an out-of-memory error the batch is halved, then the tiler is replaced by
    :meth:`Tiler.smaller`, and the field is retried; the lighter setting is kept for later fields
    and each step is logged in :attr:`fallbacks`.
    """

    def __init__(
        self,
        network: nn.Module,
        *,
        device: str | torch.device = "cpu",
        tiler: Tiler | None = None,
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        tta: int = 1,
        batch_size: int = 4,
    ) -> None:
        if precision not in PRECISIONS:
            raise ConfigError(f"unknown `precision` {precision!r}; choose one of {', '.join(PRECISIONS)}")
        if tta not in TTA_CHOICES:
            raise ConfigError(f"`tta` must be 1 or {DIHEDRAL}, got {tta}")
        if batch_size < 1:
            raise ConfigError(f"`batch_size` must be at least 1, got {batch_size}")
        self.device = torch.device(device)
        self.tiler = tiler or Tiler("whole")
        self.precision = precision
        self.channels_last = channels_last
        self.tta = tta
        self.batch_size = batch_size
        self.fallbacks: list[str] = []
        network = network.to(self.device).eval()
        if channels_last:
            network = network.to(memory_format=torch.channels_last)
            if isinstance(network, StainNetworks):
                network.channels_last = True
        self.network: nn.Module = torch.compile(network) if compile else network
        self.compiled = compile

    def settings(self) -> dict[str, object]:
        """JSON-ready description (for manifests and benchmarks)."""
        return {
            "device": str(self.device),
            "tiler": self.tiler.describe(),
            "precision": self.precision,
            "channels_last": self.channels_last,
            "compile": self.compiled,
            "tta": self.tta,
            "batch_size": self.batch_size,
        }

    def _autocast(self) -> contextlib.AbstractContextManager:
        if self.precision == "bf16":
            return torch.autocast(device_type=self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _once(self, image: torch.Tensor) -> torch.Tensor:
        with self._autocast():
            return self.tiler(image, self.network, batch_size=self.batch_size)

    def _with_fallback(self, image: torch.Tensor) -> torch.Tensor:
        while True:
            try:
                return self._once(image)
            except Exception as exc:
                if not is_out_of_memory(exc):
                    raise
                del exc  # drop the traceback (and the tensors it pins) before retrying
                if self.device.type == "cuda":
                    torch.cuda.empty_cache()
                if self.batch_size > 1:
                    self.batch_size //= 2
                    step = f"out of memory: batch size -> {self.batch_size}"
                else:
                    smaller = self.tiler.smaller()
                    if smaller is None:
                        raise VstainError(
                            f"out of memory on {self.device} even with {self.tiler!r} and batch size 1; "
                            "use a larger device or `device` cpu"
                        ) from None
                    self.tiler = smaller
                    step = f"out of memory: falling back to {smaller!r}"
                log.warning(step)
                self.fallbacks.append(step)

    @torch.inference_mode()
    def variants(self, image: torch.Tensor) -> torch.Tensor:
        """Each TTA transform's prediction of one normalised field, mapped back to the field.

        Parameters
        ----------
        image
            ``(C, H, W)`` float32 (any device; moved to the engine's).

        Returns
        -------
        torch.Tensor
            ``(T, K, H, W)`` float32 on the CPU, T = ``tta`` (1 without TTA). Their mean is what
            :meth:`__call__` returns; conformal calibration (src/vstain/uncertainty/) measures each.
        """
        image = image.to(self.device, dtype=torch.float32, non_blocking=True)
        outputs = [undo_dihedral(self._with_fallback(dihedral(image, k)), k).float().cpu() for k in range(self.tta)]
        return torch.stack(outputs)

    @torch.inference_mode()
    def __call__(self, image: torch.Tensor, *, spread: bool = False) -> tuple[torch.Tensor, torch.Tensor | None]:
        """Predict one normalised field.

        Parameters
        ----------
        image
            ``(C, H, W)`` float32 (any device; moved to the engine's).
        spread
            With TTA, also return the per-pixel standard deviation over the transforms.

        Returns
        -------
        (mean, std)
            ``(K, H, W)`` float32 on the engine's device; ``std`` is None without TTA or spread.
        """
        image = image.to(self.device, dtype=torch.float32, non_blocking=True)
        if self.tta == 1:
            return self._with_fallback(image), None
        mean: torch.Tensor | None = None
        sum_sq: torch.Tensor | None = None
        for k in range(self.tta):
            out = undo_dihedral(self._with_fallback(dihedral(image, k)), k)
            if mean is None:
                mean = out.clone()
                sum_sq = torch.zeros_like(out) if spread else None
                continue
            # Welford's update: stable variance without holding all eight outputs.
            delta = out - mean
            mean += delta / (k + 1)
            if sum_sq is not None:
                sum_sq += delta * (out - mean)
        assert mean is not None
        std = (sum_sq / self.tta).clamp_min_(0).sqrt_() if sum_sq is not None else None
        return mean, std
