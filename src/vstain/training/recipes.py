"""Recipes: the training runs, in order, that make the models of one magnification's three stains.

A recipe is a tuple of :class:`RecipeStep`: a run name, the packaged config it trains, the stains
its model predicts in the end, and the run whose bundle it starts from (a GAN starts from its
pretraining). Two recipes ship:

* :func:`cpu_recipe` — ``configs/cpu/C{1,2,3}_<mag>.yaml``: one model per stain, sized to train the
  three stains of a full-size plate in about 30 minutes on a 2-core CPU (docs/training.md,
  "The CPU recipe"); ``vstain demo`` and ``vstain bench quality`` run it;
* :func:`reference_recipe` — ``configs/train/``: the report's nine-model system (C1 LUPI, C2/C3
  pretraining then GAN), for a GPU.

:func:`train_recipe` trains the steps of a recipe on one plate and split and returns the bundle of
each stain.
"""

from __future__ import annotations

import logging
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Mapping, Sequence

from vstain.vocabulary import TARGETS, channel_of, check_magnification


@dataclass(frozen=True)
class RecipeStep:
    """One training run of a recipe.

    Parameters
    ----------
    name
        Run name (the run folder under the runs directory).
    config
        Packaged config to train (``configs/cpu/C1_20x.yaml`` ...; see :func:`vstain.config.find_config`).
    stains
        Stains this run's model predicts in the recipe's final set; empty for a step whose model
        only starts another (a GAN's pretraining).
    pretrained
        Name of the earlier step whose bundle this run starts from (``gan.pretrained``).
    """

    name: str
    config: str
    stains: tuple[str, ...] = ()
    pretrained: str | None = None


def cpu_recipe(magnification: str) -> tuple[RecipeStep, ...]:
    """The CPU recipe of ``magnification``: one model per stain, ``configs/cpu/C{1,2,3}_<mag>.yaml``."""
    check_magnification(magnification)
    return tuple(RecipeStep(stain, f"configs/cpu/C{channel_of(stain)}_{magnification}.yaml", (stain,))
                 for stain in TARGETS)


def reference_recipe(magnification: str) -> tuple[RecipeStep, ...]:
    """The report's recipe of ``magnification`` (``configs/train``): nuclei LUPI, C2/C3 pretraining then GAN."""
    check_magnification(magnification)
    steps = [RecipeStep(f"C1_{magnification}", f"configs/train/C1_{magnification}.yaml", ("nuclei",))]
    for stain in TARGETS[1:]:
        run = f"C{channel_of(stain)}_{magnification}"
        steps.append(RecipeStep(f"{run}_pretrain", f"configs/train/{run}_pretrain.yaml"))
        steps.append(RecipeStep(f"{run}_gan", f"configs/train/{run}_gan.yaml", (stain,), pretrained=f"{run}_pretrain"))
    return tuple(steps)


#: Keys :func:`train_recipe` sets in every step from its own arguments (``seed``, ``plate``, ``split``,
#: ``magnification``, the earlier step a GAN starts from). An override of one would be overwritten or
#: would contradict the argument, so :func:`check_recipe_overrides` refuses it.
SET_BY_TRAIN_RECIPE: tuple[str, ...] = ("seed", "data.root", "data.split", "data.magnification", "gan.pretrained")


def check_recipe_overrides(overrides: Sequence[str], *, source: str) -> None:
    """Refuse, in one line, an override of a key :func:`train_recipe` sets itself (:data:`SET_BY_TRAIN_RECIPE`).

    ``source`` starts the message (e.g. ``"--set cytoplasm:"``), followed by the override.

    Raises
    ------
    vstain.errors.ConfigError
        For the first such override.
    """
    from vstain.errors import ConfigError

    for item in overrides:
        key = item.partition("=")[0].strip()
        if key in SET_BY_TRAIN_RECIPE:
            raise ConfigError(f"{source}{item}: {key} is set in every step from the recipe's own plate, split, "
                              "magnification and seed; give it there (vstain bench quality: the variant, --seed)")


def final_runs(steps: Sequence[RecipeStep]) -> dict[str, str]:
    """``{stain: run name}`` of the steps whose models predict each stain (the last one wins)."""
    return {stain: step.name for step in steps for stain in step.stains}


def train_recipe(
    steps: Sequence[RecipeStep],
    *,
    plate: str | os.PathLike[str],
    split: str | os.PathLike[str],
    runs_dir: str | os.PathLike[str],
    magnification: str,
    seed: int = 42,
    overrides: Sequence[str] = (),
    step_overrides: Mapping[str, Sequence[str]] | None = None,
    on_step: Callable[[RecipeStep, object], object] | None = None,
) -> dict[str, Path]:
    """Train every step of a recipe on ``plate`` and return ``{stain: model bundle}``.

    Parameters
    ----------
    steps
        The recipe (:func:`cpu_recipe`, :func:`reference_recipe` or your own).
    plate, split
        The plate folder and its split CSV (train / validation / test; docs/splits.md).
    runs_dir
        Each step trains into ``runs_dir/<step name>``.
    magnification
        Set as ``data.magnification`` of every step.
    seed
        Set as every step's ``seed``.
    overrides
        ``dotted.key=value`` overrides applied to every step (e.g. ``trainer.progress_bar=false``).
    step_overrides
        Overrides of single steps, by step name, applied after ``overrides``.
    on_step
        Called with each step and its validated config before it trains; may return a context
        manager that wraps the training (the demo times its stages this way).

    Raises
    ------
    vstain.errors.ConfigError
        For an override of a key set from the arguments above (:data:`SET_BY_TRAIN_RECIPE`; before
        anything trains), or a config that does not validate (before anything of that step is written).
    """
    import contextlib

    import lightning  # noqa: F401 - sets its loggers' levels on import; quieten them after

    from vstain.config import load_config
    from vstain.training.fit import fit

    check_recipe_overrides(overrides, source="override ")
    for name, extra in (step_overrides or {}).items():
        check_recipe_overrides(extra, source=f"override of step {name}: ")
    for name in ("lightning.pytorch", "lightning.fabric", "lightning"):
        logging.getLogger(name).setLevel(logging.ERROR)
    bundles: dict[str, Path] = {}
    for step in steps:
        # Paths are set as exact values, not `--set` text, so any folder name works.
        values = {"data.root": str(plate), "data.split": str(split), "data.magnification": magnification}
        if step.pretrained is not None:
            values["gan.pretrained"] = str(bundles[step.pretrained])
        config = load_config(step.config, [f"seed={seed}", *overrides, *(step_overrides or {}).get(step.name, ())],
                             values=values)
        wrapper = on_step(step, config) if on_step is not None else None
        with wrapper if wrapper is not None else contextlib.nullcontext():
            bundles[step.name] = fit(config, Path(runs_dir) / step.name)
    return {stain: bundles[run] for stain, run in final_runs(steps).items()}
