"""Sizes of the demo's flavours (full, quick, test) and the overrides of its five training runs."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping, Sequence

#: The demo's magnification (the synthetic plate has one).
MAGNIFICATION = "20x"
#: The training runs, in order: (run name = packaged smoke config name, stain, pretrain run it starts from).
RUNS: tuple[tuple[str, str, str | None], ...] = (
    ("nuclei", "nuclei", None),
    ("lipids_pretrain", "lipids", None),
    ("lipids_gan", "lipids", "lipids_pretrain"),
    ("cytoplasm_pretrain", "cytoplasm", None),
    ("cytoplasm_gan", "cytoplasm", "cytoplasm_pretrain"),
)
#: The run whose bundle predicts each stain.
FINAL_RUNS: dict[str, str] = {"nuclei": "nuclei", "lipids": "lipids_gan", "cytoplasm": "cytoplasm_gan"}


@dataclass(frozen=True)
class DemoProfile:
    """Sizes of one demo flavour.

    ``overrides`` are ``--set``-style ``dotted.key=value`` strings per run name (see :data:`RUNS`),
    applied on top of ``common`` and the smoke config of that name.
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
        """The overrides of run ``run``: ``common`` first, then the run's own."""
        return [*self.common, *self.overrides.get(run, ())]


_COMMON = ("trainer.progress_bar=false", "trainer.log_every_n_steps=1000", "data.num_workers=0",
           # Half the smoke network's depth: twice the optimiser steps in the same CPU time.
           "model.args.down_blocks=[1,1,1,1]", "model.args.up_blocks=[1,1,1,1]", "model.args.bottleneck_layers=1")
# Pretraining on MAE/median, the challenge metric's own pixel term (measured to beat the
# baselines; the smoke recipes' log-squared loss was NaN here before targets were clipped to 0-1).
_PRETRAIN = ("loss.regression=median_mae",)


def _sized(epochs: int, samples: int, *, crop: int, batch: int = 4, extra: Sequence[str] = ()) -> tuple[str, ...]:
    return (f"trainer.max_epochs={epochs}", f"data.samples_per_epoch={samples}", f"data.crop_size={crop}",
            f"data.batch_size={batch}", *extra)


def _recipes(*, epochs: int, samples: int, gan_epochs: int, gan_samples: int, crop: int,
             finetune: int, lr: float = 1e-3, pretrain_epochs: int | None = None,
             nuclei_epochs: int | None = None, nuclei_lr: float | None = None) -> dict[str, tuple[str, ...]]:
    """Overrides of the five runs: nuclei (one cosine cycle, then fine-tuning), pretrain, GAN.

    ``lr`` is the learning rate of the nuclei and pretrain runs; short runs need a larger one
    to move the (tanh+1)/2 output from 0.5 down to the stains' dark background in a few steps.
    ``pretrain_epochs`` (default ``epochs``): a regression step costs about a fifth of a LUPI
    step on a CPU, so the pretrain runs can afford more epochs. ``nuclei_epochs`` /
    ``nuclei_lr`` (default ``epochs`` / ``lr``) size the nuclei run on its own.
    """
    pretrain = _sized(pretrain_epochs or epochs, samples, crop=crop, extra=(*_PRETRAIN, f"optimizer.lr={lr}"))
    gan = _sized(gan_epochs, gan_samples, crop=crop)
    return {
        "nuclei": _sized(nuclei_epochs or epochs, samples, crop=crop,
                         extra=(f"finetune.epochs={finetune}", f"scheduler.t0={nuclei_epochs or epochs}",
                                f"optimizer.lr={nuclei_lr or lr}")),
        "lipids_pretrain": pretrain,
        "lipids_gan": gan,
        "cytoplasm_pretrain": pretrain,
        "cytoplasm_gan": gan,
    }


#: full: ``vstain demo`` (< 15 min on a 2-core CPU); quick: ``--quick`` (< 3 min); test: pytest.
PROFILES: dict[str, DemoProfile] = {
    "full": DemoProfile(
        name="full", wells=4, fields_per_well=2, size=(512, 640), test_fields=2, validation_fields=1,
        common=_COMMON,
        # The nuclei network needs the most steps to see the faint nuclei: 40 epochs at 3e-3 took
        # the held-out nuclei pixel error from 0.44 to 0.22, and the segmentation of its
        # predictions found 33 of 48 held-out nuclei (none after 12 epochs).
        overrides=_recipes(epochs=12, samples=32, gan_epochs=2, gan_samples=16, crop=128, finetune=1,
                           nuclei_epochs=40, nuclei_lr=3e-3),
    ),
    "quick": DemoProfile(
        name="quick", wells=3, fields_per_well=2, size=(384, 384), test_fields=2, validation_fields=1,
        common=_COMMON,
        overrides=_recipes(epochs=5, samples=16, gan_epochs=1, gan_samples=4, crop=128, finetune=0, lr=3e-3),
    ),
    "test": DemoProfile(
        name="test", wells=2, fields_per_well=2, size=(384, 384), test_fields=1, validation_fields=1,
        common=_COMMON,
        overrides=_recipes(epochs=5, samples=12, gan_epochs=1, gan_samples=4, crop=96, finetune=0, lr=3e-3),
        report_fields=1,
        baseline_pixels_per_field=5_000,
    ),
}
