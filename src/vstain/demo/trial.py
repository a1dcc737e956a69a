"""One trial of a recipe on a plate: train, predict the test fields, fit the baselines, evaluate.

:func:`run_trial` is the part the demo and ``vstain bench quality`` share. Given a plate and a
split (train / validation / test, docs/splits.md) it writes into ``out``::

    runs/<step>/           the recipe's training runs (vstain.training.recipes)
    heldout/<mag>_images/  the test fields (links to the plate's files): the truth
    predictions/<method>/  uint16 predictions of the test fields: model, mean_image, linear
    evaluation/<method>/   vstain evaluate output per method (features, scores.json, report.html)

The baselines (:mod:`vstain.evaluation.baselines`) are fitted on the train and validation fields,
the same pixels the models could use, and every method is scored on the same test fields with the
same metric.
"""

from __future__ import annotations

import shutil
import time
import warnings
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Callable, Sequence

from vstain.demo.baselines import METHODS
from vstain.errors import PlateError
from vstain.vocabulary import TEST

__all__ = ["Clock", "TrialResult", "run_trial", "substitute_truth"]


@dataclass
class Clock:
    """Stage timings and one progress line per event, with the elapsed time since the start."""

    log: Callable[[str], None] = print
    started: float = dataclass_field(default_factory=time.perf_counter)
    cpu_started: float = dataclass_field(default_factory=time.process_time)
    timings: dict[str, float] = dataclass_field(default_factory=dict)

    def say(self, message: str) -> None:
        """Log ``message`` with the elapsed time."""
        self.log(f"[{self.elapsed():6.1f} s] {message}")

    def elapsed(self) -> float:
        """Seconds since the clock started."""
        return time.perf_counter() - self.started

    def stage(self, name: str, message: str) -> "Stage":
        """A context manager that logs ``message``, then records the stage's seconds as ``name``."""
        return Stage(self, name, message)


class Stage:
    """One timed stage of a :class:`Clock`."""

    def __init__(self, clock: Clock, name: str, message: str) -> None:
        self.clock, self.name, self.message = clock, name, message

    def __enter__(self) -> "Stage":
        self.t0 = time.perf_counter()
        self.clock.say(self.message)
        return self

    def __exit__(self, *exc: Any) -> None:
        seconds = time.perf_counter() - self.t0
        self.clock.timings[self.name] = round(seconds, 2)
        if exc[0] is None:
            self.clock.say(f"  done: {self.name} ({seconds:.1f} s)")


@dataclass
class TrialResult:
    """What a trial produced: the scores of every method and where everything was written."""

    scores: dict[str, Any]  #: method -> :class:`vstain.evaluation.metric.ChallengeScore`
    bundles: dict[str, Path]  #: stain -> model bundle
    test_labels: list[str]
    paths: dict[str, Any]


def run_trial(
    plate: Path,
    split: Path,
    out: Path,
    *,
    magnification: str,
    recipe: Sequence[Any],
    seed: int,
    clock: Clock,
    overrides: Sequence[str] = (),
    step_overrides: dict[str, Sequence[str]] | None = None,
    baseline_pixels_per_field: int = 20_000,
    report_fields: int = 0,
    report_sections: Callable[[dict[str, Any], list[str]], list[Any]] | None = None,
    workers: int = 1,
    frame: str = "brightfield",
    true_stains: Sequence[str] = (),
) -> TrialResult:
    """Train ``recipe`` on the split's train/validation fields and score it and both baselines on its test fields.

    Parameters
    ----------
    plate, split
        The plate folder and its split CSV (it must have test fields).
    out
        Output folder (see the module docstring).
    magnification
        The magnification trained and evaluated.
    recipe
        :class:`vstain.training.recipes.RecipeStep` sequence.
    seed
        Seed of the training runs and of the baselines' pixel draw.
    clock
        Logs progress and records stage timings.
    overrides, step_overrides
        Passed to :func:`vstain.training.recipes.train_recipe`.
    baseline_pixels_per_field
        Pixels per field drawn for the linear baseline's fit.
    report_fields
        Fields shown as image panels in the model's ``report.html``.
    report_sections
        Called with ``(scores of every method, test labels)``; the sections it returns open the
        model's ``report.html``.
    workers
        Processes measuring fields in the evaluation.
    frame
        Frame of the model's predictions (``vstain predict --frame``): ``fluorescence`` moves them by
        the site offsets the models were trained with, to be scored against the stains as recorded.
    true_stains
        Stains ``recipe`` does not predict: every method's folder gets the test fields' true files
        for them (:func:`substitute_truth`), so the scores measure the other stains alone.
    """
    from vstain.demo.baselines import predict_baselines
    from vstain.evaluation.folders import evaluate_folders
    from vstain.inference.predictor import Predictor
    from vstain.plate.index import index_plate
    from vstain.plate.splits import Split
    from vstain.training.recipes import train_recipe

    out = Path(out)
    index = index_plate(plate, magnification=magnification)
    index.raise_for_errors()
    fields = index.select(magnification=magnification)
    test_keys = Split.load(split).keys(TEST)
    test_fields = [f for f in fields if f.key in test_keys]
    fit_fields = [f for f in fields if f.key not in test_keys]
    if not test_fields:
        raise PlateError(f"{split}: no {magnification} test field to score the models on")
    test_labels = [f.label for f in test_fields]
    paths: dict[str, Any] = {"runs": str(out / "runs")}

    def announce(step: Any, config: Any) -> Any:
        epochs = config.trainer.max_epochs + config.finetune.epochs
        return clock.stage(f"train_{step.name}",
                           f"training {step.name} ({config.recipe} recipe, {', '.join(step.stains) or 'pretraining'}): "
                           f"{epochs} epochs x {config.data.samples_per_epoch} crops of {config.data.crop_size} px")

    bundles = train_recipe(recipe, plate=plate, split=split, runs_dir=out / "runs", magnification=magnification,
                           seed=seed, overrides=overrides, step_overrides=step_overrides, on_step=announce)
    paths["models"] = {stain: str(path) for stain, path in bundles.items()}

    heldout = out / "heldout" / f"{magnification}_images"
    link_fields(test_fields, heldout)
    predictions = out / "predictions"
    with clock.stage("predict", f"predicting {len(test_fields)} test fields with the trained models"):
        predictor = Predictor(list(dict.fromkeys(bundles.values())), device="cpu", mode="whole", frame=frame)
        predictor.predict_plate(heldout, predictions / "model", magnification=magnification, progress=False)
    with clock.stage("baselines", f"fitting the mean-image and linear baselines on {len(fit_fields)} fields"):
        predict_baselines(fit_fields, test_fields, predictions, seed=seed, pixels_per_field=baseline_pixels_per_field)
    for method in METHODS:
        substitute_truth(heldout, predictions / method, true_stains)
    paths["heldout"] = str(heldout)
    paths["predictions"] = {m: str(predictions / m) for m in METHODS}

    # Every method on the same test fields with the same metric; the baselines first, so the
    # model's report can open with the comparison.
    scores: dict[str, Any] = {}
    evaluation = out / "evaluation"
    for method in (*METHODS[1:], METHODS[0]):
        sections = None
        if method == "model" and report_sections is not None:
            def sections(model_scores: Sequence[Any]) -> list[Any]:
                return report_sections({"model": model_scores[0], **scores}, test_labels)
        with clock.stage(f"evaluate_{method}", f"evaluating {method} (pixelwise + CellProfiler-equivalent features)"):
            with warnings.catch_warnings():
                # numpy's empty-slice means when a prediction segments into nothing; the report
                # lists such features as excluded
                warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
                scores[method] = evaluate_folders(
                    heldout, predictions / method, out=evaluation / method, magnification=magnification,
                    workers=workers, report_fields=report_fields if method == "model" else 0,
                    report_sections=sections)[0]
    paths["evaluation"] = {m: str(evaluation / m) for m in METHODS}
    return TrialResult(scores={m: scores[m] for m in METHODS}, bundles=bundles, test_labels=test_labels, paths=paths)


def link_fields(fields: Sequence[Any], folder: Path) -> None:
    """Put the fields' brightfield and target files into ``folder`` (symlinks, copies if impossible)."""
    folder.mkdir(parents=True, exist_ok=True)
    for field in fields:
        for source in field.files:
            target = folder / source.name
            if not (target.exists() or target.is_symlink()):
                _link_or_copy(source, target)


def substitute_truth(truth: Path, folder: Path, stains: Sequence[str]) -> None:
    """Put the true files of ``stains`` from ``truth`` into ``folder``, in place of any prediction there.

    ``truth`` holds CV7000-named files (a trial's ``heldout/<mag>_images``); each target file of one
    of ``stains`` is linked (copied where links are impossible) into ``folder`` under its own name,
    replacing what was there, so that stain scores as a perfect prediction. Nothing in ``truth``
    changes.
    """
    from vstain.plate.naming import parse_name
    from vstain.vocabulary import TARGET_CHANNELS

    channels = {TARGET_CHANNELS[stain] for stain in stains}
    if not channels:
        return
    folder.mkdir(parents=True, exist_ok=True)
    for source in sorted(Path(truth).iterdir()):
        try:
            channel = parse_name(source.name).channel
        except ValueError:  # not an image of the plate (e.g. a listing the folder keeps)
            continue
        if channel not in channels:
            continue
        target = folder / source.name
        if target.exists() or target.is_symlink():
            target.unlink()
        _link_or_copy(source, target)


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a symlink to ``source`` (a copy where the file system cannot link)."""
    try:
        target.symlink_to(Path(source).resolve())
    except OSError:
        shutil.copy2(source, target)
