"""The demo's stages: plate, split, training, prediction, baselines, evaluation, report (:func:`run_demo`)."""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Callable, Sequence

from vstain.atomic import write_text_atomic
from vstain.demo.baselines import METHODS
from vstain.demo.profiles import FINAL_RUNS, MAGNIFICATION, PROFILES, RUNS, DemoProfile
from vstain.demo.summary import SUMMARY_NAME
from vstain.errors import PlateError
from vstain.vocabulary import TEST, VALIDATION

#: Folders and files the demo creates (and only these are removed by ``overwrite``).
_OWNED = ("plate", "runs", "heldout", "predictions", "evaluation")
_OWNED_FILES = ("split.csv", "report.html", SUMMARY_NAME)
@dataclass
class _Clock:
    """Stage timings and one progress line per event, with the elapsed time since the start."""

    log: Callable[[str], None]
    started: float = dataclass_field(default_factory=time.perf_counter)
    cpu_started: float = dataclass_field(default_factory=time.process_time)
    timings: dict[str, float] = dataclass_field(default_factory=dict)

    def say(self, message: str) -> None:
        self.log(f"[{self.elapsed():6.1f} s] {message}")

    def elapsed(self) -> float:
        return time.perf_counter() - self.started

    def stage(self, name: str, message: str) -> "_Stage":
        return _Stage(self, name, message)


class _Stage:
    def __init__(self, clock: _Clock, name: str, message: str) -> None:
        self.clock, self.name, self.message = clock, name, message

    def __enter__(self) -> "_Stage":
        self.t0 = time.perf_counter()
        self.clock.say(self.message)
        return self

    def __exit__(self, *exc: Any) -> None:
        seconds = time.perf_counter() - self.t0
        self.clock.timings[self.name] = round(seconds, 2)
        if exc[0] is None:
            self.clock.say(f"  done: {self.name} ({seconds:.1f} s)")


def run_demo(
    out: str | os.PathLike[str],
    *,
    profile: str | DemoProfile = "full",
    seed: int = 0,
    overwrite: bool = False,
    log: Callable[[str], None] = print,
    workers: int = 1,
) -> dict[str, Any]:
    """Run the demo into ``out`` and return the summary (also written to ``demo-summary.json``).

    Parameters
    ----------
    out
        Output folder (created).
    profile
        ``"full"``, ``"quick"``, ``"test"`` or a :class:`~vstain.demo.profiles.DemoProfile`.
    seed
        Seed of the plate, the split, the training runs and the baselines' pixel draw.
    overwrite
        Replace a previous demo in ``out`` (only the demo's own files and folders are removed).
    log
        Called with each progress line.
    workers
        Processes measuring fields in the evaluation.

    Raises
    ------
    PlateError
        If ``out`` already holds a demo and ``overwrite`` is False.
    """
    from vstain.demo.baselines import predict_baselines
    from vstain.demo.summary import comparison_section, summarise
    from vstain.evaluation.folders import evaluate_folders
    from vstain.inference.predictor import Predictor
    from vstain.plate.index import index_plate
    from vstain.plate.splits import random_split
    from vstain.synth.plate import generate_plate

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    settings = PROFILES[profile] if isinstance(profile, str) else profile
    root = Path(out)
    _prepare_folder(root, overwrite=overwrite)
    clock = _Clock(log)
    clock.say(f"vstain demo ({settings.name}): {settings.wells} wells x {settings.fields_per_well} fields "
              f"of {settings.size[0]}x{settings.size[1]} px at {MAGNIFICATION}, seed {seed} -> {root}")
    paths: dict[str, Any] = {"out": str(root)}

    # 1. the plate
    plate = root / "plate"
    with clock.stage("synth", f"synthesising the plate into {plate}"):
        generate_plate(plate, magnification=MAGNIFICATION, wells=settings.wells, fields=settings.fields_per_well,
                       seed=seed, size=settings.size, progress=lambda line: clock.say(f"  synth {line}"))
    paths["plate"] = str(plate)

    # 2. the split: test fields are never read by training; validation picks checkpoints
    index = index_plate(plate, magnification=MAGNIFICATION)
    index.raise_for_errors()
    fields = index.select(magnification=MAGNIFICATION)
    split = random_split([f.key for f in fields], {TEST: settings.test_fields, VALIDATION: settings.validation_fields},
                         seed=seed)
    split_path = split.save(root / "split.csv")
    test_keys = split.keys(TEST)
    test_fields = [f for f in fields if f.key in test_keys]
    fit_fields = [f for f in fields if f.key not in test_keys]
    counts = {subset: n for (_, subset), n in split.counts().items()}
    clock.say(f"split: {counts.get('train', 0)} train, {counts.get(VALIDATION, 0)} validation, "
              f"{len(test_fields)} test fields ({', '.join(f.label for f in test_fields)})")
    paths["split"] = str(split_path)

    # 3. training
    bundles = _train_all(settings, plate=plate, split=split_path, runs_dir=root / "runs", seed=seed, clock=clock)
    paths["runs"] = str(root / "runs")
    paths["models"] = {stain: str(bundles[run]) for stain, run in FINAL_RUNS.items()}

    # 4. the test fields' truth, and the predictions of every method
    heldout = root / "heldout" / f"{MAGNIFICATION}_images"
    _link_fields(test_fields, heldout)
    predictions = root / "predictions"
    with clock.stage("predict", f"predicting {len(test_fields)} test fields with the trained models"):
        predictor = Predictor([bundles[FINAL_RUNS[s]] for s in FINAL_RUNS], device="cpu", mode="whole")
        predictor.predict_plate(heldout, predictions / "model", magnification=MAGNIFICATION, progress=True)
    with clock.stage("baselines", f"fitting the mean-image and linear baselines on {len(fit_fields)} fields"):
        predict_baselines(fit_fields, test_fields, predictions, seed=seed,
                          pixels_per_field=settings.baseline_pixels_per_field)
    paths["heldout"] = str(heldout)
    paths["predictions"] = {m: str(predictions / m) for m in METHODS}

    # 5. evaluation: every method on the same test fields, same metric; the baselines first, so
    # the model's report can open with the comparison
    test_labels = [f.label for f in test_fields]
    scores: dict[str, Any] = {}
    evaluation = root / "evaluation"

    def comparison(model_scores: Sequence[Any]) -> list[Any]:
        every = {"model": model_scores[0], **{m: scores[m] for m in METHODS if m != "model"}}
        return [comparison_section(every, settings=settings, seed=seed, test_labels=test_labels)]

    for method in (*METHODS[1:], METHODS[0]):
        with clock.stage(f"evaluate_{method}", f"evaluating {method} (pixelwise + CellProfiler-equivalent features)"):
            with warnings.catch_warnings():
                # numpy's empty-slice means when a prediction segments into nothing; the report
                # lists such features as excluded
                warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
                scores[method] = evaluate_folders(
                    heldout, predictions / method, out=evaluation / method, magnification=MAGNIFICATION,
                    workers=workers, report_fields=settings.report_fields if method == "model" else 0,
                    report_sections=comparison if method == "model" else None)[0]
    scores = {m: scores[m] for m in METHODS}
    paths["evaluation"] = {m: str(evaluation / m) for m in METHODS}

    # 6. report and summary
    report = root / "report.html"
    shutil.copyfile(evaluation / "model" / "report.html", report)
    paths["report"] = str(report)
    clock.timings["total"] = round(clock.elapsed(), 2)
    # CPU seconds of this process, all threads: comparable across machines and loads.
    clock.timings["cpu_total"] = round(time.process_time() - clock.cpu_started, 2)
    summary = summarise(scores, settings=settings, seed=seed, timings=clock.timings, paths=paths,
                        test_labels=test_labels)
    write_text_atomic(root / SUMMARY_NAME, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    clock.say(f"finished in {clock.timings['total']:.0f} s")
    return summary


def _prepare_folder(root: Path, *, overwrite: bool) -> None:
    taken = [name for name in (*_OWNED, *_OWNED_FILES) if (root / name).exists()]
    if taken and not overwrite:
        raise PlateError(f"{root}: already holds a demo ({', '.join(taken[:3])}); "
                         "choose another `out` or pass `overwrite`")
    for name in taken:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    root.mkdir(parents=True, exist_ok=True)


def _train_all(settings: DemoProfile, *, plate: Path, split: Path, runs_dir: Path, seed: int,
               clock: _Clock) -> dict[str, Path]:
    """Train the five runs from the packaged smoke configs; returns each run's bundle."""
    import lightning  # noqa: F401 - sets its loggers' levels on import; quieten them after

    from vstain.config import load_config
    from vstain.training.fit import fit

    bundles: dict[str, Path] = {}
    for lightning_logger in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(lightning_logger).setLevel(logging.ERROR)
    for run, stain, pretrained in RUNS:
        # Paths are set as exact values, not `--set` text, so any folder name works.
        values = {"data.root": str(plate), "data.split": str(split)}
        if pretrained is not None:
            values["gan.pretrained"] = str(bundles[pretrained])
        config = load_config(f"configs/smoke/{run}.yaml", [f"seed={seed}", *settings.run_overrides(run)],
                             values=values)
        epochs = config.trainer.max_epochs + config.finetune.epochs
        described = (f"training {run} ({config.recipe} recipe, {stain}): {epochs} epochs x "
                     f"{config.data.samples_per_epoch} crops of {config.data.crop_size} px")
        # fit() prints one line per epoch itself when the progress bar is off, and silences only
        # the Lightning advice that does not apply to small runs; every other warning is shown.
        with clock.stage(f"train_{run}", described):
            bundles[run] = fit(config, runs_dir / run)
    return bundles


def _link_fields(fields: Sequence[Any], folder: Path) -> None:
    """Put the fields' brightfield and target files into ``folder`` (symlinks, copies if impossible)."""
    folder.mkdir(parents=True, exist_ok=True)
    for field in fields:
        for source in field.files:
            target = folder / source.name
            try:
                target.symlink_to(source.resolve())
            except OSError:
                shutil.copy2(source, target)
