"""Problem sizes of one benchmark run: the issue's full sizes, or a quick CPU-sized run."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = ["BenchSizes"]


@dataclass(frozen=True)
class BenchSizes:
    """Problem sizes of one benchmark run.

    Attributes
    ----------
    fields
        Inference field sizes ``(H, W)``; the evaluation benchmark measures the first.
    reference_batch, tile_batch
        Tiles per forward pass in ``reference`` mode and in the fast modes.
    gan_batch, lupi_batch, regression_batch
        Training batch of the GAN, nuclei LUPI and pretraining (regression) recipes.
    crop
        Training crop side (pixels).
    train_steps
        Timed training steps per setting (after one untimed warm-up step).
    repeats
        Timed inference runs per variant (the fastest is reported).
    """

    fields: tuple[tuple[int, int], ...]
    reference_batch: int
    tile_batch: int
    gan_batch: int
    lupi_batch: int
    regression_batch: int
    crop: int
    train_steps: int
    repeats: int

    @classmethod
    def full(cls) -> "BenchSizes":
        """The reference 20x recipes' sizes: a 20x field, GAN and pretraining batch 4, LUPI batch 6, 512² crops."""
        return cls(fields=((2154, 2554),), reference_batch=16, tile_batch=4, gan_batch=4, lupi_batch=6,
                   regression_batch=4, crop=512, train_steps=5, repeats=3)

    @classmethod
    def quick(cls) -> "BenchSizes":
        """Minutes on a small CPU: one 1024² field; training at batch 2 on 128² crops."""
        return cls(fields=((1024, 1024),), reference_batch=2, tile_batch=2, gan_batch=2, lupi_batch=2,
                   regression_batch=2, crop=128, train_steps=2, repeats=1)
