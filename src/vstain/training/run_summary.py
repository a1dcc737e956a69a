"""The run's ``summary.json``: the validation history, the exported epoch, and the linear baseline verdict.

A trained model must beat the per-pixel linear regression it could have learned. With
``validation.linear_baseline`` (the default), :class:`RunSummary` fits
:class:`~vstain.evaluation.baselines.LinearBaseline` (the 7 brightfield planes and a smoothed copy,
least squares per pixel) on the run's training fields at the start of training, scores it on the
run's validation fields with the same pixel metric the validation logs (``val/pixel_rel_mae_C0k``:
MAE in raw counts over the pooled target median), and at the end compares it with the checkpoint
the run exports (the best ``monitor`` epoch). A model that ends worse than the linear regression on
any stain has not learned the plate; the run then says so on the terminal, in ``summary.json`` and
in the model bundle's validation record, instead of quietly exporting it.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
from lightning.pytorch.callbacks import Callback

from vstain.atomic import write_text_atomic
from vstain.vocabulary import TARGET_CHANNELS


def linear_baseline_errors(train_fields: Sequence[Any], val_fields: Sequence[Any], targets: Sequence[str], *,
                           max_fields: int = 8, pixels_per_field: int = 20_000, seed: int = 0) -> dict[str, float]:
    """Pixel relative MAE per target of the linear baseline on ``val_fields``.

    Parameters
    ----------
    train_fields, val_fields
        :class:`~vstain.plate.index.Field` objects: fitted on the first, scored on the second.
    targets
        Stains to fit and score.
    max_fields
        At most this many training fields (evenly spaced) are read for the fit: a least-squares
        fit of 14 regressors settles long before that, and each full field costs a second.
    pixels_per_field, seed
        Pixel subsample of the fit (see :meth:`LinearBaseline.fit`).
    """
    from vstain.evaluation.baselines import LinearBaseline
    from vstain.evaluation.metric import PixelErrorAccumulator

    step = max(1, math.ceil(len(train_fields) / max_fields))
    chosen = list(train_fields)[::step][:max_fields]
    baseline = LinearBaseline.fit(((f.read_brightfield(), {t: f.read_target(t) for t in targets}) for f in chosen),
                                  pixels_per_field=pixels_per_field, seed=seed)
    accumulator = PixelErrorAccumulator(channels=tuple(targets))
    for field in val_fields:
        prediction = baseline.predict(field.read_brightfield())
        accumulator.add({t: field.read_target(t) for t in targets}, prediction, label=field.label)
    result = accumulator.result()
    return {t: float(result.per_channel[t]) for t in targets}


def metric_name(target: str) -> str:
    """The validation metric logged for one target (``val/pixel_rel_mae_C01`` ...)."""
    return f"val/pixel_rel_mae_C{TARGET_CHANNELS[target]:02d}"


#: A validation IoU of the LUPI segmentation head at or below this marks the nuclei outlines as
#: unreliable: the quality benchmark's bar (docs/quality.md, the target is "above 0.5"); the fresh 40x
#: draw whose nuclei are not in its brightfield stayed at 0.00-0.10.
RELIABLE_IOU = 0.5


class RunSummary(Callback):
    """Record validation per epoch; at the end, summarise the exported (best-validation) epoch.

    Parameters
    ----------
    datamodule
        The run's :class:`~vstain.data.datamodule.PlateDataModule` (its training and validation fields).
    run_dir
        Where ``linear_baseline.json`` and ``summary.json`` are written.
    monitor
        The metric the best checkpoint is chosen on (lower is better).
    linear_baseline
        Compare with the per-pixel linear regression (fitted at the start of training).
    seed
        Seed of the baseline's pixel draw.
    log
        Where the verdict line goes (``print`` by default).
    """

    def __init__(self, datamodule: Any, run_dir: Path, *, monitor: str, linear_baseline: bool = True, seed: int = 0,
                 log=print) -> None:
        self.datamodule = datamodule
        self.run_dir = Path(run_dir)
        self.monitor = monitor
        self.linear_baseline = linear_baseline
        self.seed = seed
        self.say = log
        self.linear: dict[str, float] = {}
        self.history: list[dict[str, float]] = []
        self.verdict: dict[str, Any] = {}

    @property
    def targets(self) -> tuple[str, ...]:
        return tuple(self.datamodule.config.data.targets)

    def state_dict(self) -> dict[str, Any]:
        # Saved in checkpoints (plain lists of floats: loads weights-only), so a resumed run
        # still compares the epoch it exports, even one from before the interruption.
        return {"history": [dict(e) for e in self.history]}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        self.history = [dict(e) for e in state_dict.get("history", [])]

    def on_fit_start(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not self.linear_baseline:
            return
        saved = self.run_dir / "linear_baseline.json"
        if saved.exists():  # a resumed run keeps the numbers it started with
            self.linear = {k: float(v) for k, v in json.loads(saved.read_text())["pixel_rel_mae"].items()}
            return
        if not trainer.is_global_zero:
            return
        limit = module.cfg.trainer.limit_val_fields
        val_fields = self.datamodule.val_fields[: limit or None]
        self.linear = linear_baseline_errors(self.datamodule.train_fields, val_fields, self.targets, seed=self.seed)
        write_text_atomic(saved, json.dumps({
            "what": "per-pixel linear regression on the brightfield planes, fitted on the training fields, "
                    "scored on the validation fields (pixel relative MAE, raw counts)",
            "pixel_rel_mae": self.linear}, indent=2) + "\n")
        shown = ", ".join(f"{t} {v:.4g}" for t, v in self.linear.items())
        self.say(f"[{module.cfg.name}] linear baseline on the validation fields: {shown} (the model must beat it)")

    def on_validation_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        # Not on_validation_epoch_end: Lightning calls callbacks' epoch-end hooks before the
        # module's, which is where the epoch's metrics are logged.
        if trainer.sanity_checking:
            return
        metrics = trainer.callback_metrics
        if self.monitor not in metrics:
            return
        entry = {"epoch": float(trainer.current_epoch), "monitor": float(metrics[self.monitor])}
        for target in self.targets:
            name = metric_name(target)
            if name in metrics:
                entry[target] = float(metrics[name])
        if "val/iou" in metrics:  # the LUPI segmentation head
            entry["iou"] = float(metrics["val/iou"])
        self.history.append(entry)

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero or not self.history:
            return
        best = min(self.history, key=lambda e: e["monitor"])
        self.verdict = {"best_epoch": int(best["epoch"]), "monitor": self.monitor, "best_score": best["monitor"],
                        "per_target": {t: {"model": best.get(t)} for t in self.targets}}
        if "iou" in best:
            self.verdict["iou"] = best["iou"]
            if best["iou"] <= RELIABLE_IOU:  # the benchmark's target is IoU above the bar
                highest = max(e.get("iou", 0.0) for e in self.history)
                self.say(f"[{module.cfg.name}] WARNING: the exported epoch's nuclei segmentation overlaps the true "
                         f"nuclei by only {best['iou']:.2f} (val/iou; at most {highest:.2f} in any epoch, "
                         f"above {RELIABLE_IOU} is the bar): its nuclei outlines, counts and shapes are unreliable on "
                         "this plate, even where its pixel error is low. Train longer or with more nucleus-centred "
                         "crops (data.centred_fraction), and check that the nuclei show in the brightfield.")
        if self.linear:
            self._compare(module.cfg.name, best)
        summary = {"name": module.cfg.name, "validation": self.verdict,
                   "history": [{k: (None if isinstance(v, float) and not np.isfinite(v) else v) for k, v in e.items()}
                               for e in self.history]}
        write_text_atomic(self.run_dir / "summary.json", json.dumps(summary, indent=2) + "\n")

    def _compare(self, name: str, best: dict[str, float]) -> None:
        per_target = self.verdict["per_target"]
        for target, values in per_target.items():
            model = values["model"]
            values.update(linear=self.linear.get(target),
                          beats_linear=None if model is None else bool(model < self.linear[target]))
        losing = [t for t, v in per_target.items() if v["beats_linear"] is False]
        self.verdict["beats_linear"] = not losing
        for target in losing:
            values = per_target[target]
            self.say(f"[{name}] WARNING: {target}: the exported model's validation pixel error {values['model']:.4g} "
                     f"is WORSE than the per-pixel linear regression's {values['linear']:.4g} on the same fields. "
                     "It has not learned this plate beyond a linear map of the planes: train longer, check the "
                     "split and the stain (is it visible in the brightfield?), or use the linear baseline.")
        if not losing:
            shown = ", ".join(f"{t} {v['model']:.4g} < {v['linear']:.4g}" for t, v in per_target.items()
                              if v["model"] is not None)
            self.say(f"[{name}] the exported model beats the linear baseline on validation: {shown}")
