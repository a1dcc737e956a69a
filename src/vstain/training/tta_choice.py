"""Whether a trained model predicts better with test-time augmentation, decided on its validation fields.

The mean over the eight flips and rotations of a field (``vstain predict --tta 8``) removes part of a
network's variance: nuclei come out with more regular outlines, droplets with less speckle. It presumes
that the network treats a turned field as the field turned. A network trained on stains that are shifted
against the brightfield can learn the shift together with orientation cues of the brightfield; its
predictions of the turned fields, turned back, then land a few pixels apart, and their mean is blurred
(docs/quality.md, "Test-time augmentation, chosen on validation"). So the choice is measured like the
best epoch: the exported bundle, intensity map included, predicts the validation fields once with all
eight transforms; the identity transform alone is what ``--tta 1`` writes and the mean is what
``--tta 8`` writes (up to float rounding). The setting with the lower pixel error (the metric validation logs,
``val/pixel_rel_mae``, averaged over the targets) goes into the bundle; a tie keeps 1, eight times cheaper.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from vstain.data.store import FieldStore
from vstain.inference.engine import DIHEDRAL
from vstain.training.metrics import PixelRelativeMAE

__all__ = ["TtaChoice", "choose_tta"]


@dataclass(frozen=True)
class TtaChoice:
    """The chosen setting and the validation pixel error of each, per target.

    Attributes
    ----------
    tta
        1 or 8: what ``vstain predict`` uses for the bundle by default.
    errors
        ``{tta: {target: pixel relative MAE}}`` over the validation fields, for both settings.
    fields
        How many validation fields were predicted.
    """

    tta: int
    errors: dict[int, dict[str, float]]
    fields: int

    def mean_error(self, tta: int) -> float:
        """The error of setting ``tta`` averaged over the targets (what the choice compares)."""
        return float(np.mean(list(self.errors[tta].values())))

    def to_dict(self) -> dict[str, dict[str, float]]:
        """JSON-ready errors, keyed by the setting as text (``{"1": {...}, "8": {...}}``)."""
        return {str(k): dict(v) for k, v in self.errors.items()}


def choose_tta(bundle: Path, store: FieldStore, *, device: str = "cpu", mode: str = "whole") -> TtaChoice:
    """Measure ``bundle`` on the validation fields of ``store`` with and without TTA; keep the better.

    Parameters
    ----------
    bundle
        The exported model (with its intensity map, if it has one: the predictions are scored as
        ``vstain predict`` would write them).
    store
        The validation fields as training validates them (:class:`vstain.data.store.FieldStore`:
        brightfield as stored, targets in the bundle's target order, in the brightfield frame when
        training aligned them).
    device, mode
        Where and how the fields are predicted (``vstain predict``'s device and tiling).

    Raises
    ------
    ValueError
        For a store without fields or without the bundle's targets.
    """
    from vstain.inference.predictor import Predictor, to_uint16

    if len(store) == 0:
        raise ValueError("no validation fields to choose the test-time augmentation on")
    predictor = Predictor([bundle], device=device, mode=mode, tta=DIHEDRAL)
    targets = list(store.targets)
    if sorted(targets) != sorted(t for b in predictor.bundles for t in b.targets):
        raise ValueError(f"the validation fields carry {targets}, the bundle predicts "
                         f"{[t for b in predictor.bundles for t in b.targets]}")
    metrics = {1: PixelRelativeMAE(len(targets)), DIHEDRAL: PixelRelativeMAE(len(targets))}
    for index in range(len(store)):
        arrays = store.arrays(index)
        assert arrays.targets is not None
        variants = predictor.predict_variants(arrays.brightfield)
        # As the validation step: integer counts (an aligned target is resampled, so float: truncated).
        truth = torch.from_numpy(arrays.targets.astype(np.int32))
        for tta, metric in metrics.items():
            images = [variants[t][0] if tta == 1 else variants[t].mean(axis=0) for t in targets]
            predicted = np.stack([to_uint16(torch.from_numpy(image)) for image in images])
            metric.update(torch.from_numpy(predicted.astype(np.int32)), truth)
    errors = {tta: dict(zip(targets, (float(v) for v in metric.compute().reshape(-1))))
              for tta, metric in metrics.items()}
    mean = {tta: float(np.mean(list(per_target.values()))) for tta, per_target in errors.items()}
    return TtaChoice(tta=DIHEDRAL if mean[DIHEDRAL] < mean[1] else 1, errors=errors, fields=len(store))
