"""The demo's baselines step: fit the mean-image and linear baselines, predict the test fields."""

from __future__ import annotations

from pathlib import Path
from typing import Sequence

from vstain.evaluation.baselines import LinearBaseline, MeanImageBaseline, write_baseline_predictions
from vstain.plate.index import Field
from vstain.vocabulary import TARGETS

#: Prediction methods the demo scores, the trained models first.
METHODS: tuple[str, ...] = ("model", "mean_image", "linear")


def predict_baselines(fit_fields: Sequence[Field], test_fields: Sequence[Field], predictions: Path, *,
                      seed: int, pixels_per_field: int) -> None:
    """Fit both baselines on ``fit_fields`` and write their predictions of ``test_fields``.

    Predictions go to ``predictions/mean_image`` and ``predictions/linear``, named as the
    CV7000 target files, so the evaluation scores them exactly like the model's.
    """
    mean_image = MeanImageBaseline.fit({t: f.read_target(t) for t in TARGETS} for f in fit_fields)
    write_baseline_predictions(mean_image, test_fields, predictions / "mean_image")
    linear = LinearBaseline.fit(((f.read_brightfield(), {t: f.read_target(t) for t in TARGETS}) for f in fit_fields),
                                pixels_per_field=pixels_per_field, seed=seed)
    write_baseline_predictions(linear, test_fields, predictions / "linear")
