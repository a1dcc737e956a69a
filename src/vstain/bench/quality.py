"""``vstain bench quality``: does the CPU recipe learn plates nobody tuned it on?

For each plate variant (a ``vstain synth`` preset or a seeded randomisation of the physical
parameters, docs/synthetic-data.md) the benchmark synthesises a small plate, holds out its last
well as the test fields, trains the three stains with the CPU recipe
(:func:`vstain.training.recipes.cpu_recipe`) at the benchmark's budget, predicts the test fields
and scores the models and both baselines (training-mean image, per-pixel linear regression) with
the challenge metric (:func:`vstain.demo.trial.run_trial`). It writes into ``out``::

    <variant>/            plate/, split.csv, runs/, predictions/, reference/, evaluation/, trial.json
    quality.json          every number, per variant
    quality.csv           one row per variant x stain x method (pixelwise), plus score rows
    quality.md            the tables of docs/quality.md
    quality.png           the figure

Beside the methods, each variant scores three *reference points* (:func:`reference_points`): the
test fields' stains rendered again without camera noise, as a second exposure of the same
specimen, and without noise with every cell's CellTracker loading at its median. They are not
predictions; they say how much of an error is the plate's noise, and how much of a cytoplasm error
is dye uptake that the brightfield does not show.

Every variant is a pure function of its name and ``seed``; a rerun skips variants whose
``trial.json`` exists (delete it to recompute; one without reference points gets them added).
Variants marked ``tuned`` were looked at while the recipe was developed; the others were held back
and only run to judge it. Beside the named :data:`VARIANTS`, any fresh plate can be named
(:func:`variant_named`): ``random-<seed>-<mag>`` draws every parameter with ``vstain synth
--randomize <seed>``, ``<preset>-<mag>`` is a ``vstain synth --preset``; a recipe change is judged on
plates drawn after it was made.

``stains`` trains only some of the three stains; the others are then the test fields' true stains
in every method's folder (model, baselines, reference points), so the score measures the trained
stains alone and a change to one stain's recipe costs one stain's training. Such scores compare
only with scores of the same stains.

``changes`` (``vstain bench quality --set STAIN:KEY=VALUE``) tries a recipe change: config overrides of
one stain's step, validated before anything runs, recorded in ``trial.json`` with the budget (a folder
trained without them, or with others, is refused) and named under the tables of ``quality.md``.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import re
import shutil
import warnings
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any, Callable, Mapping, Sequence

from vstain.atomic import write_text_atomic
from vstain.errors import ConfigError
from vstain.vocabulary import ALIGNMENT_MODES, TARGETS, TEST, TRAIN, VALIDATION, AlignmentMode

__all__ = ["BUDGETS", "VARIANTS", "Variant", "parse_changes", "run_quality_benchmark", "variant_named"]


@dataclass(frozen=True)
class Variant:
    """One plate variant of the benchmark."""

    name: str
    magnification: str
    preset: str | None = None  #: a ``vstain synth --preset``
    randomize: int | None = None  #: a ``vstain synth --randomize`` seed
    tuned: bool = False  #: looked at while the recipe was developed (else held back)


#: The benchmark's plates: three development variants at 20x, and held-back variants at every
#: magnification (presets never looked at while tuning, and seeded random draws of every parameter).
VARIANTS: tuple[Variant, ...] = (
    Variant("reference-20x", "20x", preset="reference", tuned=True),
    Variant("faint-nuclei-20x", "20x", preset="faint-nuclei", tuned=True),
    Variant("bright-cytoplasm-20x", "20x", preset="bright-cytoplasm", tuned=True),
    Variant("dim-noisy-40x", "40x", preset="dim-noisy"),
    Variant("sparse-large-droplets-60x", "60x", preset="sparse-large-droplets"),
    Variant("random-20x", "20x", randomize=2001),
    Variant("random-40x", "40x", randomize=4001),
    Variant("random-60x", "60x", randomize=6001),
)


def variant_named(name: str) -> Variant:
    """The variant called ``name``: one of :data:`VARIANTS`, or a fresh plate named by its recipe.

    ``random-<seed>-<mag>`` (e.g. ``random-2321-20x``) is ``vstain synth --randomize <seed>`` at
    ``<mag>``; ``<preset>-<mag>`` (e.g. ``rim-droplets-40x``) is ``vstain synth --preset <preset>``.
    Fresh plates are marked not tuned on (``tuned=False``): they are for judging a recipe, drawn after it
    was changed.

    Raises
    ------
    ConfigError
        For a name that is neither (the message lists both forms and the presets).
    """
    from vstain.synth.presets import preset_names
    from vstain.vocabulary import MAGNIFICATIONS

    known = {v.name: v for v in VARIANTS}
    if name in known:
        return known[name]
    mags = "|".join(MAGNIFICATIONS)
    drawn = re.fullmatch(rf"random-(\d+)-({mags})", name)
    if drawn:
        return Variant(name, drawn.group(2), randomize=int(drawn.group(1)))
    preset = re.fullmatch(rf"(.+)-({mags})", name)
    if preset and preset.group(1) in preset_names():
        return Variant(name, preset.group(2), preset=preset.group(1))
    raise ConfigError(f"unknown variant {name}; choose from {', '.join(known)}, or name a fresh plate "
                      f"random-<seed>-<{mags}> or <preset>-<magnification> with a preset of "
                      f"{', '.join(preset_names())}")


_COMMON = ("trainer.progress_bar=false", "trainer.log_every_n_steps=1000", "data.num_workers=0")


@dataclass(frozen=True)
class Budget:
    """Plate size and training length of one benchmark flavour."""

    size: tuple[int, int] | None  #: None: the magnification's real field size
    wells: int
    fields: int
    step_overrides: dict[str, tuple[str, ...]]
    common: tuple[str, ...] = _COMMON


#: ``bench``: 1024² fields, 3 wells x 3 fields, at most 10 minutes of training per variant on a
#: 2-core CPU: the nuclei at the recipe's own length (its 20 epochs: at 10, the 40x nuclei were still
#: learning, docs/quality.md "The nuclei at the recipe's own length"), lipids and cytoplasm 3 of their
#: 10 epochs; ``shipped``: the same plates, every stain at its recipe's own length; ``full``: that
#: recipe on fields of the instrument's size; ``smoke``: a few steps on tiny plates, to test the
#: machinery.
BUDGETS: dict[str, Budget] = {
    "bench": Budget(size=(1024, 1024), wells=3, fields=3,
                    step_overrides={"lipids": ("trainer.max_epochs=3",), "cytoplasm": ("trainer.max_epochs=3",)}),
    "shipped": Budget(size=(1024, 1024), wells=3, fields=3, step_overrides={}),
    # The CPU recipe as shipped (configs/cpu), on fields of the instrument's size.
    "full": Budget(size=None, wells=3, fields=3, step_overrides={}),
    "smoke": Budget(size=(384, 384), wells=2, fields=2,
                    step_overrides={s: ("trainer.max_epochs=1", "data.samples_per_epoch=8", "data.crop_size=96")
                                    for s in TARGETS},
                    common=(*_COMMON, "validation.linear_baseline=false")),
}


def parse_changes(texts: Sequence[str]) -> dict[str, tuple[str, ...]]:
    """``STAIN:KEY=VALUE`` strings (``vstain bench quality --set``) -> ``{stain: ("KEY=VALUE", ...)}``.

    Stains keep :data:`~vstain.vocabulary.TARGETS` order, each stain's changes the order given.

    Raises
    ------
    ConfigError
        For a string without a stain, key or ``=``, or an unknown stain.
    """
    changes: dict[str, list[str]] = {}
    for text in texts:
        stain, colon, change = text.partition(":")
        key = change.partition("=")[0]
        if not colon or "=" not in change or not key.strip():
            raise ConfigError(f"--set {text}: expected STAIN:KEY=VALUE, e.g. cytoplasm:data.crop_size=512")
        if stain not in TARGETS:
            raise ConfigError(f"--set {text}: unknown stain {stain!r}; choose from {', '.join(TARGETS)}")
        changes.setdefault(stain, []).append(change)
    return {stain: tuple(changes[stain]) for stain in TARGETS if stain in changes}


def _with_changes(budget: Budget, changes: Mapping[str, Sequence[str]], *, stains: Sequence[str],
                  magnifications: Sequence[str]) -> Budget:
    """``budget`` with ``changes`` appended to its step overrides, each checked against the recipe's config.

    A change to a stain that is not trained, or to a key the recipe or the benchmark sets itself
    (:data:`vstain.training.recipes.SET_BY_TRAIN_RECIPE`, ``data.alignment``), would do nothing or
    contradict what ``trial.json`` records, and a key the config or the network does not know would
    fail only after the plate was drawn: all are refused here, in one line.
    """
    from vstain.config import load_config
    from vstain.models import build_model
    from vstain.training.recipes import check_recipe_overrides, cpu_recipe

    idle = [s for s in changes if s not in stains]
    if idle:
        raise ConfigError(f"--set for {', '.join(idle)}, which this run does not train (--stains "
                          f"{' '.join(stains)}); a change must reach a trained stain")
    for stain, overrides in changes.items():
        check_recipe_overrides(overrides, source=f"--set {stain}:")
        # data.alignment is the benchmark's own (run_variant), recorded in trial.json.
        for change in overrides:
            if change.partition("=")[0].strip() == "data.alignment":
                raise ConfigError(f"--set {stain}:{change}: data.alignment is set by the benchmark (--alignment)")
    for magnification in dict.fromkeys(magnifications):
        for step in cpu_recipe(magnification):
            if step.name in changes:
                # The plate is drawn later: any existing folder stands in for data.root here.
                config = load_config(step.config, list(changes[step.name]), values={"data.root": os.curdir})
                build_model(config.model.name, **config.model.args)
    merged = {step: tuple(overrides) for step, overrides in budget.step_overrides.items()}
    for stain, extra in changes.items():
        merged[stain] = (*merged.get(stain, ()), *extra)
    return replace(budget, step_overrides=merged)


def _variant_split(fields: Sequence[Any], *, wells: Sequence[str]) -> dict[tuple[str, str, int], str]:
    """The last well is test; the first field of every other well validates; the rest train."""
    test_well = wells[-1]
    subsets = {}
    for field in fields:
        well, number = field.key[1], field.key[2]
        subsets[field.key] = TEST if well == test_well else (VALIDATION if number == 1 else TRAIN)
    return subsets


def run_variant(variant: Variant, out: Path, *, budget: Budget, seed: int,
                log: Callable[[str], None], alignment: AlignmentMode = "none",
                stains: Sequence[str] = TARGETS) -> dict[str, Any]:
    """Synthesise, train, predict and score one variant; returns (and writes) its ``trial.json``.

    ``alignment`` is the recipe's ``data.alignment`` (``none`` or ``auto``); with ``auto`` the models
    predict in the fluorescence frame, as the recorded stains they are scored against. Only the
    recipe's steps for ``stains`` are trained; every method (and reference point) gets the test
    fields' true files for the other stains. A finished trial in ``out`` is reused only if it was
    trained with the same alignment, budget and stains (all recorded in ``trial.json``); otherwise
    :class:`~vstain.errors.ConfigError`.
    """
    from vstain.demo.summary import _method_summary
    from vstain.demo.trial import Clock, run_trial
    from vstain.plate.index import index_plate
    from vstain.plate.splits import Split
    from vstain.synth.plate import generate_plate, well_names
    from vstain.training.recipes import cpu_recipe

    result_path = out / "trial.json"
    if result_path.exists():
        result = json.loads(result_path.read_text())
        done_with = result.get("alignment", "none")  # trials from before the option trained with none
        if done_with != alignment:
            raise ConfigError(f"{out}: trained with alignment {done_with}, not {alignment}; "
                              "give another --out or the same --alignment")
        done_within, this = result.get("budget"), _budget_record(budget)
        if done_within != this:
            raise ConfigError(f"{out}: trained with another budget ({_budget_line(done_within)}), not this run's "
                              f"({_budget_line(this)}); give another --out or the same "
                              "--smoke / --full-size / --as-shipped and --set")
        done_for = result.get("stains", list(TARGETS))  # trials from before the option trained all three
        if done_for != list(stains):
            raise ConfigError(f"{out}: trained {', '.join(done_for)}, not {', '.join(stains)}; "
                              "give another --out or the same --stains")
        from vstain.synth.reacquire import REACQUISITIONS

        missing = [kind for kind in REACQUISITIONS if kind not in result.get("reference_points", {})]
        if not missing:
            log(f"{variant.name}: already done ({result_path}), skipped")
            return result
        # A trial from before (some of) the reference points existed: add those, keep the rest.
        result["reference_points"] = {**result.get("reference_points", {}), **reference_points(
            variant, out, test_labels=result["test_fields"], seed=seed, log=log, stains=stains, kinds=missing)}
        write_text_atomic(result_path, json.dumps(result, indent=1, allow_nan=False) + "\n")
        return result
    for stale in ("plate", "runs", "heldout", "predictions", "evaluation", "reference"):
        if (out / stale).exists():  # an interrupted earlier attempt: start the variant afresh
            shutil.rmtree(out / stale)
    out.mkdir(parents=True, exist_ok=True)
    clock = Clock(lambda line: log(f"{variant.name} {line}"))
    size = "full-size" if budget.size is None else f"{budget.size[0]}x{budget.size[1]} px"
    with clock.stage("synth", f"synthesising {budget.wells} wells x {budget.fields} fields of {size}"):
        generate_plate(out / "plate", magnification=variant.magnification, wells=budget.wells, fields=budget.fields,
                       seed=seed, size=budget.size, preset=variant.preset, randomize=variant.randomize)
    fields = index_plate(out / "plate", magnification=variant.magnification).select(
        magnification=variant.magnification)
    split = Split(_variant_split(fields, wells=well_names(budget.wells)))
    split_path = split.save(out / "split.csv")
    recipe = tuple(step for step in cpu_recipe(variant.magnification) if set(step.stains) & set(stains))
    trial = run_trial(out / "plate", split_path, out, magnification=variant.magnification, recipe=recipe, seed=seed,
                      clock=clock, overrides=(*budget.common, f"data.alignment={alignment}"),
                      step_overrides=budget.step_overrides,
                      frame="fluorescence" if alignment == "auto" else "brightfield",
                      true_stains=[s for s in TARGETS if s not in stains])
    result: dict[str, Any] = {
        "variant": asdict(variant),
        "alignment": alignment,
        "budget": _budget_record(budget),
        "stains": list(stains),
        "methods": {m: _method_summary(s) for m, s in trial.scores.items()},
        "nuclei_counts": nuclei_counts(out / "evaluation" / "model"),
        "validation": _validation(out / "runs", recipe),
        "test_fields": trial.test_labels,
        "timings": dict(clock.timings),
    }
    result["reference_points"] = reference_points(variant, out, test_labels=trial.test_labels, seed=seed, log=log,
                                                  stains=stains)
    write_text_atomic(result_path, json.dumps(result, indent=1, allow_nan=False) + "\n")
    return result


def _budget_record(budget: Budget) -> dict[str, Any]:
    """``budget`` as ``trial.json`` stores it (tuples as lists), so a reused trial can be compared."""
    return json.loads(json.dumps(asdict(budget)))


def _budget_line(record: dict[str, Any] | None) -> str:
    """A budget record in a few words, for an error line."""
    if record is None:
        return "not recorded: a trial from before 2026-12-04, when the bench budget trained the nuclei 10 epochs"
    size = "full-size" if record.get("size") is None else "x".join(str(n) for n in record["size"])
    steps = "; ".join(f"{step} {' '.join(o)}" for step, o in sorted(record.get("step_overrides", {}).items()))
    return f"{size} fields, {steps or 'the recipe as shipped'}"


def reference_points(variant: Variant, out: Path, *, test_labels: Sequence[str], seed: int,
                     log: Callable[[str], None], stains: Sequence[str] = TARGETS,
                     kinds: Sequence[str] | None = None) -> dict[str, Any]:
    """Score the test fields' own stains rendered again: without noise, as a second exposure, and
    with every cell's CellTracker loading at its median.

    Not predictions: what a perfect predictor of the mean stain would score (``noise_free``), how
    far two acquisitions of the same specimen disagree (``reacquired``), and a lower bound for any
    predictor of the cytoplasm from the brightfield, which cannot know a cell's dye uptake
    (``median_loading``), through the same metric as the methods
    (vstain/synth/reacquire.py). A target a second acquisition cannot meet measures the plate's
    noise, not the model. Stains outside ``stains`` keep their recorded files, as in the methods'
    folders. ``kinds``: the renderings to score (default all of
    :data:`vstain.synth.reacquire.REACQUISITIONS`).
    """
    from vstain.demo.summary import _method_summary
    from vstain.demo.trial import Clock, substitute_truth
    from vstain.evaluation.folders import evaluate_folders
    from vstain.synth.reacquire import REACQUISITIONS, render_stains_again

    clock = Clock(lambda line: log(f"{variant.name} {line}"))
    fields = [tuple(label.split()[1:3]) for label in test_labels]
    heldout = out / "heldout" / f"{variant.magnification}_images"
    points: dict[str, Any] = {}
    for kind in REACQUISITIONS if kinds is None else kinds:
        folder = out / "reference" / kind
        with clock.stage(f"reference_{kind}", f"scoring the test fields' stains rendered again ({kind})"):
            if folder.exists():
                shutil.rmtree(folder)
            render_stains_again(out / "plate", variant.magnification, fields, folder, kind=kind, noise_seed=seed)
            substitute_truth(heldout, folder / f"{variant.magnification}_images",
                             [s for s in TARGETS if s not in stains])
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="Mean of empty slice", category=RuntimeWarning)
                score = evaluate_folders(heldout, folder / f"{variant.magnification}_images",
                                         out=out / "evaluation" / kind, magnification=variant.magnification,
                                         report_fields=0)[0]
        points[kind] = {**_method_summary(score), "nuclei_counts": nuclei_counts(out / "evaluation" / kind)}
    return points


def nuclei_counts(evaluation: Path) -> list[dict[str, Any]]:
    """Per test field: nuclei the pipeline finds on the true C01 and on the predicted C01."""
    truth = _read_rows(evaluation / "features_truth.csv")
    predicted = {(r["Metadata_Well"], r["Metadata_FoV"]): r for r in _read_rows(evaluation / "features_pred.csv")}
    rows = []
    for row in truth:
        key = (row["Metadata_Well"], row["Metadata_FoV"])
        pred = predicted.get(key, {})
        rows.append({"field": f"{key[0]} {key[1]}", "truth": _number(row.get("Count_nuclei")),
                     "predicted": _number(pred.get("Count_nuclei"))})
    return rows


def _read_rows(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as handle:
        return list(csv.DictReader(handle))


def _number(text: str | None) -> float | None:
    try:
        value = float(text) if text not in (None, "") else math.nan
    except ValueError:
        return None
    return value if math.isfinite(value) else None


def _validation(runs: Path, recipe: Sequence[Any]) -> dict[str, Any]:
    """Each run's verdict against the linear baseline and its segmentation IoU (from summary.json), and
    the test-time augmentation its bundle chose on the validation fields (``validation.tta``).
    """
    from vstain.inference.bundle import BUNDLE_SUFFIX, read_metadata

    out = {}
    for step in recipe:
        path = runs / step.name / "summary.json"
        if path.exists():
            summary = json.loads(path.read_text())["validation"]
            out[step.name] = {"beats_linear": summary.get("beats_linear"), "iou": summary.get("iou"),
                              "per_target": summary.get("per_target")}
            bundle = runs / step.name / f"model{BUNDLE_SUFFIX}"
            if bundle.exists():
                metadata = read_metadata(bundle)
                out[step.name].update(tta=metadata.tta or 1, tta_errors=metadata.validation.get("tta"))
    return out


def run_quality_benchmark(
    out: str | Path,
    *,
    variants: Sequence[str] | None = None,
    budget: str = "bench",
    seed: int = 0,
    log: Callable[[str], None] = print,
    alignment: AlignmentMode = "none",
    stains: Sequence[str] | None = None,
    changes: Mapping[str, Sequence[str]] | None = None,
) -> dict[str, Any]:
    """Run the benchmark's variants into ``out``; returns (and writes) the summary.

    Parameters
    ----------
    out
        Output folder (created; variants already done there are reused).
    variants
        Names from :data:`VARIANTS` (default all), or fresh plates named as :func:`variant_named` reads them.
    budget
        A key of :data:`BUDGETS` (``bench``, ``shipped``, ``full`` or ``smoke``).
    seed
        Seed of the plates, splits, training runs and baselines.
    log
        Called with each progress line.
    alignment
        ``data.alignment`` of every training run: ``none`` (the recipe as shipped) or ``auto``
        (offsets estimated on the training fields; predictions moved into the stains' frame).
    stains
        The stains to train (default all three, in any order; kept in :data:`TARGETS` order). The
        others are scored as their true test files in every method's folder.
    changes
        ``{stain: ("dotted.key=value", ...)}`` (:func:`parse_changes`): overrides of that stain's
        recipe step, applied after the budget's; recorded with the budget.

    Raises
    ------
    ConfigError
        For an unknown variant, budget, stain or alignment, a change that is malformed, names a stain
        not trained or a key the recipe's config or network does not take (before anything runs), or an
        ``out`` whose variants were trained with another alignment, budget, changes or stains.
    """
    chosen = [variant_named(name) for name in (variants or [v.name for v in VARIANTS])]
    unknown_stains = [s for s in stains or () if s not in TARGETS]
    if unknown_stains:
        raise ConfigError(f"unknown stain(s) {', '.join(unknown_stains)}; choose from {', '.join(TARGETS)}")
    trained = [s for s in TARGETS if s in stains] if stains else list(TARGETS)
    if budget not in BUDGETS:
        raise ConfigError(f"unknown budget {budget!r}; choose one of {', '.join(BUDGETS)}")
    if alignment not in ALIGNMENT_MODES:
        raise ConfigError(f"unknown alignment {alignment!r}; choose one of {', '.join(ALIGNMENT_MODES)}")
    changes = {stain: tuple(c) for stain, c in (changes or {}).items() if c}
    chosen_budget = _with_changes(BUDGETS[budget], changes, stains=trained,
                                  magnifications=[v.magnification for v in chosen])
    root = Path(out)
    results = [run_variant(variant, root / variant.name, budget=chosen_budget, seed=seed, log=log,
                           alignment=alignment, stains=trained)
               for variant in chosen]
    size = chosen_budget.size
    summary = {"budget": budget, "seed": seed, "alignment": alignment, "size": None if size is None else list(size),
               "stains": trained, "changes": {stain: list(c) for stain, c in changes.items()},
               "variants": results, "targets": check_targets(results)}
    write_text_atomic(root / "quality.json", json.dumps(summary, indent=1, allow_nan=False) + "\n")
    write_text_atomic(root / "quality.csv", quality_csv(results))
    write_text_atomic(root / "quality.md", quality_markdown(summary))
    quality_figure(results, root / "quality.png")
    return summary


def _pixel(entry: dict[str, Any], stain: str) -> float | None:
    return next((v for k, v in entry["pixelwise_per_channel"].items() if k.endswith(stain)), None)


def check_targets(results: Sequence[dict[str, Any]]) -> dict[str, Any]:
    """The quality targets per variant: score <= 0.5 x linear; every stain's pixel error below both
    baselines; nuclei counts within 20 % of the truth's; LUPI validation IoU above 0.5.

    The count target is judged per test field (``max_nuclei_count_error``, the strictest reading);
    ``well_nuclei_count_error`` is the test well's total against the truth's total, reported beside
    it because issue 11 states the target per variant and small 60x fields hold few nuclei. A trial
    that trained only some stains (``stains``) is judged on those: the stains it did not train are
    left out, and the nuclei targets are None (not judged) unless the nuclei were trained.
    """
    # Here, not at the top: run_summary imports Lightning, which this module otherwise loads only to train.
    from vstain.training.run_summary import RELIABLE_IOU

    out = {}
    for result in results:
        methods = result["methods"]
        model, linear, mean = methods["model"], methods["linear"], methods["mean_image"]
        ratio = None if not (model["score"] and linear["score"]) else model["score"] / linear["score"]
        trained = _trained(result)
        stains_beat = {s: (_pixel(model, s) is not None and all(
            _pixel(model, s) < (_pixel(b, s) if _pixel(b, s) is not None else math.inf) for b in (linear, mean)))
            for s in TARGETS if s in trained}
        nuclei = "nuclei" in trained
        error = _max_count_error(result["nuclei_counts"]) if nuclei else None
        iou = result["validation"].get("nuclei", {}).get("iou")
        out[result["variant"]["name"]] = {
            "score_over_linear": ratio,
            "score_target_met": ratio is not None and ratio <= 0.5,
            "stains_beat_both_baselines": stains_beat,
            "max_nuclei_count_error": error,
            "nuclei_count_target_met": (error is not None and error <= 0.2) if nuclei else None,
            "well_nuclei_count_error": _total_count_error(result["nuclei_counts"]) if nuclei else None,
            "iou": iou,
            "iou_target_met": (iou is not None and iou > RELIABLE_IOU) if nuclei else None,
        }
    return out


def _trained(result: dict[str, Any]) -> list[str]:
    """The stains a trial trained (all three for trials from before ``stains`` was recorded)."""
    return list(result.get("stains", TARGETS))


def _total_count_error(counts: Sequence[dict[str, Any]]) -> float | None:
    """Relative error of the nuclei counted over all test fields together (None: the truth has none)."""
    truth = sum(c["truth"] or 0.0 for c in counts)
    return abs(sum(c["predicted"] or 0.0 for c in counts) - truth) / truth if truth else None


def _max_count_error(counts: Sequence[dict[str, Any]]) -> float | None:
    """Largest relative nuclei count error over the fields with nuclei in the truth (None: no such field)."""
    errors = [abs((c["predicted"] or 0.0) - c["truth"]) / c["truth"] for c in counts if c["truth"]]
    return max(errors) if errors else None


def quality_csv(results: Sequence[dict[str, Any]]) -> str:
    """One row per variant x stain x method (pixelwise) and per variant x method (score, featurewise)."""
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(["variant", "magnification", "tuned", "stain", "method", "metric", "value"])
    for result in results:
        variant = result["variant"]
        for method, entry in result["methods"].items():
            for metric in ("score", "pixelwise", "featurewise"):
                writer.writerow([variant["name"], variant["magnification"], variant["tuned"], "all", method, metric,
                                 entry[metric]])
            for stain in _trained(result):
                writer.writerow([variant["name"], variant["magnification"], variant["tuned"], stain, method,
                                 "pixelwise", _pixel(entry, stain)])
        for kind, entry in result.get("reference_points", {}).items():
            for metric in ("score", "pixelwise", "featurewise"):
                writer.writerow([variant["name"], variant["magnification"], variant["tuned"], "all", kind, metric,
                                 entry[metric]])
    return buffer.getvalue()


def _num(value: float | None, digits: int = 3) -> str:
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.{digits}f}"


def _general(value: float | None) -> str:
    """A number of any size in three significant digits ("n/a" when absent)."""
    return "n/a" if value is None or not math.isfinite(value) else f"{value:.3g}"


def quality_markdown(summary: dict[str, Any]) -> str:
    """The benchmark's tables in Markdown (scores per method; pixel error per stain; the targets)."""
    lines = ["| variant | tuned on | score model | score linear | score mean image | model / linear | "
             "nuclei model | nuclei linear | lipids model | lipids linear | cytoplasm model | cytoplasm linear | "
             "nuclei count error (max per field) | nuclei count error (test well total) | LUPI val IoU |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for result in summary["variants"]:
        variant, methods = result["variant"], result["methods"]
        target = summary["targets"][variant["name"]]
        cells = [variant["name"], "yes" if variant["tuned"] else "no (held back)",
                 _num(methods["model"]["score"]), _num(methods["linear"]["score"]),
                 _num(methods["mean_image"]["score"]), _num(target["score_over_linear"], 2)]
        for stain in TARGETS:
            cells += ([_num(_pixel(methods["model"], stain)), _num(_pixel(methods["linear"], stain))]
                      if stain in _trained(result) else ["truth", "truth"])
        for error in (target["max_nuclei_count_error"], target.get("well_nuclei_count_error")):
            cells.append("n/a" if error is None else f"{100 * error:.0f} %")
        cells.append(_num(target["iou"], 2))
        lines.append("| " + " | ".join(cells) + " |")
    chose = [r for r in summary["variants"] if any("tta" in v for v in r.get("validation", {}).values())]
    if chose:
        lines += ["", "Test-time augmentation each model predicted the test well with, as chosen on its validation "
                  "fields (`validation.tta: auto`: 8 = the mean over the eight flips/rotations):", "",
                  "| variant | " + " | ".join(TARGETS) + " |", "| --- |" + " --- |" * len(TARGETS)]
        for result in chose:
            runs = result["validation"]
            cells = [str(runs.get(stain, {}).get("tta", "n/a")) for stain in TARGETS]
            lines.append(f"| {result['variant']['name']} | " + " | ".join(cells) + " |")
    resting = [(r["variant"]["name"], r["methods"]["model"].get("featurewise_rests_on") or [])
               for r in summary["variants"]]
    resting = [(name, features) for name, features in resting if features]
    if resting:
        lines += ["", "Where the model's featurewise error rests on a few features (the three largest carry at "
                  "least half of it; `vstain evaluate` names them too, docs/evaluation.md): relative error "
                  "(target median).", ""]
        for name, features in resting:
            lines.append(f"- {name}: " + ", ".join(
                f"`{e['feature']}` {_num(e['relative_mae'], 1)} ({_general(e['target_median'])})" for e in features))
    partial = sorted({", ".join(_trained(r)) for r in summary["variants"] if _trained(r) != list(TARGETS)})
    if partial:
        lines += ["", f"Trained {' / '.join(partial)} only: every method (and reference point) was scored with the "
                  "test fields' true files for the other stains (`truth` above), so these scores measure the trained "
                  "stains alone and compare only with scores of the same stains."]
    if summary.get("changes"):
        named = "; ".join(f"{stain} " + ", ".join(f"`{c}`" for c in changes)
                          for stain, changes in summary["changes"].items())
        lines += ["", f"Recipe changed (`--set`): {named}; everything else as in configs/cpu/ at this budget. "
                  "Compare with a run of the same plates and seed without the change."]
    if summary.get("alignment", "none") != "none":
        lines += ["", f"Trained with `data.alignment: {summary['alignment']}`; the models' predictions were moved "
                  "into the stains' (fluorescence) frame before scoring."]
    with_points = [r for r in summary["variants"] if "reference_points" in r]
    if with_points:
        lines += ["", "Reference points (the test fields' own stains rendered again; not predictions): score, "
                  "featurewise error and largest nuclei count error of each against the recorded stains; "
                  "median loading: without noise and with every cell's CellTracker loading at its median, a lower "
                  "bound for any predictor of the cytoplasm from the brightfield (a cell's dye uptake leaves no "
                  "trace in it; a loose one where the brightfield hides the cell bodies, docs/quality.md).", "",
                  "| variant | model score | noise-free score | second exposure score | linear score | "
                  "model featurewise | noise-free featurewise | second exposure featurewise | "
                  "noise-free count error (max) | second exposure count error (max) | median-loading score | "
                  "cytoplasm pixel: model | noise-free | median loading | linear |",
                  "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
        for result in with_points:
            methods, points = result["methods"], result["reference_points"]
            cells = [result["variant"]["name"], _num(methods["model"]["score"]), _num(points["noise_free"]["score"]),
                     _num(points["reacquired"]["score"]), _num(methods["linear"]["score"]),
                     _num(methods["model"]["featurewise"]), _num(points["noise_free"]["featurewise"]),
                     _num(points["reacquired"]["featurewise"])]
            for kind in ("noise_free", "reacquired"):
                error = _max_count_error(points[kind]["nuclei_counts"])
                cells.append("n/a" if error is None else f"{100 * error:.0f} %")
            median = points.get("median_loading")  # trials from before it was added have none
            cells.append(_num(median["score"]) if median else "n/a")
            cytoplasm = [methods["model"], points["noise_free"], median, methods["linear"]]
            if "cytoplasm" not in _trained(result):  # every folder held the true cytoplasm
                cells += ["truth"] * len(cytoplasm)
            else:
                cells += [_num(_pixel(entry, "cytoplasm")) if entry and "pixelwise_per_channel" in entry else "n/a"
                          for entry in cytoplasm]
            lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def quality_figure(results: Sequence[dict[str, Any]], path: Path) -> None:
    """Scores per variant and method, and pixel errors per stain (model vs linear), as a PNG."""
    import numpy as np
    from matplotlib.figure import Figure

    names = [r["variant"]["name"] for r in results]
    figure = Figure(figsize=(max(8, 1.3 * len(names)), 6.5))
    top, bottom = figure.subplots(2, 1)
    x = np.arange(len(names))
    for i, method in enumerate(("model", "linear", "mean_image")):
        values = [r["methods"][method]["score"] or math.nan for r in results]
        top.bar(x + (i - 1) * 0.27, values, 0.27, label=method)
    top.set_xticks(x, names, rotation=20, fontsize=8)
    top.set_ylabel("challenge score (lower is better)")
    top.legend(fontsize=8)
    for i, stain in enumerate(TARGETS):
        model = [(_pixel(r["methods"]["model"], stain) if stain in _trained(r) else None) or math.nan
                 for r in results]
        linear = [(_pixel(r["methods"]["linear"], stain) if stain in _trained(r) else None) or math.nan
                  for r in results]
        bottom.bar(x + (i - 1) * 0.27, model, 0.13, label=f"{stain} model")
        bottom.bar(x + (i - 1) * 0.27 + 0.13, linear, 0.13, label=f"{stain} linear", alpha=0.45)
    bottom.set_xticks(x, names, rotation=20, fontsize=8)
    bottom.set_ylabel("pixelwise relative MAE")
    bottom.legend(fontsize=7, ncol=3)
    figure.tight_layout()
    figure.savefig(path, dpi=90)
