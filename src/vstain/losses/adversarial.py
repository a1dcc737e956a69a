"""Relativistic-average least-squares GAN losses and the pools that feed them.

Sign convention (the DeblurGAN-v2 form used by the reference, report eq. 2 of [10]): the
discriminator ``D`` outputs unbounded scores (a PatchGAN map, e.g. ``(B, 1, 30, 30)``); it
wants real scores one unit *above* the average fake score and fake scores one unit *below*
the average real score::

    L_D = 1/2 [ mean((D(x, y)  - mean_fake - 1)**2) + mean((D(x, y^) - mean_real + 1)**2) ]
    L_G = 1/2 [ mean((D(x, y)  - mean_fake + 1)**2) + mean((D(x, y^) - mean_real - 1)**2) ]

where ``mean_real`` / ``mean_fake`` are the means of the pools of past real / fake scores
(reference) or of the current batch. Reference values (tested):

* a perfect discriminator (real - mean_fake = +1 and fake - mean_real = -1): L_D = 0, L_G = 4;
* a fooled discriminator (real - mean_fake = -1, fake - mean_real = +1): L_D = 4, L_G = 0;
* an undecided one (all scores equal): L_D = L_G = 1.
"""

from __future__ import annotations

from collections import deque
from typing import Any

import torch
from torch import nn


def _relativistic_lsgan(
    d_real: torch.Tensor,
    d_fake: torch.Tensor,
    real_reference: torch.Tensor | float | None,
    fake_reference: torch.Tensor | float | None,
    target: float,
) -> torch.Tensor:
    d_real, d_fake = d_real.float(), d_fake.float()
    # Without a pool the reference point is the batch mean, with its gradient (plain RaLSGAN).
    real_ref = d_real.mean() if real_reference is None else real_reference
    fake_ref = d_fake.mean() if fake_reference is None else fake_reference
    return 0.5 * (
        (d_real - fake_ref - target).square().mean() + (d_fake - real_ref + target).square().mean()
    )


class RaLSGANDiscriminatorLoss(nn.Module):
    """Discriminator loss ``L_D`` (see the module docstring for the formula and signs).

    Shapes: ``d_real`` = D(condition, real) and ``d_fake`` = D(condition, fake), any shape
    (typically ``(B, 1, h, w)``); ``real_reference`` / ``fake_reference`` are the reference
    means (0-d tensors or floats, e.g. :meth:`OutputHistoryPool.mean`); when omitted, the batch
    means of ``d_real`` / ``d_fake`` are used. Returns a 0-d float32 tensor.
    """

    def forward(
        self,
        d_real: torch.Tensor,
        d_fake: torch.Tensor,
        *,
        real_reference: torch.Tensor | float | None = None,
        fake_reference: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        return _relativistic_lsgan(d_real, d_fake, real_reference, fake_reference, 1.0)


class RaLSGANGeneratorLoss(nn.Module):
    """Generator loss ``L_G``: :class:`RaLSGANDiscriminatorLoss` with the targets swapped.

    Same arguments and shapes as :class:`RaLSGANDiscriminatorLoss`. (Until the deadline day the
    reference used the discriminator's signs here too.)
    """

    def forward(
        self,
        d_real: torch.Tensor,
        d_fake: torch.Tensor,
        *,
        real_reference: torch.Tensor | float | None = None,
        fake_reference: torch.Tensor | float | None = None,
    ) -> torch.Tensor:
        return _relativistic_lsgan(d_real, d_fake, real_reference, fake_reference, -1.0)


def _check_capacity(capacity: int, *, minimum: int = 0) -> int:
    if isinstance(capacity, bool) or int(capacity) != capacity or capacity < minimum:
        raise ValueError(f"pool capacity must be an integer >= {minimum}, got {capacity!r}")
    return int(capacity)


class OutputHistoryPool:
    """FIFO history of past discriminator output maps (the reference's pool).

    :meth:`push` appends each sample of a batch (detached) and drops the oldest beyond
    `capacity`; :meth:`mean` is the mean over every stored value. The reference pushes the
    current batch before computing ``L_D`` (so the pool includes it) and does not push during
    the generator step.

    Parameters
    ----------
    capacity : int
        Number of per-sample maps kept (50 in the reference), at least 1.
    """

    def __init__(self, capacity: int = 50) -> None:
        self.capacity = _check_capacity(capacity, minimum=1)
        self._items: deque[torch.Tensor] = deque(maxlen=self.capacity)

    def __len__(self) -> int:
        return len(self._items)

    def push(self, outputs: torch.Tensor) -> None:
        """Store every sample of `outputs` ``(B, ...)``, oldest first out."""
        if self._items and self._items[0].device != outputs.device:
            # After load_state_dict (CPU) the first push arrives on the training device.
            self._items = deque((t.to(outputs.device) for t in self._items), maxlen=self.capacity)
        self._items.extend(outputs.detach().clone().unbind(0))

    def mean(self) -> torch.Tensor:
        """Mean of every value in the pool, a detached 0-d float32 tensor."""
        if not self._items:
            raise RuntimeError("the output history pool is empty: push a batch before asking for its mean")
        return torch.cat([t.reshape(-1).float() for t in self._items]).mean()

    def items(self) -> list[torch.Tensor]:
        """The stored maps, oldest first."""
        return list(self._items)

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume exactly: capacity and the stored maps (oldest first)."""
        return {"capacity": self.capacity, "items": [t.clone() for t in self._items]}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = _check_capacity(state["capacity"], minimum=1)
        self._items = deque((t.clone() for t in state["items"]), maxlen=self.capacity)


class ImagePool:
    """Random-replacement pool of past samples (pix2pix / CycleGAN ``ImagePool``).

    :meth:`query` returns a batch of the same shape as its input. While the pool is not full,
    each new sample is stored and returned as is. Once full, each sample is, with probability
    `probability`, swapped for a randomly chosen stored one (which is returned and replaced by
    the new sample) and otherwise returned as is. Returned tensors are detached: the pool is
    meant for the discriminator step. ``capacity=0`` returns the input unchanged.

    Parameters
    ----------
    capacity : int
        Number of samples kept (50 in pix2pix).
    probability : float
        Chance of returning a stored sample once the pool is full.
    seed : int
        Seed of the pool's own CPU generator, so its draws do not depend on (or disturb) the
        global RNG; its state is part of :meth:`state_dict`.
    """

    def __init__(self, capacity: int = 50, *, probability: float = 0.5, seed: int = 0) -> None:
        self.capacity = _check_capacity(capacity)
        if not 0.0 <= probability <= 1.0:
            raise ValueError(f"probability must be in [0, 1], got {probability!r}")
        self.probability = float(probability)
        self._generator = torch.Generator(device="cpu")
        self._generator.manual_seed(int(seed))
        self._items: list[torch.Tensor] = []

    def __len__(self) -> int:
        return len(self._items)

    def query(self, images: torch.Tensor) -> torch.Tensor:
        """Return a ``(B, ...)`` batch mixing `images` with stored samples (see class doc)."""
        images = images.detach()
        if self.capacity == 0:
            return images
        out = []
        for image in images.unbind(0):
            if len(self._items) < self.capacity:
                self._items.append(image.clone())
                out.append(image)
            elif torch.rand((), generator=self._generator).item() < self.probability:
                slot = int(torch.randint(self.capacity, (), generator=self._generator).item())
                out.append(self._items[slot].to(image.device))
                self._items[slot] = image.clone()
            else:
                out.append(image)
        return torch.stack(out)

    def items(self) -> list[torch.Tensor]:
        """The stored samples, in slot order."""
        return list(self._items)

    def state_dict(self) -> dict[str, Any]:
        """Capacity, probability, stored samples and the generator state (exact resume)."""
        return {
            "capacity": self.capacity,
            "probability": self.probability,
            "items": [t.clone() for t in self._items],
            "generator": self._generator.get_state(),
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.capacity = _check_capacity(state["capacity"])
        self.probability = float(state["probability"])
        self._items = [t.clone() for t in state["items"]]
        self._generator.set_state(state["generator"])
