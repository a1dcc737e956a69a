"""The whole job on a small synthetic plate: synth → train → predict → evaluate → compare.

:func:`run_demo` is what ``vstain demo`` (and ``make demo``) runs. It writes into ``out``::

    plate/                 the synthetic 20x plate (vstain synth)
    split.csv              every field: train | validation | test (the held-out evaluation fields)
    training-split.csv     what the five runs read (train + validation; test fields are not listed,
                           so no run ever sees them, not even for checkpoint selection)
    runs/<recipe>/         the five training runs (nuclei, lipids_pretrain, lipids_gan,
                           cytoplasm_pretrain, cytoplasm_gan); models are runs/*/model.safetensors
    heldout/20x_images/    the held-out fields (links to the plate's files): the truth
    predictions/<method>/  uint16 predictions of the held-out fields: model, mean_image, linear
    evaluation/<method>/   vstain evaluate output per method (features, scores.json, report.html)
    report.html            the model's evaluation report with the model-vs-baselines comparison
    demo-summary.json      scores, timings and paths

The baselines (:mod:`vstain.evaluation.baselines`) are fitted on the training and validation
fields, the same pixels the models could use, and every method is scored on the same held-out
fields with the same metric.
"""

from __future__ import annotations

import base64
import html
import io
import json
import logging
import math
import os
import shutil
import time
import warnings
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from vstain.atomic import write_text_atomic
from vstain.errors import ConfigError, PlateError

__all__ = ["DemoProfile", "PROFILES", "SUMMARY_NAME", "run_demo", "format_summary"]

SUMMARY_NAME = "demo-summary.json"
MAGNIFICATION = "20x"
#: The training runs, in order: (run name = smoke config name, stain, pretrain run it starts from).
RUNS: tuple[tuple[str, str, str | None], ...] = (
    ("nuclei", "nuclei", None),
    ("lipids_pretrain", "lipids", None),
    ("lipids_gan", "lipids", "lipids_pretrain"),
    ("cytoplasm_pretrain", "cytoplasm", None),
    ("cytoplasm_gan", "cytoplasm", "cytoplasm_pretrain"),
)
#: The run whose bundle predicts each stain.
FINAL_RUNS: dict[str, str] = {"nuclei": "nuclei", "lipids": "lipids_gan", "cytoplasm": "cytoplasm_gan"}
CHANNEL_NAMES: dict[str, str] = {"C01": "nuclei", "C02": "lipids", "C03": "cytoplasm"}
METHODS: tuple[str, ...] = ("model", "mean_image", "linear")
#: Folders the demo creates (and only these are removed by ``overwrite``).
_OWNED = ("plate", "runs", "heldout", "predictions", "evaluation")
_OWNED_FILES = ("split.csv", "training-split.csv", "report.html", SUMMARY_NAME)


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


def smoke_config_dir() -> Path:
    """``configs/smoke`` of the source checkout the package runs from."""
    folder = Path(__file__).resolve().parents[2] / "configs" / "smoke"
    if not folder.is_dir():
        raise ConfigError(f"{folder}: smoke configs not found; run the demo from a source checkout "
                          "(pip install -e .)")
    return folder


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
        ``"full"``, ``"quick"``, ``"test"`` or a :class:`DemoProfile`.
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
    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    settings = PROFILES[profile] if isinstance(profile, str) else profile
    root = Path(out)
    _prepare_folder(root, overwrite=overwrite)
    clock = _Clock(log)
    clock.say(f"vstain demo ({settings.name}): {settings.wells} wells x {settings.fields_per_well} fields "
              f"of {settings.size[0]}x{settings.size[1]} px at {MAGNIFICATION}, seed {seed} -> {root}")
    paths: dict[str, Any] = {"out": str(root)}

    # 1. the plate
    from vstain.synth.plate import generate_plate

    plate = root / "plate"
    with clock.stage("synth", f"synthesising the plate into {plate}"):
        generate_plate(plate, magnification=MAGNIFICATION, wells=settings.wells, fields=settings.fields_per_well,
                       seed=seed, size=settings.size, progress=lambda line: clock.say(f"  synth {line}"))
    paths["plate"] = str(plate)

    # 2. the split: test fields are never seen by training; validation picks checkpoints
    from vstain.plate.index import index_plate

    index = index_plate(plate, magnification=MAGNIFICATION)
    index.raise_for_errors()
    fields = index.select(magnification=MAGNIFICATION)
    subsets = choose_subsets([f.key for f in fields], test=settings.test_fields,
                             validation=settings.validation_fields, seed=seed)
    split_path = write_text_atomic(root / "split.csv", _split_csv(subsets))
    training_split = root / "training-split.csv"
    from vstain.plate.splits import Split

    Split({k: ("test" if s == "validation" else "train") for k, s in subsets.items() if s != "test"}).save(
        training_split)
    test_fields = [f for f in fields if subsets[f.key] == "test"]
    fit_fields = [f for f in fields if subsets[f.key] != "test"]
    clock.say(f"split: {sum(s == 'train' for s in subsets.values())} training, "
              f"{sum(s == 'validation' for s in subsets.values())} validation, {len(test_fields)} held-out "
              f"fields ({', '.join(f.label for f in test_fields)})")
    paths.update(split=str(split_path), training_split=str(training_split))

    # 3. training
    bundles = _train_all(settings, plate=plate, split=training_split, runs_dir=root / "runs", seed=seed, clock=clock)
    paths["runs"] = str(root / "runs")
    paths["models"] = {stain: str(bundles[run]) for stain, run in FINAL_RUNS.items()}

    # 4. the held-out truth, and the predictions of every method
    heldout = root / "heldout" / f"{MAGNIFICATION}_images"
    _link_fields(test_fields, heldout)
    predictions = root / "predictions"
    with clock.stage("predict", f"predicting {len(test_fields)} held-out fields with the trained models"):
        from vstain.inference.predictor import Predictor

        predictor = Predictor([bundles[FINAL_RUNS[s]] for s in FINAL_RUNS], device="cpu", mode="whole")
        predictor.predict_plate(heldout, predictions / "model", magnification=MAGNIFICATION, progress=True)
    with clock.stage("baselines", f"fitting the mean-image and linear baselines on {len(fit_fields)} fields"):
        _predict_baselines(fit_fields, test_fields, predictions, seed=seed,
                           pixels_per_field=settings.baseline_pixels_per_field)
    paths["heldout"] = str(heldout)
    paths["predictions"] = {m: str(predictions / m) for m in METHODS}

    # 5. evaluation: every method on the same held-out fields, same metric
    from vstain.commands.evaluate import evaluate_folders

    scores = {}
    evaluation = root / "evaluation"
    for method in METHODS:
        with clock.stage(f"evaluate_{method}", f"evaluating {method} (pixelwise + CellProfiler-equivalent features)"):
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)  # empty-slice means on failed segmentations
                scores[method] = evaluate_folders(heldout, predictions / method, out=evaluation / method,
                                                  magnification=MAGNIFICATION, workers=workers,
                                                  report_fields=settings.report_fields if method == "model" else 0)[0]
    paths["evaluation"] = {m: str(evaluation / m) for m in METHODS}

    # 6. report and summary
    report = root / "report.html"
    with clock.stage("report", f"writing {report}"):
        model_report = (evaluation / "model" / "report.html").read_text(encoding="utf-8")
        write_text_atomic(report, _demo_report(model_report, scores, settings=settings, seed=seed,
                                               test_labels=[f.label for f in test_fields]))
    paths["report"] = str(report)
    clock.timings["total"] = round(clock.elapsed(), 2)
    # CPU seconds of this process, all threads: comparable across machines and loads.
    clock.timings["cpu_total"] = round(time.process_time() - clock.cpu_started, 2)
    summary = _summary(scores, settings=settings, seed=seed, timings=clock.timings, paths=paths,
                       test_labels=[f.label for f in test_fields])
    write_text_atomic(root / SUMMARY_NAME, json.dumps(summary, indent=2, allow_nan=False) + "\n")
    paths["summary"] = str(root / SUMMARY_NAME)
    clock.say(f"finished in {clock.timings['total']:.0f} s")
    return summary


# -- stages ------------------------------------------------------------------------------------


def _prepare_folder(root: Path, *, overwrite: bool) -> None:
    taken = [name for name in (*_OWNED, *_OWNED_FILES) if (root / name).exists()]
    if taken and not overwrite:
        raise PlateError(f"{root}: already holds a demo ({', '.join(taken[:3])}); "
                         "choose another --out or pass --overwrite")
    for name in taken:
        path = root / name
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path)
        else:
            path.unlink()
    root.mkdir(parents=True, exist_ok=True)


def choose_subsets(keys: Sequence[tuple[str, str, int]], *, test: int, validation: int,
                   seed: int) -> dict[tuple[str, str, int], str]:
    """Seeded assignment of fields to ``train``, ``validation`` and ``test``.

    Raises
    ------
    PlateError
        If fewer than ``test + validation + 1`` fields are given.
    """
    import numpy as np

    ordered = sorted(keys)
    if len(ordered) < test + validation + 1:
        raise PlateError(f"the demo needs at least {test + validation + 1} fields, the plate has {len(ordered)}")
    order = np.random.default_rng([seed, 7]).permutation(len(ordered))
    subsets = {key: "train" for key in ordered}
    for rank, i in enumerate(order[: test + validation]):
        subsets[ordered[int(i)]] = "test" if rank < test else "validation"
    return subsets


def _split_csv(subsets: Mapping[tuple[str, str, int], str]) -> str:
    lines = ["magnification,well,field,subset"]
    lines += [f"{m},{w},{n},{s}" for (m, w, n), s in sorted(subsets.items())]
    return "\n".join(lines) + "\n"


def _train_all(settings: DemoProfile, *, plate: Path, split: Path, runs_dir: Path, seed: int,
               clock: _Clock) -> dict[str, Path]:
    from vstain.training.fit import fit

    import lightning  # noqa: F401 - sets its loggers' levels on import; quieten them after

    configs = smoke_config_dir()
    bundles: dict[str, Path] = {}
    for lightning_logger in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(lightning_logger).setLevel(logging.ERROR)
    for run, stain, pretrained in RUNS:
        # Paths are set as strings, not `--set` text, so any folder name works (no YAML parsing).
        paths = {"data.root": str(plate), "data.split": str(split)}
        if pretrained is not None:
            paths["gan.pretrained"] = str(bundles[pretrained])
        config = _load_run_config(configs / f"{run}.yaml", [f"seed={seed}", *settings.run_overrides(run)], paths)
        epochs = config.trainer.max_epochs + config.finetune.epochs
        run_dir = runs_dir / run
        described = (f"training {run} ({config.recipe} recipe, {stain}): {epochs} epochs x "
                     f"{config.data.samples_per_epoch} crops of {config.data.crop_size} px")
        # fit() prints one line per epoch itself when the progress bar is off.
        with clock.stage(f"train_{run}", described), warnings.catch_warnings():
            warnings.simplefilter("ignore")  # Lightning's advice on workers and logging is noise here
            bundles[run] = fit(config, run_dir)
    return bundles


def _load_run_config(path: Path, overrides: Sequence[str], values: Mapping[str, str]) -> Any:
    """A smoke config with ``--set``-style overrides and exact string values for dotted keys."""
    from pydantic import ValidationError

    from vstain.config import TrainConfig, apply_overrides, read_config_file, validation_message

    data = apply_overrides(read_config_file(path), overrides)
    for key, value in values.items():
        node = data
        *parents, leaf = key.split(".")
        for part in parents:
            node = node.setdefault(part, {})
        node[leaf] = value
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{path}: {validation_message(error)}") from None


def _link_fields(fields: Sequence[Any], folder: Path) -> None:
    """Put the fields' brightfield and target files into ``folder`` (symlinks, copies if impossible)."""
    folder.mkdir(parents=True, exist_ok=True)
    for field in fields:
        for source in (*field.brightfield, *field.targets.values()):
            target = folder / source.name
            try:
                target.symlink_to(source.resolve())
            except OSError:
                shutil.copy2(source, target)


def _predict_baselines(fit_fields: Sequence[Any], test_fields: Sequence[Any], predictions: Path, *, seed: int,
                       pixels_per_field: int) -> None:
    from vstain.evaluation.baselines import LinearBaseline, MeanImageBaseline, write_baseline_predictions
    from vstain.vocabulary import TARGETS

    mean_image = MeanImageBaseline.fit({t: f.read_target(t) for t in TARGETS} for f in fit_fields)
    write_baseline_predictions(mean_image, test_fields, predictions / "mean_image")
    linear = LinearBaseline.fit(((f.read_brightfield(), {t: f.read_target(t) for t in TARGETS}) for f in fit_fields),
                                pixels_per_field=pixels_per_field, seed=seed)
    write_baseline_predictions(linear, test_fields, predictions / "linear")


# -- summary and report -------------------------------------------------------------------------


def _finite(value: float | None) -> float | None:
    return float(value) if value is not None and math.isfinite(value) else None


def feature_group(name: str) -> str:
    """Which part of the pipeline a CellProfiler feature column measures."""
    lowered = name.lower()
    if lowered.startswith("count_"):
        return "counts"
    if "granularity" in lowered:
        return "granularity"
    for group in ("nuclei", "cells", "lipids"):
        if f"_{group}_" in lowered:
            return group
    return "other"


def _group_errors(score: Any) -> dict[str, float | None]:
    fw = score.featurewise
    groups: dict[str, list[float]] = {}
    for name, value in fw.per_feature.items():
        if name not in fw.excluded_features and math.isfinite(value):
            groups.setdefault(feature_group(name), []).append(value)
    return {g: _finite(sum(v) / len(v)) for g, v in sorted(groups.items())}


def _method_summary(score: Any) -> dict[str, Any]:
    fw, pw = score.featurewise, score.pixelwise
    return {
        "score": _finite(score.score),
        "pixelwise": _finite(pw.value),
        "featurewise": _finite(fw.value),
        "pixelwise_per_channel": {f"{c} {CHANNEL_NAMES.get(c, '')}".strip(): _finite(v)
                                  for c, v in pw.per_channel.items()},
        "featurewise_per_group": _group_errors(score),
        "features_scored": sum(1 for f in fw.per_feature if f not in fw.excluded_features),
        "features_excluded": len(fw.excluded_features),
        "n_fields": score.n_fields,
    }


def _evaluation_notes(scores: Mapping[str, Any]) -> list[str]:
    notes = []
    seen: set[str] = set()
    for score in scores.values():
        for warning in score.warnings:
            text = warning.split(": ", 2)[-1]
            if text not in seen:
                seen.add(text)
                notes.append(text)
    return notes[:10]


def _summary(scores: Mapping[str, Any], *, settings: DemoProfile, seed: int, timings: Mapping[str, float],
             paths: Mapping[str, Any], test_labels: Sequence[str]) -> dict[str, Any]:
    model = _method_summary(scores["model"])
    baselines = {m: _method_summary(scores[m]) for m in METHODS if m != "model"}

    def beats(name: str) -> bool | None:
        a, b = model["score"], baselines[name]["score"]
        return None if a is None or b is None else a < b

    return {
        "model": model,
        "baselines": baselines,
        "model_beats": {name: beats(name) for name in baselines},
        "metric": "challenge score = (pixelwise + featurewise) / 2, relative MAEs, lower is better",
        "evaluation_notes": _evaluation_notes(scores),
        "heldout_fields": list(test_labels),
        "profile": settings.name,
        "seed": seed,
        "plate": {"wells": settings.wells, "fields_per_well": settings.fields_per_well,
                  "size": list(settings.size), "magnification": MAGNIFICATION},
        "timings": dict(timings),
        "paths": dict(paths),
    }


def format_summary(summary: Mapping[str, Any]) -> str:
    """The terminal table: one row per method (score, pixelwise, featurewise, per-channel pixel error)."""

    def num(value: float | None) -> str:
        return "n/a" if value is None else f"{value:.4f}"

    rows = [("model (trained)", summary["model"])]
    rows += [(name, summary["baselines"][name]) for name in summary["baselines"]]
    channels = list(summary["model"]["pixelwise_per_channel"])
    header = f"{'method':<17}{'score':>9}{'pixelwise':>11}{'featurewise':>13}" + "".join(f"{c:>14}" for c in channels)
    lines = [f"held-out fields: {', '.join(summary['heldout_fields'])} (lower is better)", header, "-" * len(header)]
    for name, entry in rows:
        lines.append(f"{name:<17}{num(entry['score']):>9}{num(entry['pixelwise']):>11}{num(entry['featurewise']):>13}"
                     + "".join(f"{num(entry['pixelwise_per_channel'].get(c)):>14}" for c in channels))
    verdicts = [f"{'beats' if ok else 'cannot be compared with' if ok is None else 'does NOT beat'} {name}"
                for name, ok in summary["model_beats"].items()]
    lines.append("model " + " and ".join(verdicts) + " on the challenge score")
    for note in summary["evaluation_notes"]:
        lines.append(f"note: {note}")
    timings = summary["timings"]
    train_s = sum(v for k, v in timings.items() if k.startswith("train_"))
    lines.append(f"time: {timings['total']:.0f} s in all (training {train_s:.0f} s, "
                 f"evaluation {sum(v for k, v in timings.items() if k.startswith('evaluate_')):.0f} s); "
                 f"{timings.get('cpu_total', 0):.0f} CPU-seconds")
    paths = summary["paths"]
    lines += [
        f"report:      {paths['report']}",
        f"summary:     {Path(paths['out']) / SUMMARY_NAME}",
        f"models:      {', '.join(paths['models'].values())}",
        f"predictions: {paths['predictions']['model']} (baselines beside it)",
        f"evaluation:  {Path(paths['evaluation']['model']).parent}/<method>/ (features, scores.json)",
        f"plate:       {paths['plate']}  split: {paths['split']}",
    ]
    return "\n".join(lines)


def _comparison_figure(scores: Mapping[str, Any]) -> str:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    channels = list(scores["model"].pixelwise.per_channel)
    groups = sorted({g for s in scores.values() for g in _group_errors(s)})
    fig, axes = plt.subplots(1, 2, figsize=(9, 3))
    width = 0.8 / len(scores)
    for i, (method, score) in enumerate(scores.items()):
        values = [score.pixelwise.per_channel.get(c, math.nan) for c in channels]
        axes[0].bar(np.arange(len(channels)) + i * width, values, width, label=method)
        errors = _group_errors(score)
        axes[1].bar(np.arange(len(groups)) + i * width,
                    [math.nan if errors.get(g) is None else errors[g] for g in groups], width, label=method)
    axes[1].set_xticks(np.arange(len(groups)) + 0.4 - width / 2, groups)
    axes[0].set_xticks(np.arange(len(channels)) + 0.4 - width / 2, [f"{c} {CHANNEL_NAMES.get(c, '')}" for c in channels])
    axes[0].set_title("pixelwise relative MAE", fontsize=9)
    axes[1].set_title("featurewise relative MAE by feature group", fontsize=9)
    axes[0].legend(fontsize=8)
    fig.tight_layout()
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png", dpi=80)
    plt.close(fig)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def _demo_report(model_report: str, scores: Mapping[str, Any], *, settings: DemoProfile, seed: int,
                 test_labels: Sequence[str]) -> str:
    """The model's report with a first section comparing it to the baselines."""

    def num(value: float | None) -> str:
        return "n/a" if value is None or not math.isfinite(value) else f"{value:.4f}"

    channels = list(scores["model"].pixelwise.per_channel)
    groups = sorted({g for s in scores.values() for g in _group_errors(s)})
    head = ["method", "score", "pixelwise", "featurewise"] + [f"{c} {CHANNEL_NAMES.get(c, '')}" for c in channels] \
        + [f"features: {g}" for g in groups]
    rows = []
    for method, score in scores.items():
        group_errors = _group_errors(score)
        rows.append([method, num(score.score), num(score.pixelwise.value), num(score.featurewise.value)]
                    + [num(score.pixelwise.per_channel.get(c)) for c in channels]
                    + [num(group_errors.get(g)) for g in groups])
    table = "<table><tr>" + "".join(f"<th>{html.escape(h)}</th>" for h in head) + "</tr>" + "".join(
        "<tr>" + "".join(f"<td>{html.escape(v)}</td>" for v in row) + "</tr>" for row in rows) + "</table>"
    section = (
        "<h2>Demo: trained models against two baselines</h2>"
        f"<p>Synthetic {MAGNIFICATION} plate, {settings.wells} wells &times; {settings.fields_per_well} fields of "
        f"{settings.size[0]}&times;{settings.size[1]} px, seed {seed}, demo profile <b>{html.escape(settings.name)}</b>. "
        f"All methods are scored on the same held-out fields ({html.escape(', '.join(test_labels))}), which no "
        "training run saw. <b>mean_image</b>: each stain's pixelwise mean over the training fields. "
        "<b>linear</b>: per-pixel least squares on the 7 brightfield planes and a Gaussian-smoothed (&sigma; = 2 px) "
        "copy of them. Lower is better; the challenge score is (pixelwise + featurewise) / 2.</p>"
        + table
        + f'<p><img alt="pixel and feature error per method" src="data:image/png;base64,{_comparison_figure(scores)}"></p>'
        + "<p>The rest of this page is the evaluation report of the trained models.</p>"
    )
    marker = "</h1>"
    if marker in model_report:
        return model_report.replace(marker, marker + "\n" + section, 1)
    return model_report.replace("<body>", "<body>" + section, 1)
