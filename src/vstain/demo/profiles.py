"""Sizes of the demo's flavours (full, quick, test): the plate, the split and how long the CPU recipe trains."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

#: The demo's magnification (the synthetic plate has one).
MAGNIFICATION = "20x"


@dataclass(frozen=True)
class DemoProfile:
    """Sizes of one demo flavour.

    The models are trained with the CPU recipe (:func:`vstain.training.recipes.cpu_recipe`);
    ``common`` are ``--set``-style ``dotted.key=value`` overrides of every step, ``overrides``
    those of single steps (``nuclei``, ``lipids``, ``cytoplasm``), applied after ``common``.
    """

    name: str
    wells: int
    fields_per_well: int
    size: tuple[int, int]
    test_fields: int
    validation_fields: int
    common: tuple[str, ...]
    overrides: Mapping[str, tuple[str, ...]]
    report_fields: int = 2
    baseline_pixels_per_field: int = 20_000

    def run_overrides(self, run: str) -> list[str]:
        """The overrides of step ``run``: ``common`` first, then the step's own."""
        return [*self.common, *self.overrides.get(run, ())]


_COMMON = ("trainer.progress_bar=false", "trainer.log_every_n_steps=1000", "data.num_workers=0")


def _steps(epochs: int, samples: int, *, crop: int | None = None, extra: Sequence[str] = ()) -> tuple[str, ...]:
    """Overrides that size a step: ``epochs`` x ``samples`` crops (of ``crop`` px, default the recipe's)."""
    sized = (f"trainer.max_epochs={epochs}", f"data.samples_per_epoch={samples}", *extra)
    return (*sized, f"data.crop_size={crop}") if crop else sized


#: full: ``vstain demo`` (< 15 min on a 2-core CPU); quick: ``--quick`` (a few minutes); test: pytest.
PROFILES: dict[str, DemoProfile] = {
    "full": DemoProfile(
        name="full", wells=4, fields_per_well=2, size=(512, 640), test_fields=2, validation_fields=1,
        common=_COMMON,
        overrides={"nuclei": _steps(12, 160), "lipids": _steps(6, 160), "cytoplasm": _steps(6, 160)},
    ),
    "quick": DemoProfile(
        name="quick", wells=3, fields_per_well=2, size=(384, 384), test_fields=2, validation_fields=1,
        common=_COMMON,
        overrides={"nuclei": _steps(3, 96), "lipids": _steps(3, 64), "cytoplasm": _steps(3, 64)},
    ),
    "test": DemoProfile(
        name="test", wells=2, fields_per_well=2, size=(384, 384), test_fields=1, validation_fields=1,
        common=(*_COMMON, "validation.linear_baseline=false"),
        overrides={"nuclei": _steps(2, 16, crop=96), "lipids": _steps(2, 16, crop=96),
                   "cytoplasm": _steps(2, 16, crop=96)},
        report_fields=1,
        baseline_pixels_per_field=5_000,
    ),
}
