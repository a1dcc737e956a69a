"""Configuration files as data with a schema (pydantic v2).

A training config is YAML or JSON; :func:`load_config` validates it and turns every problem into
one :class:`~vstain.errors.ConfigError` line naming the file and the offending key, e.g.::

    error: configs/smoke/nuclei.yaml: data.crop_size: Input should be a valid integer (got 'big')

``--set dotted.key=value`` overrides are applied before validation. A value is taken as the
text it is wherever the schema wants text (names, paths, ``"32"`` precision), so
``--set "data.root=plates/run #1"`` and ``--set data.root=2024-01-01`` stay strings; elsewhere a
number, ``true``/``false`` or ``null`` becomes one (``--set trainer.max_epochs=3`` gives an int),
and ``[...]``/``{...}`` are YAML flow lists and mappings (``--set "data.targets=[lipids]"``).
Unlike YAML, nothing is a comment, a date or an octal number.

The shipped configs (``configs/train/*.yaml`` reproducing the reference recipes, tiny
``configs/smoke/*.yaml``) are package data, in ``src/vstain/configs/``: :func:`find_config`
resolves ``configs/train/C1_20x.yaml`` to them from any folder and from an installed wheel.
"""

from __future__ import annotations

import json
import os
import re
import types
import typing
from importlib.resources import files
from pathlib import Path, PurePosixPath
from typing import TYPE_CHECKING, Any, Literal, Mapping, Sequence, Union

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator, model_validator

from vstain.errors import ConfigError, ConfigNotFound
from vstain.vocabulary import ALIGNMENT_MODES, AlignmentMode, Magnification, Target

if TYPE_CHECKING:
    from importlib.resources.abc import Traversable

Recipe = Literal["regression", "gan", "lupi"]


def _checks_paths(info: ValidationInfo) -> bool:
    # A checkpoint loaded elsewhere carries its config; its data paths need not exist there.
    return (info.context or {}).get("check_paths") is not False


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", validate_assignment=True)


class AugmentConfig(_Strict):
    """Augmentation after cropping; defaults are the reference's lipids/cytoplasm settings."""

    flips: bool = Field(True, description="random horizontal and vertical flips (p=0.5 each)")
    rot90: bool = Field(True, description="random 90-degree rotations (p=0.5)")
    shift: float = Field(0.0, ge=0, le=0.5, description="max shift as a fraction of the crop (nuclei: 0.2)")
    scale: float = Field(0.0, ge=0, lt=1, description="max relative scale change (nuclei: 0.1)")
    rotate: float = Field(0.0, ge=0, le=180, description="max rotation in degrees (nuclei: 180)")


class DataConfig(_Strict):
    """Where the plate is and how training samples are drawn from it."""

    root: Path = Field(..., description="plate folder (<root>/<mag>_images/ layout or a flat folder)")
    magnification: Magnification = Field("20x", description="magnification to train on")
    targets: list[Target] = Field(
        ..., min_length=1, description="stains the model predicts, in output-channel order"
    )
    split: Path | None = Field(
        None,
        description="split CSV (magnification, well, field, subset: train, validation, test or calibration; "
        "docs/splits.md); training fits train and picks checkpoints on validation; none: hold out validation "
        "fields at random",
    )
    holdout_fields: int = Field(
        1, ge=0, description="fields drawn as validation per magnification when no split is given (reference: 3/4/6)"
    )
    holdout_wells: list[str] = Field(
        default_factory=list,
        description="wells whose fields are validation when no split is given (overrides holdout_fields)",
    )
    stats: Path | None = Field(
        None, description="statistics JSON from `vstain stats`; none: computed on the training fields"
    )
    normalization: Literal["minmax", "percentile"] = Field(
        "minmax", description="minmax is the reference; percentile is robust to outliers"
    )
    sampling: Literal["random", "nuclei", "mixed"] = Field(
        "random",
        description="random crops; crops centred on nuclei (the reference nuclei recipe); or mixed: a fraction "
        "data.centred_fraction of crops centred on nuclei, the rest random",
    )
    centred_fraction: float = Field(
        0.5, ge=0, le=1, description="mixed sampling: fraction of crops centred on a nucleus"
    )
    crop_size: int = Field(512, ge=16, description="training crop side in pixels")
    samples_per_epoch: int | None = Field(
        None, ge=1, description="samples per epoch; none: one per field (random) or one per nucleus (nuclei)"
    )
    batch_size: int = Field(4, ge=1, description="samples per optimisation step and device")
    num_workers: int = Field(0, ge=0, description="data-loader worker processes")
    max_cached_fields: int = Field(8, ge=1, description="decoded fields kept in memory per worker")
    augment: AugmentConfig = Field(default_factory=AugmentConfig)
    alignment: AlignmentMode | Path = Field(
        "none",
        description="stain-to-brightfield offsets (docs/alignment.md): none; auto (estimated on the training "
        "and validation fields at start, saved as offsets.csv in the run folder); or an offsets CSV from "
        "`vstain align`. The targets are resampled into the brightfield frame before crops are cut",
    )

    @field_validator("alignment", mode="before")
    @classmethod
    def _alignment_keyword_or_file(cls, value: Any, info: ValidationInfo) -> Any:
        if value in ALIGNMENT_MODES or value is None:
            return "none" if value is None else value
        if not isinstance(value, (str, Path)):
            raise ValueError("must be none, auto or the path of an offsets CSV")
        if _checks_paths(info) and not Path(value).is_file():
            raise ValueError(f"{value} does not exist (none, auto or an offsets CSV from vstain align)")
        return Path(value)

    @field_validator("root", "split", "stats")
    @classmethod
    def _path_exists(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if _checks_paths(info) and path is not None and not Path(path).exists():
            raise ValueError(f"{path} does not exist")
        return path


class ModelConfig(_Strict):
    """A network from the registry (`vstain.models.build_model`)."""

    name: str = Field("tiramisu", description="tiramisu | lupi | tiramisu_multi | patchgan")
    args: dict[str, Any] = Field(
        default_factory=dict, description="constructor overrides; empty = reference configuration"
    )
    output_init: Literal["median", "default"] = Field(
        "median",
        description="median: the untrained network outputs each target's training median; default: PyTorch's "
        "initialisation (the reference, output 0.5)",
    )


class OptimizerConfig(_Strict):
    """Optimiser of the generator (Adam as the reference's regression and GAN recipes; AdamW for nuclei)."""

    name: Literal["adam", "adamw"] = "adam"
    lr: float = Field(1e-4, gt=0)
    weight_decay: float = Field(0.0, ge=0)
    betas: tuple[float, float] = (0.9, 0.999)
    eps: float = Field(1e-8, gt=0)


class SchedulerConfig(_Strict):
    """Learning-rate schedule of the main stage (the fine-tune stage follows at a constant rate)."""

    name: Literal["none", "cosine_warm_restarts", "step", "cosine"] = Field(
        "none",
        description="cosine_warm_restarts is stepped every iteration (fractional epochs), as the reference did; "
        "cosine: one half-cosine from the learning rate to eta_min over the main stage, after the warm-up",
    )
    warmup_epochs: float = Field(
        0.0, ge=0, description="linear warm-up from 0 over this many (fractional) epochs, before any schedule"
    )
    t0: int = Field(2, ge=1, description="cosine: epochs of the first cycle")
    t_mult: int = Field(2, ge=1, description="cosine: cycle length multiplier")
    eta_min: float = Field(0.0, ge=0)
    step_size: int = Field(1000, ge=1, description="step: epochs between decays")
    gamma: float = Field(0.5, gt=0)


class LossConfig(_Strict):
    """Loss weights per recipe (reference values by default)."""

    regression: str = Field("log_squared", description="regression recipe loss (build_loss name)")
    adversarial: float = Field(0.01, ge=0, description="gan: weight of the relativistic G loss")
    gradient: float = Field(10.0, ge=0, description="gan: weight of the gradient loss (lipids 10, cytoplasm 100)")
    median_mae: float = Field(
        1.0, ge=0, description="gan: weight of MAE/median; lupi: weight of the plain MAE/median term (reference 0.5)"
    )
    lwm: float = Field(1.0, ge=0, description="lupi: weight of the loss-weight-module term")
    bce: float = Field(1.0, ge=0, description="lupi: weight of the plain BCE term")
    median: Literal["sample", "batch", "dataset"] = Field(
        "dataset",
        description="MAE/median denominator: dataset = the training targets' median (the challenge pixel metric on "
        "every crop); batch = the reference's batch median; sample = each crop's own median",
    )
    scale: Literal["full", "working"] = Field(
        "full",
        description="lupi with model.args.downsample d > 1: full = the upsampled outputs against the "
        "full-resolution target and mask (reference); working = the network's own outputs, d times smaller, "
        "against d x d block means of the target and the blocks' majority mask: d² fewer loss pixels "
        "(docs/training.md, 'Nuclei at the scale of nuclei')",
    )
    log_eps: float = Field(1e-3, gt=0, description="log-squared loss epsilon floor")
    squared: float = Field(
        0.0, ge=0,
        description="weight of a squared term (error/median)² added to every MAE/median term (0: the plain "
        "metric): missed bright objects pull harder and are learnt sooner (docs/training.md, 'Loss scale')",
    )


class GanConfig(_Strict):
    """Adversarial phase settings (recipe gan)."""

    pretrained: Path | None = Field(None, description="generator bundle from the pretrain run (model.safetensors)")
    discriminator: ModelConfig = Field(default_factory=lambda: ModelConfig(name="patchgan"))
    d_lr: float = Field(1e-6, gt=0, description="discriminator learning rate")
    pool_size: int = Field(50, ge=1, description="history of past discriminator outputs")
    pool: Literal["history", "image"] = Field(
        "history",
        description="history = reference FIFO of D outputs; image = pix2pix random-replacement image pool",
    )

    @field_validator("pretrained")
    @classmethod
    def _pretrained_exists(cls, path: Path | None, info: ValidationInfo) -> Path | None:
        if _checks_paths(info) and path is not None and not Path(path).exists():
            raise ValueError(f"{path} does not exist (train the pretrain config first, or --set gan.pretrained=PATH)")
        return path


class FinetuneConfig(_Strict):
    """Low-learning-rate stage after the main schedule (the report's nuclei recipe)."""

    epochs: int = Field(0, ge=0, description="extra epochs at the fine-tune learning rate (report: 10)")
    lr: float = Field(1e-5, gt=0)


class TrainerConfig(_Strict):
    """Lightning trainer settings."""

    max_epochs: int = Field(1, ge=1, description="epochs of the main schedule (fine-tune epochs come on top)")
    max_steps: int = Field(-1, description="stop after this many optimiser steps (-1: no limit)")
    precision: Literal["32", "bf16-mixed", "16-mixed"] = "32"
    accelerator: str = "auto"
    devices: int | str = "auto"
    num_nodes: int = Field(1, ge=1)
    strategy: str = Field("auto", description="auto | ddp | ddp_find_unused_parameters_true ...")
    accumulate_grad_batches: int = Field(1, ge=1)
    gradient_clip: float | None = Field(None, gt=0, description="max gradient norm (reference: 1.0 for gan and lupi)")
    channels_last: bool = False
    compile: bool = Field(
        False,
        description="torch.compile what the training steps run (generator, GAN discriminator); slow start, fast on GPU",
    )
    deterministic: bool = True
    val_every_n_epochs: int = Field(1, ge=1)
    checkpoint_every_n_epochs: int = Field(1, ge=1)
    checkpoint_every_n_steps: int | None = Field(
        None, ge=1, description="also save a mid-epoch checkpoint every N steps"
    )
    log_every_n_steps: int = Field(10, ge=1)
    progress_bar: bool = True
    limit_val_fields: int | None = Field(None, ge=1, description="validate on at most this many held-out fields")
    ema_decay: float | None = Field(
        None, gt=0, lt=1,
        description="validate, checkpoint and export an exponential moving average of the weights (and BatchNorm "
        "statistics) with this decay per optimiser step; null: the raw weights",
    )
    precise_bn_batches: int | None = Field(
        None, ge=1,
        description="before each validation, recompute the generator's BatchNorm statistics as the average over "
        "this many training batches through the current weights (docs/training.md); null: the running averages "
        "of training (the reference)",
    )


class ValidationConfig(_Strict):
    """Validation on held-out whole fields, through the same tiler as ``vstain predict``."""

    mode: Literal["reference", "tiles", "whole"] = Field(
        "whole", description="tiler used for validation (same as vstain predict)"
    )
    monitor: str = Field(
        "auto", description="metric the best checkpoint is chosen on; auto = pixel relative MAE of the targets"
    )
    linear_baseline: bool = Field(
        True,
        description="fit the per-pixel linear regression on the training fields, score it on the validation fields "
        "and warn loudly if the exported model is worse (summary.json, bundle)",
    )
    intensity_map: Literal["none", "quantiles"] = Field(
        "none",
        description="quantiles: map the exported model's output levels onto the real stain's intensity histogram, "
        "fitted on the validation fields, stored in the bundle and applied by vstain predict (dim, unsure "
        "predictions reach the pipelines' absolute thresholds; src/vstain/inference/intensity_map.py)",
    )
    tta: Literal[1, 8, "auto"] = Field(
        1,
        description="test-time augmentation vstain predict uses by default for the exported model: 1 (none), 8 "
        "(the mean over the eight flips/rotations) or auto: whichever gives the lower pixel error on the "
        "validation fields (a model that learned an orientation-dependent shift loses by averaging; "
        "src/vstain/training/tta_choice.py)",
    )


class TrainConfig(_Strict):
    """A complete training run: ``vstain train -c CONFIG``."""

    name: str = Field(..., description="run name; default output folder runs/<name>")
    recipe: Recipe = Field(..., description="regression (pretrain) | gan | lupi (nuclei)")
    seed: int = Field(42, description="one seed drives weights, sampling and augmentation")
    data: DataConfig
    model: ModelConfig = Field(default_factory=ModelConfig)
    optimizer: OptimizerConfig = Field(default_factory=OptimizerConfig)
    scheduler: SchedulerConfig = Field(default_factory=SchedulerConfig)
    loss: LossConfig = Field(default_factory=LossConfig)
    gan: GanConfig | None = None
    finetune: FinetuneConfig = Field(default_factory=FinetuneConfig)
    trainer: TrainerConfig = Field(default_factory=TrainerConfig)
    validation: ValidationConfig = Field(default_factory=ValidationConfig)

    @model_validator(mode="after")
    def _recipe_consistency(self) -> "TrainConfig":
        if self.recipe == "gan" and self.gan is None:
            raise ValueError("gan: the gan recipe needs a gan section (at least gan.pretrained)")
        if self.recipe == "lupi" and self.model.name != "lupi":
            raise ValueError(f"model.name: the lupi recipe trains the 'lupi' model, not {self.model.name!r}")
        if self.recipe == "gan" and self.trainer.accumulate_grad_batches > 1:
            raise ValueError("trainer.accumulate_grad_batches: the gan recipe steps D and G once per batch, "
                             "as the reference; raise data.batch_size instead")
        if self.recipe == "gan" and self.trainer.ema_decay is not None:
            raise ValueError("trainer.ema_decay: not supported by the gan recipe (two optimisers stepped by hand); "
                             "use it for regression and lupi runs")
        if self.trainer.precise_bn_batches is not None and self.trainer.ema_decay is not None:
            raise ValueError("trainer.precise_bn_batches: not combined with trainer.ema_decay (the average carries "
                             "its own BatchNorm statistics); set one of them to null")
        if self.recipe != "lupi" and self.model.name == "lupi":
            raise ValueError("model.name: the 'lupi' model is trained by the lupi recipe")
        if self.loss.scale == "working":
            if self.recipe != "lupi":
                raise ValueError(f"loss.scale: 'working' is for the lupi recipe (a model with model.args.downsample), "
                                 f"not {self.recipe}")
            downsample = self.model.args.get("downsample", 1)
            if isinstance(downsample, int) and downsample > 1 and self.data.crop_size % downsample:
                raise ValueError(f"data.crop_size: {self.data.crop_size} is not a multiple of "
                                 f"model.args.downsample={downsample}, which loss.scale=working needs")
        return self


_INT = re.compile(r"[-+]?[0-9]+")
_FLOAT = re.compile(r"[-+]?(\.[0-9]+|[0-9]+(\.[0-9]*)?)([eE][-+]?[0-9]+)?")
_NULL = ("", "null", "Null", "NULL", "~")
_UNKNOWN = object()  # a key the schema does not describe (pydantic reports it as unknown)


def _scalar(text: str) -> Any:
    """YAML 1.2 core scalars only: null, true/false, decimal int, float; anything else is text."""
    if text in _NULL:
        return None
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    if _INT.fullmatch(text):
        return int(text)
    if _FLOAT.fullmatch(text):
        return float(text)
    return text


def _members(annotation: Any) -> tuple[Any, ...]:
    """The alternatives of a Union / Optional annotation (the annotation itself otherwise)."""
    if typing.get_origin(annotation) in (Union, types.UnionType):
        return typing.get_args(annotation)
    return (annotation,)


def _accepts(annotation: Any, value: Any) -> bool:
    """Whether ``annotation`` admits ``value``'s type as is (bool, int, float, None, str)."""
    for member in _members(annotation):
        if member is Any or member is _UNKNOWN:
            return True
        if typing.get_origin(member) is Literal:
            if any(type(choice) is type(value) for choice in typing.get_args(member)):
                return True
            continue
        if value is None and member is type(None):
            return True
        if isinstance(value, str) and member in (str, Path):
            return True
        if isinstance(value, bool):
            if member is bool:
                return True
        elif isinstance(value, int) and member in (int, float):
            return True
        elif isinstance(value, float) and member is float:
            return True
    return False


def _annotation_at(schema: type[BaseModel] | None, parts: Sequence[str]) -> Any:
    """The type annotation of the dotted key ``parts`` in ``schema`` (``_UNKNOWN`` if none)."""
    annotation: Any = schema if schema is not None else _UNKNOWN
    for part in parts:
        step = _UNKNOWN
        for member in _members(annotation):
            if isinstance(member, type) and issubclass(member, BaseModel) and part in member.model_fields:
                step = member.model_fields[part].annotation
                break
            if typing.get_origin(member) is dict:
                step = typing.get_args(member)[1]
                break
            if member is Any:
                step = Any
                break
        annotation = step
        if annotation is _UNKNOWN:
            break
    return annotation


def _parse_value(text: str, annotation: Any = _UNKNOWN, key: str = "") -> Any:
    """The value of ``--set key=text`` for a key of type ``annotation`` (see the module docstring)."""
    stripped = text.strip()
    if stripped[:1] in ("[", "{"):
        try:
            return yaml.safe_load(stripped)
        except yaml.YAMLError as exc:
            first = str(exc).strip().splitlines()[0]
            raise ConfigError(f"--set {key}: {text!r} is not a valid YAML list or mapping ({first})") from None
    value = _scalar(stripped)
    if isinstance(value, str):
        return text  # exactly what was typed: no comments, dates or octal numbers
    if value is None:
        # "null" is None where the key allows None; a name or path "null" stays text. An empty
        # value is None (as in YAML): pydantic then names the key that needs a value.
        return text if stripped and not _accepts(annotation, None) and _accepts(annotation, text) else None
    if _accepts(annotation, value) or not _accepts(annotation, text):
        return value
    return text  # a number-like name or path, e.g. data.root=2024 or trainer.precision=32


def apply_overrides(
    data: dict[str, Any], overrides: Sequence[str], *, schema: type[BaseModel] | None = None
) -> dict[str, Any]:
    """Apply ``dotted.key=value`` overrides to a nested dict (a copy is returned).

    Parameters
    ----------
    data
        The config as read from its file.
    overrides
        ``"dotted.key=value"`` strings (``vstain train --set``).
    schema
        The config's pydantic model (e.g. :class:`TrainConfig`): values of keys it types as text
        stay exactly the text given. Without it every value is parsed as a YAML 1.2 core scalar
        (number, true/false, null) or flow collection, else kept as text.
    """
    result = json.loads(json.dumps(data, default=str))
    for item in overrides:
        if "=" not in item:
            raise ConfigError(f"--set {item!r}: expected dotted.key=value")
        key, value = item.split("=", 1)
        node = result
        parts = key.strip().split(".")
        for part in parts[:-1]:
            child = node.get(part)
            if child is None:
                child = node[part] = {}
            if not isinstance(child, dict):
                raise ConfigError(f"--set {key}: {part} is not a section")
            node = child
        node[parts[-1]] = _parse_value(value, _annotation_at(schema, parts), key.strip())
    return result


def packaged_configs() -> Traversable:
    """The folder of configs shipped in the package (``smoke/``, ``train/``)."""
    return files("vstain") / "configs"


def find_config(path: str | os.PathLike[str]) -> Path | Traversable:
    """The config file ``path`` names: the file itself if it exists, else the packaged config.

    ``configs/train/C1_20x.yaml``, ``train/C1_20x.yaml`` and ``train/C1_20x`` all name the
    packaged ``train/C1_20x.yaml`` when no such file exists, so the commands of the docs run
    from any folder and from an installed wheel; a file of your own at ``path`` always wins.

    Raises
    ------
    ConfigNotFound
        If ``path`` is neither a file nor a packaged config.
    """
    local = Path(path)
    if local.is_file():
        return local
    parts = PurePosixPath(str(path).replace(os.sep, "/")).parts
    if parts[:1] == ("configs",):
        parts = parts[1:]
    if parts and not local.is_absolute() and ".." not in parts:
        resource = packaged_configs().joinpath(*parts)
        for candidate in (resource, resource.parent / f"{resource.name}.yaml"):
            if candidate.is_file():
                return candidate
    raise ConfigNotFound(f"{path}: no such config file (nor a packaged config such as configs/smoke/nuclei.yaml)")


def read_config_file(path: str | os.PathLike[str]) -> dict[str, Any]:
    """Parse a YAML or JSON file (or a packaged config, see :func:`find_config`) into a dict.

    Raises
    ------
    ConfigError
        One line naming the file, for a missing file, a syntax error or a top level that is not a mapping.
    """
    source = find_config(path)
    is_json = source.name.endswith(".json")
    try:
        text = source.read_text(encoding="utf-8")
        data = json.loads(text) if is_json else yaml.safe_load(text)
    except (json.JSONDecodeError, yaml.YAMLError) as exc:
        first = str(exc).strip().splitlines()[0]
        raise ConfigError(f"{path}: not valid {'JSON' if is_json else 'YAML'}: {first}") from None
    if not isinstance(data, dict):
        raise ConfigError(f"{path}: expected a mapping of keys at the top level")
    return data


def validation_message(error: ValidationError) -> str:
    """The first validation problem as ``dotted.key: message (got value)``."""
    problem = error.errors()[0]
    location = ".".join(str(part) for part in problem["loc"])
    message = problem["msg"].removeprefix("Value error, ")
    if problem["type"] == "extra_forbidden":
        message = "unknown key"
    got = problem.get("input")
    hidden = problem["type"] == "missing" or isinstance(got, (dict, list)) or str(got) in message
    shown = "" if hidden else f" (got {got!r})"
    more = len(error.errors()) - 1
    suffix = f" [and {more} more problem{'s' if more > 1 else ''}]" if more else ""
    return f"{location + ': ' if location else ''}{message}{shown}{suffix}"


def set_values(data: dict[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """Set ``dotted.key`` entries of a nested dict to exact values (no parsing; a copy is returned)."""
    result = json.loads(json.dumps(data, default=str))
    for key, value in values.items():
        node = result
        *parents, leaf = key.split(".")
        for part in parents:
            child = node.setdefault(part, {})
            if not isinstance(child, dict):
                raise ConfigError(f"{key}: {part} is not a section")
            node = child
        node[leaf] = value
    return result


def load_config(
    path: str | os.PathLike[str], overrides: Sequence[str] = (), *, values: Mapping[str, Any] | None = None
) -> TrainConfig:
    """Read, override and validate a training config.

    Relative paths inside the file are taken relative to the current directory (as the command
    line sees them), so ``--set data.root=PLATE`` works from anywhere.

    Parameters
    ----------
    path
        A YAML or JSON file, or a packaged config name (:func:`find_config`).
    overrides
        ``dotted.key=value`` strings, as ``--set`` gives them.
    values
        ``{dotted.key: value}`` set after ``overrides``, exactly as given (e.g. paths with any
        characters, from code rather than the command line).
    """
    data = apply_overrides(read_config_file(path), overrides, schema=TrainConfig)
    if values:
        data = set_values(data, values)
    try:
        return TrainConfig.model_validate(data)
    except ValidationError as error:
        raise ConfigError(f"{path}: {validation_message(error)}") from None


def config_to_yaml(config: BaseModel) -> str:
    """The resolved config as YAML (paths as strings), for ``config.resolved.yaml``."""
    return yaml.safe_dump(json.loads(config.model_dump_json()), sort_keys=False)


def schema_markdown(model: type[BaseModel] = TrainConfig, *, title: str = "Training configuration") -> str:
    """Markdown reference of every key of ``model`` (nested sections flattened to dotted keys).

    ``docs/configs.md`` is generated from this, and a test keeps the two equal, so the
    documentation cannot drift from the schema.
    """
    lines = [
        f"# {title}",
        "",
        "Generated from the pydantic schemas in `src/vstain/config.py` by",
        "`python -m vstain.config > docs/configs.md`; a test fails if this file is stale.",
        "Unknown keys, wrong types and missing files are refused with one line naming the key.",
        "Override any key on the command line with `--set dotted.key=value`.",
        "",
        "| key | type | default | meaning |",
        "| --- | --- | --- | --- |",
    ]
    lines += _schema_rows(model, prefix="")
    return "\n".join(lines) + "\n"


def _schema_rows(model: type[BaseModel], prefix: str) -> list[str]:
    rows: list[str] = []
    for name, info in model.model_fields.items():
        key = f"{prefix}{name}"
        annotation = info.annotation
        nested = _nested_model(annotation)
        if info.is_required():
            default = "required"
        elif info.default_factory is not None:
            default = "(section)" if nested else f"`{_default_text(info.default_factory())}`"
        else:
            default = f"`{_default_text(info.default)}`"
        summary = ((nested.__doc__ or "").strip().splitlines() or [""])[0] if nested else ""
        description = info.description or summary
        description = description.replace("|", "\\|")
        rows.append(f"| `{key}` | {_type_text(annotation)} | {default} | {description} |")
        if nested is not None:
            rows += _schema_rows(nested, prefix=f"{key}.")
    return rows


def _nested_model(annotation: Any) -> type[BaseModel] | None:
    import typing

    candidates = [annotation, *typing.get_args(annotation)]
    for candidate in candidates:
        if isinstance(candidate, type) and issubclass(candidate, BaseModel):
            return candidate
    return None


def _type_text(annotation: Any) -> str:
    text = getattr(annotation, "__name__", None) if isinstance(annotation, type) else None
    text = text or str(annotation)
    for noise in ("typing.", "pathlib.", "vstain.config.", "__main__.", "<class '", "'>"):
        text = text.replace(noise, "")
    return text.replace("|", "\\|")


def _default_text(value: Any) -> str:
    if isinstance(value, BaseModel):
        return "(section)"
    if isinstance(value, Path):
        return str(value)
    return json.dumps(value) if isinstance(value, (list, dict, tuple, bool)) or value is None else str(value)


if __name__ == "__main__":  # pragma: no cover - documentation generator
    print(schema_markdown(), end="")
