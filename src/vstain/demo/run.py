"""The demo's stages: plate, split, then one trial of the CPU recipe and the report (:func:`run_demo`)."""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path
from typing import Any, Callable

from vstain.atomic import write_text_atomic
from vstain.demo.profiles import MAGNIFICATION, PROFILES, DemoProfile
from vstain.demo.summary import SUMMARY_NAME
from vstain.demo.trial import Clock
from vstain.errors import PlateError
from vstain.vocabulary import TEST, VALIDATION

#: Folders and files the demo creates (and only these are removed by ``overwrite``).
_OWNED = ("plate", "runs", "heldout", "predictions", "evaluation")
_OWNED_FILES = ("split.csv", "report.html", SUMMARY_NAME)


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
    from vstain.demo.summary import comparison_section, summarise
    from vstain.demo.trial import run_trial
    from vstain.plate.index import index_plate
    from vstain.plate.splits import random_split
    from vstain.synth.plate import generate_plate
    from vstain.training.recipes import cpu_recipe

    os.environ.setdefault("NO_ALBUMENTATIONS_UPDATE", "1")
    settings = PROFILES[profile] if isinstance(profile, str) else profile
    root = Path(out)
    _prepare_folder(root, overwrite=overwrite)
    clock = Clock(log)
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
    counts = {subset: n for (_, subset), n in split.counts().items()}
    clock.say(f"split: {counts.get('train', 0)} train, {counts.get(VALIDATION, 0)} validation, "
              f"{counts.get(TEST, 0)} test fields")
    paths["split"] = str(split_path)

    # 3-5. train the CPU recipe, predict the test fields, fit the baselines, evaluate every method
    recipe = cpu_recipe(MAGNIFICATION)

    def comparison(every: dict[str, Any], labels: list[str]) -> list[Any]:
        return [comparison_section(every, settings=settings, seed=seed, test_labels=labels)]

    trial = run_trial(plate, split_path, root, magnification=MAGNIFICATION, recipe=recipe, seed=seed, clock=clock,
                      overrides=settings.common,
                      step_overrides={step.name: settings.overrides.get(step.name, ()) for step in recipe},
                      baseline_pixels_per_field=settings.baseline_pixels_per_field,
                      report_fields=settings.report_fields, report_sections=comparison, workers=workers)
    scores, test_labels = trial.scores, trial.test_labels
    paths.update(trial.paths)
    evaluation = root / "evaluation"

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
