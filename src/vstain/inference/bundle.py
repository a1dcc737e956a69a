"""Model bundles: one self-describing ``*.safetensors`` file per trained network.

The file holds the weights (safetensors: plain tensors, never pickled code) and, in the
safetensors header metadata under the key ``"vstain"``, a JSON document:

.. code-block:: text

    format            "vstain-bundle"          format_version  1
    architecture      {"name": "tiramisu", "arguments": {...}}   (vstain.models registry)
    targets           ["lipids"]   or ["nuclei", "lipids", "cytoplasm"] for a multi-output net
    channels          ["C02"]      (derived from targets)
    magnification     "20x"
    input_planes      7
    output_index      which element of a tuple output is the image (None: the last; LUPI
                      returns (segmentation logits, image) in eval mode)
    normalization     {"input": Normalizer dict, "targets": {target: Normalizer dict}}
    alignment         null, or the site offsets the targets were aligned with in training
                      {"magnification", "sites": {stain: {"F001": [dy, dx]}}} (docs/alignment.md)
    intensity_map     null, or {target: {"predicted": [...], "target": [...], "fields": n}}: the
                      quantile map fitted on the validation fields (src/vstain/inference/intensity_map.py)
    tta               null, or the test-time augmentation vstain predict uses by default (1 or 8),
                      chosen on the validation fields (validation.tta; src/vstain/training/tta_choice.py)
    training          free-form summary of the training config
    validation        free-form validation scores
    vstain_version, created (UTC ISO time)

Training writes bundles with :func:`save_bundle`; inference reads them with :func:`load_model`,
which refuses anything incompatible with a one-line :class:`BundleError`.
"""

from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Iterable, Mapping

import torch
from torch import nn

from vstain.atomic import atomic_path
from vstain.errors import BundleError, VstainError
from vstain.vocabulary import MAGNIFICATIONS, N_PLANES, TARGET_CHANNELS, TARGETS, TTA_CHOICES

__all__ = [
    "BundleError",
    "BundleMetadata",
    "ModelBundle",
    "save_bundle",
    "load_model",
    "read_metadata",
    "find_bundles",
    "BUNDLE_SUFFIX",
]

BUNDLE_FORMAT = "vstain-bundle"
BUNDLE_FORMAT_VERSION = 1
BUNDLE_SUFFIX = ".safetensors"
_METADATA_KEY = "vstain"


@dataclass(frozen=True)
class BundleMetadata:
    """What a bundle says about its network (see the module docstring for the fields)."""

    architecture: str
    arguments: dict[str, Any]
    targets: tuple[str, ...]
    magnification: str
    normalization: dict[str, Any]
    input_planes: int = N_PLANES
    output_index: int | None = None
    alignment: dict[str, Any] | None = None
    intensity_map: dict[str, Any] | None = None
    tta: int | None = None
    training: dict[str, Any] = field(default_factory=dict)
    validation: dict[str, Any] = field(default_factory=dict)
    vstain_version: str = ""
    created: str = ""

    @property
    def channels(self) -> tuple[str, ...]:
        """CV7000 channels of the targets, e.g. ``("C02",)``."""
        return tuple(f"C{TARGET_CHANNELS[t]:02d}" for t in self.targets)

    def to_dict(self) -> dict[str, Any]:
        """JSON-ready dict, as stored in the file."""
        data = asdict(self)
        data["targets"] = list(self.targets)
        data["architecture"] = {"name": data.pop("architecture"), "arguments": data.pop("arguments")}
        return {"format": BUNDLE_FORMAT, "format_version": BUNDLE_FORMAT_VERSION,
                "channels": list(self.channels), **data}

    @classmethod
    def from_dict(cls, data: Mapping[str, Any], *, source: str = "metadata") -> "BundleMetadata":
        """Validate and build from a stored (or user-given) dict.

        Raises
        ------
        BundleError
            Naming ``source`` and the offending key.
        """
        data = dict(data)
        architecture = data.get("architecture")
        if isinstance(architecture, str):  # accept the flat form {"architecture": name, "arguments": ...}
            architecture = {"name": architecture, "arguments": data.get("arguments", {})}
        if not isinstance(architecture, Mapping) or not isinstance(architecture.get("name"), str):
            raise BundleError(f"{source}: missing key 'architecture' (name + arguments of the network)")
        arguments = architecture.get("arguments") or {}
        if not isinstance(arguments, Mapping):
            raise BundleError(f"{source}: 'architecture.arguments' must be a mapping")
        targets = data.get("targets")
        if isinstance(targets, str):
            targets = [targets]
        if not targets or not isinstance(targets, (list, tuple)):
            raise BundleError(f"{source}: missing key 'targets' (e.g. [\"lipids\"])")
        unknown = [t for t in targets if t not in TARGETS]
        if unknown:
            raise BundleError(f"{source}: unknown target {unknown[0]!r}; expected {', '.join(TARGETS)}")
        if len(set(targets)) != len(targets):
            raise BundleError(f"{source}: 'targets' lists a stain twice: {list(targets)}")
        magnification = data.get("magnification")
        if magnification not in MAGNIFICATIONS:
            raise BundleError(
                f"{source}: 'magnification' is {magnification!r}; expected one of {', '.join(MAGNIFICATIONS)}"
            )
        normalization = data.get("normalization")
        if not isinstance(normalization, Mapping) or not isinstance(normalization.get("input"), Mapping):
            raise BundleError(f"{source}: missing key 'normalization.input' (the input normaliser)")
        target_norms = normalization.get("targets")
        if not isinstance(target_norms, Mapping) or any(t not in target_norms for t in targets):
            missing = [t for t in targets if not isinstance(target_norms, Mapping) or t not in target_norms]
            raise BundleError(f"{source}: missing key 'normalization.targets.{missing[0]}' (its target normaliser)")
        planes = data.get("input_planes", N_PLANES)
        if not isinstance(planes, int) or planes < 1:
            raise BundleError(f"{source}: 'input_planes' must be a positive integer, got {planes!r}")
        output_index = data.get("output_index")
        if output_index is not None and not isinstance(output_index, int):
            raise BundleError(f"{source}: 'output_index' must be an integer or null")
        alignment = data.get("alignment")
        if alignment is not None:
            from vstain.alignment.offsets import SiteOffsets

            try:
                alignment = SiteOffsets.from_dict(alignment, source=f"{source}: alignment").to_dict()
            except VstainError as exc:
                raise BundleError(str(exc)) from None
        intensity_map = data.get("intensity_map")
        if intensity_map is not None:
            from vstain.inference.intensity_map import IntensityMap

            if not isinstance(intensity_map, Mapping) or any(t not in targets for t in intensity_map):
                raise BundleError(f"{source}: 'intensity_map' must map some of the targets {list(targets)} to a map")
            intensity_map = {t: IntensityMap.from_dict(m, source=f"{source}: intensity_map.{t}").to_dict()
                             for t, m in intensity_map.items()}
        tta = data.get("tta")
        if tta is not None and (isinstance(tta, bool) or tta not in TTA_CHOICES):
            raise BundleError(f"{source}: 'tta' must be null or one of {', '.join(map(str, TTA_CHOICES))}, got {tta!r}")
        return cls(
            architecture=architecture["name"],
            arguments=dict(arguments),
            targets=tuple(targets),
            magnification=magnification,
            normalization={"input": dict(normalization["input"]),
                           "targets": {t: dict(target_norms[t]) for t in targets}},
            input_planes=planes,
            output_index=output_index,
            alignment=alignment,
            intensity_map=intensity_map,
            tta=tta,
            training=dict(data.get("training") or {}),
            validation=dict(data.get("validation") or {}),
            vstain_version=str(data.get("vstain_version", "")),
            created=str(data.get("created", "")),
        )


@dataclass
class ModelBundle:
    """A loaded network (in eval mode, on CPU unless moved) and its metadata.

    ``sha256`` is the hex digest of the bundle file's bytes (set by :func:`load_model`); for a
    bundle built in memory, :meth:`content_hash` derives one from the weights and metadata.
    """

    model: nn.Module
    metadata: BundleMetadata
    path: Path | None = None
    sha256: str | None = None

    @property
    def targets(self) -> tuple[str, ...]:
        return self.metadata.targets

    @property
    def magnification(self) -> str:
        return self.metadata.magnification

    @property
    def name(self) -> str:
        """Short label: the file stem, else architecture + targets."""
        if self.path is not None:
            return self.path.stem
        return f"{self.metadata.architecture}-{'+'.join(self.targets)}"

    def content_hash(self) -> str:
        """SHA-256 identifying the bundle's content: of the file, or of weights + metadata.

        Two runs with the same hash used the same network; ``predict`` records it with every
        output so that a resumed run never mixes models.
        """
        if self.sha256 is None:
            digest = hashlib.sha256()
            stored = self.metadata.to_dict()
            stored.pop("created", None)
            digest.update(json.dumps(stored, sort_keys=True, default=str).encode())
            for key, value in sorted(_state_dict(self.model).items()):
                digest.update(key.encode())
                digest.update(str(value.dtype).encode())
                digest.update(str(tuple(value.shape)).encode())
                digest.update(value.reshape(-1).view(torch.uint8).numpy().tobytes())
            self.sha256 = digest.hexdigest()
        return self.sha256

    def input_normalizer(self) -> Any:
        """The input :class:`vstain.plate.normalize.Normalizer` recorded at training time."""
        return _normalizer(self.metadata.normalization["input"], f"{self.name}: normalization.input")

    def target_normalizer(self, target: str) -> Any:
        """The :class:`~vstain.plate.normalize.Normalizer` that maps ``target`` to [0, 1]."""
        if target not in self.targets:
            raise BundleError(f"{self.name}: predicts {', '.join(self.targets)}, not {target}")
        return _normalizer(self.metadata.normalization["targets"][target],
                           f"{self.name}: normalization.targets.{target}")

    def check_compatible(self, *, magnification: str | None = None, planes: int | None = None) -> None:
        """Raise :class:`BundleError` if the bundle cannot process such data."""
        where = self.path or self.name
        if magnification is not None and magnification != self.magnification:
            raise BundleError(
                f"{where}: model trained for {self.magnification} but the plate is {magnification}; "
                f"use a {magnification} model or select the {self.magnification} fields (`magnification`)"
            )
        if planes is not None and planes != self.metadata.input_planes:
            raise BundleError(
                f"{where}: model expects {self.metadata.input_planes} brightfield planes but the data has {planes}"
            )

    def summary(self) -> dict[str, Any]:
        """JSON-ready description for manifests."""
        return {
            "name": self.name,
            "path": str(self.path) if self.path else None,
            "sha256": self.content_hash(),
            "architecture": self.metadata.architecture,
            "targets": list(self.targets),
            "magnification": self.magnification,
            "vstain_version": self.metadata.vstain_version,
            "created": self.metadata.created,
            "validation": self.metadata.validation,
        }


def _normalizer(data: Mapping[str, Any], source: str) -> Any:
    from vstain.plate.normalize import Normalizer

    try:
        return Normalizer.from_dict(dict(data))
    except VstainError as exc:
        raise BundleError(f"{source}: {exc}") from None
    except (KeyError, TypeError, ValueError) as exc:
        raise BundleError(f"{source}: not a valid normaliser ({exc.__class__.__name__}: {exc})") from None


def _state_dict(model: nn.Module) -> dict[str, torch.Tensor]:
    """Plain CPU tensors, with wrapper prefixes (DataParallel, torch.compile) removed."""
    state = {}
    for key, value in model.state_dict().items():
        for prefix in ("_orig_mod.", "module."):
            if key.startswith(prefix):
                key = key[len(prefix) :]
        state[key] = value.detach().to("cpu").contiguous().clone()
    return state


def save_bundle(
    path: str | os.PathLike[str],
    model: nn.Module,
    metadata: BundleMetadata | Mapping[str, Any],
) -> Path:
    """Write ``model``'s weights and ``metadata`` to a ``.safetensors`` bundle, atomically.

    Parameters
    ----------
    path
        Destination; ``.safetensors`` is appended if missing.
    model
        The network (any device; ``torch.compile`` / DataParallel wrappers are unwrapped).
    metadata
        A :class:`BundleMetadata` or a dict with at least ``architecture`` (name + arguments),
        ``targets``, ``magnification`` and ``normalization`` (input + one per target).
        ``vstain_version`` and ``created`` are filled in.

    Returns
    -------
    pathlib.Path
        The written file.
    """
    from safetensors.torch import save_file

    from vstain import __version__

    target = Path(path)
    if target.suffix != BUNDLE_SUFFIX:
        target = target.with_name(target.name + BUNDLE_SUFFIX)
    meta = metadata if isinstance(metadata, BundleMetadata) else BundleMetadata.from_dict(metadata, source=str(target))
    stored = meta.to_dict()
    stored["vstain_version"] = __version__
    stored["created"] = datetime.now(timezone.utc).isoformat(timespec="seconds")
    header = {_METADATA_KEY: json.dumps(stored, sort_keys=True), "format": BUNDLE_FORMAT}
    with atomic_path(target) as tmp:
        save_file(_state_dict(model), str(tmp), metadata=header)
    return target


def read_metadata(path: str | os.PathLike[str]) -> BundleMetadata:
    """The metadata of a bundle, without loading its weights."""
    from safetensors import safe_open

    source = Path(path)
    header = _read_header(source, safe_open)
    return _parse_header(header, source)


def _read_header(source: Path, safe_open: Any) -> dict[str, str]:
    if not source.is_file():
        raise BundleError(f"{source}: no such model bundle")
    try:
        with safe_open(str(source), framework="pt", device="cpu") as handle:
            return dict(handle.metadata() or {})
    except Exception as exc:  # safetensors raises its own error types for foreign files
        raise BundleError(
            f"{source}: not a safetensors model bundle ({exc.__class__.__name__}); "
            "vstain never unpickles .pt/.pth checkpoints"
        ) from None


def _parse_header(header: Mapping[str, str], source: Path) -> BundleMetadata:
    if _METADATA_KEY not in header:
        raise BundleError(f"{source}: safetensors file without vstain metadata; not a vstain model bundle")
    try:
        data = json.loads(header[_METADATA_KEY])
    except json.JSONDecodeError as exc:
        raise BundleError(f"{source}: corrupt vstain metadata ({exc})") from None
    if not isinstance(data, dict) or data.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{source}: metadata is not in the vstain bundle format")
    if int(data.get("format_version", 0)) > BUNDLE_FORMAT_VERSION:
        raise BundleError(
            f"{source}: bundle format version {data['format_version']} is newer than this vstain "
            f"understands ({BUNDLE_FORMAT_VERSION}); upgrade vstain"
        )
    return BundleMetadata.from_dict(data, source=str(source))


def load_model(
    path: str | os.PathLike[str],
    *,
    device: str | torch.device = "cpu",
    magnification: str | None = None,
    planes: int | None = None,
) -> ModelBundle:
    """Load a model bundle: rebuild the network from its metadata and load the weights.

    Parameters
    ----------
    path
        A ``.safetensors`` bundle written by :func:`save_bundle`.
    device
        Where to put the network.
    magnification, planes
        If given, refuse a bundle trained for another magnification / plane count.

    Returns
    -------
    ModelBundle
        With ``.model`` in eval mode and ``.metadata``.

    Raises
    ------
    BundleError
        One line naming the file: not a bundle, missing keys, unknown architecture, weights that
        do not fit the architecture, or incompatible with the requested data.
    """
    from safetensors import safe_open

    from vstain.models import build_model

    source = Path(path)
    header = _read_header(source, safe_open)
    metadata = _parse_header(header, source)
    try:
        model = build_model(metadata.architecture, **metadata.arguments)
    except VstainError as exc:
        raise BundleError(f"{source}: cannot rebuild the network: {exc}") from None
    with safe_open(str(source), framework="pt", device="cpu") as handle:
        state = {key: handle.get_tensor(key) for key in handle.keys()}
    try:
        model.load_state_dict(state, strict=True)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()
        detail = " ".join(line.strip() for line in first[:2])[:300]
        raise BundleError(f"{source}: weights do not match architecture {metadata.architecture!r}: {detail}") from None
    with open(source, "rb") as handle:
        sha256 = hashlib.file_digest(handle, "sha256").hexdigest()
    bundle = ModelBundle(model=model.to(device).eval(), metadata=metadata, path=source, sha256=sha256)
    bundle.check_compatible(magnification=magnification, planes=planes)
    return bundle


def find_bundles(paths: Iterable[str | os.PathLike[str]]) -> list[Path]:
    """Expand files and folders into the list of ``.safetensors`` bundles they name.

    Raises
    ------
    BundleError
        If a path does not exist, or a folder holds no bundle.
    """
    found: list[Path] = []
    for entry in paths:
        path = Path(entry)
        if path.is_dir():
            inside = sorted(path.glob(f"*{BUNDLE_SUFFIX}"))
            if not inside:
                raise BundleError(f"{path}: folder holds no {BUNDLE_SUFFIX} model bundle")
            found.extend(inside)
        elif path.is_file():
            found.append(path)
        else:
            raise BundleError(f"{path}: no such model bundle or folder")
    return found
