"""Predict fluorescence stains from brightfield: one field, or a whole plate streamed to disk.

With trained bundles (``runs/<name>/model.safetensors``)::

    predictor = vstain.Predictor(["runs/C1_20x", "runs/C2_20x_gan"], device="cuda")
    images = predictor.predict_field(field.read_brightfield())   # {"nuclei": uint16, "lipids": ...}
    predictor.predict_plate("plate/", "predicted/")                # TIFFs + predictions.json

Output files (``predict_plate``):

* one uint16 TIFF per field and stain, named as the CV7000 would name that channel
  (``Field.target_filename``), flat in the output folder - or in ``<mag>_images/`` subfolders
  when the run covers several magnifications, so names cannot collide;
* with ``tta=8`` and ``uncertainty=True``, the per-pixel standard deviation over the eight
  transforms, in the stain's units (rounded uint16), under the same name in ``uncertainty/``
  (a subfolder, so the output folder still indexes as a plate);
* ``predictions.json``: models (with the SHA-256 of each bundle), settings, timings, fields
  done/skipped, and the fields left out because their brightfield is unusable.

Test-time augmentation is per bundle unless ``tta`` is given: a bundle trained with
``validation.tta: auto`` says whether the mean over the eight flips/rotations predicted its
validation fields better (src/vstain/training/tta_choice.py); bundles that chose differently run in
separate passes.

Values are de-normalised with the bundle's target normaliser, rounded and clipped to 0-65535
(the reference truncated). Every file is written atomically; a field whose files all exist is
skipped, so an interrupted run resumes where it stopped. Each TIFF records in its
``ImageDescription`` which bundle (name and SHA-256) and which result-changing settings (tiling,
precision, TTA) made it; a resumed run with other models or settings refuses to mix its outputs
with the old ones unless ``overwrite`` recomputes every field. Speed settings (device, batch size,
channels-last, compile) are not compared: they change at most the rounding of a value.

Before any field is computed, the plate is checked (a field whose brightfield is missing or
unreadable stops the run unless ``skip_bad_fields``) and the output folders are created and
probed for writing.

On CPUs, ``predict_plate(..., cluster=...)`` maps the fields over a Dask cluster instead
(:mod:`vstain.plate.jobs`: local worker processes, an existing scheduler or a SLURM/PBS
cluster): each task gets a field's location, never its pixels; each worker loads the bundles once
(from their files, checked against this run's SHA-256) and reads, predicts and writes its fields
itself, the same files as here, atomically, as soon as each is done. Resume, provenance checks,
bad-field handling and ``predictions.json`` are this process's, as without a cluster, and the
outputs are bit-identical to a one-process run with as many threads per field (the worker's
threads: a different count changes float summation order, so at most the rounding of a value,
like the other speed settings). GPUs are not used this way: under ``torchrun``
each rank predicts its share of the fields (:mod:`vstain.inference.distributed`).

Examples
--------
A runnable example: an untrained tiny network saved as a bundle stands in for a trained one.

>>> import tempfile
>>> from pathlib import Path
>>> import numpy as np
>>> from vstain.inference.bundle import save_bundle
>>> from vstain.models import build_model
>>> from vstain.plate.normalize import Normalizer
>>> tiny = {"init_filters": 8, "down_blocks": [1, 1], "up_blocks": [1, 1], "bottleneck_layers": 1,
...         "growth_rate": 4}
>>> planes = Normalizer(np.zeros(7), np.full(7, 1000.0), channels=[f"C04Z{z:02d}" for z in range(1, 8)])
>>> lipids = Normalizer(np.array([100.0]), np.array([4000.0]), channels=["C02"])
>>> metadata = {"architecture": {"name": "tiramisu", "arguments": tiny}, "targets": ["lipids"],
...             "magnification": "20x",
...             "normalization": {"input": planes.to_dict(), "targets": {"lipids": lipids.to_dict()}}}
>>> folder = tempfile.TemporaryDirectory()
>>> bundle = save_bundle(Path(folder.name) / "lipids", build_model("tiramisu", **tiny), metadata)
>>> predictor = Predictor([bundle], device="cpu")
>>> stack = np.random.default_rng(0).integers(0, 1000, (7, 64, 80), dtype=np.uint16)
>>> images = predictor.predict_field(stack)
>>> sorted(images), images["lipids"].shape, images["lipids"].dtype
(['lipids'], (64, 80), dtype('uint16'))
>>> folder.cleanup()
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
import warnings
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field as dataclass_field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Callable, Iterable, Mapping, Sequence

import numpy as np
import torch

from vstain.errors import ConfigError, PlateError, VstainError
from vstain.inference.bundle import BundleError, ModelBundle, find_bundles, load_model
from vstain.inference.distributed import RankInfo, rank_info, shard
from vstain.inference.engine import DIHEDRAL, FieldEngine, StainNetworks
from vstain.inference.intensity_map import IntensityMap
from vstain.inference.tiler import MODES, Tiler
from vstain.vocabulary import N_PLANES, TARGETS, TTA_CHOICES

if TYPE_CHECKING:
    from distributed import Client

    from vstain.plate.jobs import ClusterOptions

#: Where predictions are written: the brightfield frame (overlays the input), or each stain's own
#: frame (offset by the site offsets, to compare pixel for pixel with that instrument's stains).
FRAMES = ("brightfield", "fluorescence")

__all__ = ["Predictor", "MANIFEST_NAME", "UNCERTAINTY_DIR", "PROVENANCE_KEY", "to_uint16", "check_cluster_use"]

MANIFEST_NAME = "predictions.json"
UNCERTAINTY_DIR = "uncertainty"
#: Manifest settings that change the outputs (not speed settings, nor the rank's own device).
_OUTPUT_SETTINGS = ("tiler", "precision", "tta", "mode", "uncertainty", "frame", "offsets", "intensity_map")
#: Key of the JSON document in each output TIFF's ImageDescription that says what made it.
PROVENANCE_KEY = "vstain_prediction"
_UINT16_MAX = 65535


def to_uint16(values: torch.Tensor) -> np.ndarray:
    """Round to nearest and clip to 0-65535; returns a numpy uint16 array (on the CPU)."""
    rounded = torch.round(values).clamp_(0, _UINT16_MAX)
    return rounded.to(torch.int32).cpu().numpy().astype(np.uint16)


def _affine(normalizer: Any, source: str) -> tuple[float, float]:
    """(span, low) of a one-channel target normaliser: raw = y·span + low.

    Derived from the normaliser's documented ``scale``/``offset`` (forward = x·scale + offset),
    so any normaliser with that contract works.
    """
    scale = np.ravel(np.asarray(normalizer.scale, dtype=np.float64))
    offset = np.ravel(np.asarray(normalizer.offset, dtype=np.float64))
    if scale.size != 1 or offset.size != 1 or scale[0] == 0:
        raise BundleError(f"{source}: target normaliser must be one channel with a non-zero scale")
    return float(1.0 / scale[0]), float(-offset[0] / scale[0])


@dataclass
class _StainGroup:
    """Bundles that share a magnification and an input normaliser: one engine, one pass."""

    magnification: str
    bundles: list[ModelBundle]
    targets: list[str]
    input_normalizer: Any
    target_affine: dict[str, tuple[float, float]]
    engine: FieldEngine
    #: targets whose bundle carries an intensity map (and the predictor applies it)
    intensity_maps: dict[str, IntensityMap] = dataclass_field(default_factory=dict)


class Predictor:
    """Virtual stainer built from model bundles.

    Parameters
    ----------
    models
        Bundles (:class:`ModelBundle`) or paths to ``.safetensors`` files / folders of them. Any
        subset of the stains, one bundle per stain or a multi-output bundle; bundles for several
        magnifications may be mixed (each field uses those of its magnification).
    device
        ``"cpu"``, ``"cuda"`` or ``"cuda:N"``. Under ``torchrun``, ``"cuda"`` means the rank's
        local GPU.
    mode, tile_size, overlap
        Tiling (see :class:`~vstain.inference.tiler.Tiler`): ``"whole"`` (default), ``"tiles"``
        or ``"reference"``.
    margin
        Pixels of brightfield reflected around every side of a field as context for its edges
        (None: :data:`~vstain.inference.tiler.DEFAULT_MARGIN` in the ``whole`` and ``tiles`` modes, 0 in
        ``reference``, the reference's scheme; 0: none, as before 2026-12-04).
    precision, channels_last, compile
        Speed settings (``"fp32"`` / ``"bf16"``).
    tta
        1 or 8 (dihedral test-time augmentation, averaged); None (default): what each bundle chose on its
        validation fields (its ``tta``, ``validation.tta`` in training), 1 for bundles that say nothing.
    uncertainty
        With ``tta=8``, also produce the per-pixel standard deviation over the transforms.
    batch_size
        Tiles per network call (tiled modes).
    intensity_map
        Apply the intensity maps bundles carry (``validation.intensity_map``, src/vstain/inference/intensity_map.py)
        to each TTA variant before averaging (the T variants of a field are then held in memory as
        float64: 350 MB per stain for a full 20x field at TTA 8); False gives the networks' raw levels.
    """

    def __init__(
        self,
        models: Sequence[ModelBundle | str | os.PathLike[str]],
        *,
        device: str = "cpu",
        mode: str = "whole",
        precision: str = "fp32",
        channels_last: bool = False,
        compile: bool = False,
        tta: int | None = None,
        uncertainty: bool = False,
        batch_size: int = 4,
        tile_size: int | None = None,
        overlap: int | None = None,
        margin: int | None = None,
        frame: str = "brightfield",
        offsets: str | os.PathLike[str] | None = None,
        intensity_map: bool = True,
    ) -> None:
        if frame not in FRAMES:
            raise VstainError(f"unknown frame {frame!r}; choose one of {', '.join(FRAMES)}")
        if offsets is not None and frame != "fluorescence":
            raise VstainError("`offsets` apply to predictions in the fluorescence frame only (`frame` fluorescence)")
        if mode not in MODES:
            raise VstainError(f"unknown mode {mode!r}; choose one of {', '.join(MODES)}")
        if tta is not None and (isinstance(tta, bool) or tta not in TTA_CHOICES):
            raise VstainError(f"`tta` must be one of {', '.join(map(str, TTA_CHOICES))} or None, got {tta!r}")
        if uncertainty and tta != DIHEDRAL:
            raise VstainError(f"an uncertainty map needs test-time augmentation (--tta {DIHEDRAL})")
        self.rank = rank_info()
        self.device = self._resolve_device(device, self.rank)
        self.mode = mode
        self.uncertainty = uncertainty
        self.intensity_map = intensity_map
        self.tta = tta
        self._engine_options = dict(
            precision=precision, channels_last=channels_last, compile=compile, batch_size=batch_size
        )
        self._tiler_options = dict(tile_size=tile_size, overlap=overlap, margin=margin)
        try:  # the tiler checks its own options (tile size, overlap, margin); a bad one is a one-line error here
            Tiler(mode, **self._tiler_options)  # type: ignore[arg-type]
        except ValueError as exc:
            raise VstainError(str(exc)) from None
        # Everything but the device and the bundles: what a Dask worker needs to build the same predictor.
        self._options: dict[str, Any] = dict(
            mode=mode, uncertainty=uncertainty, tile_size=tile_size, overlap=overlap, margin=margin,
            intensity_map=intensity_map,
            tta=tta, **self._engine_options
        )
        bundles = self._load(models)
        self.bundles = bundles
        self.groups = self._group(bundles)
        self.frame = frame
        self.offsets_source = str(offsets) if offsets is not None else None
        self._offsets = self._site_offsets(offsets) if frame == "fluorescence" else {}

    def _site_offsets(self, offsets: str | os.PathLike[str] | None) -> dict[tuple[str, str], Any]:
        """``(magnification, target) -> SiteOffsets`` the fluorescence frame uses: the file's, else the bundles'."""
        from vstain.alignment.offsets import OffsetTable, SiteOffsets

        table = OffsetTable.load(offsets) if offsets is not None else None
        found: dict[tuple[str, str], Any] = {}
        for bundle in self.bundles:
            if table is not None:
                sites = SiteOffsets.from_table(table, bundle.magnification, source=str(offsets))
            elif bundle.metadata.alignment is not None:
                sites = SiteOffsets.from_dict(bundle.metadata.alignment)
            else:
                raise BundleError(
                    f"{bundle.path or bundle.name}: trained without alignment, so it carries no offsets for "
                    "the fluorescence frame; give an offsets file (`offsets`, from vstain align)"
                )
            for target in bundle.targets:
                found[(bundle.magnification, target)] = sites
        return found

    def _check_offsets(self, fields: Sequence[Any]) -> None:
        """Refuse, in one line, offsets that lack a site or stain of the fields to predict."""
        for (magnification, target), sites in self._offsets.items():
            numbers = [f.field for f in fields if f.magnification == magnification]
            if numbers:
                sites.check_covers(magnification, numbers, [target],
                                   source=self.offsets_source or f"the {target} model's offsets")

    def _to_frame(self, field: Any, images: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """Predictions (brightfield frame) moved into the stains' frame when ``frame`` is fluorescence."""
        if self.frame != "fluorescence":
            return images
        from vstain.alignment.resample import to_fluorescence_frame

        moved = {}
        for key, image in images.items():
            target = key.split(":")[0]
            offset = self._offsets[(field.magnification, target)].offset(target, field.field)
            shifted = to_fluorescence_frame(image, offset)
            moved[key] = np.clip(np.rint(shifted), 0, np.iinfo(image.dtype).max).astype(image.dtype) \
                if image.dtype.kind in "ui" else shifted.astype(image.dtype)
        return moved

    # ------------------------------------------------------------------ set-up
    @staticmethod
    def _resolve_device(device: str, rank: RankInfo) -> torch.device:
        resolved = torch.device(device)
        if resolved.type == "cuda":
            if not torch.cuda.is_available():
                raise VstainError("--device cuda asked for but no CUDA device is available; use --device cpu")
            if resolved.index is None and rank.world_size > 1:
                resolved = torch.device("cuda", rank.local_rank)
        return resolved

    @staticmethod
    def _load(models: Sequence[ModelBundle | str | os.PathLike[str]]) -> list[ModelBundle]:
        if isinstance(models, (str, os.PathLike, ModelBundle)):
            models = [models]  # type: ignore[list-item]
        bundles: list[ModelBundle] = []
        paths: list[str | os.PathLike[str]] = []
        for item in models:
            if isinstance(item, ModelBundle):
                bundles.append(item)
            else:
                paths.append(item)
        bundles.extend(load_model(path, planes=N_PLANES) for path in find_bundles(paths))
        if not bundles:
            raise BundleError("no model bundles given")
        for bundle in bundles:
            bundle.check_compatible(planes=N_PLANES)
        return bundles

    def _group(self, bundles: list[ModelBundle]) -> dict[str, list[_StainGroup]]:
        by_mag: dict[str, list[ModelBundle]] = {}
        for bundle in bundles:
            by_mag.setdefault(bundle.magnification, []).append(bundle)
        groups: dict[str, list[_StainGroup]] = {}
        for mag, members in by_mag.items():
            seen: dict[str, str] = {}
            for bundle in members:
                for target in bundle.targets:
                    if target in seen:
                        raise BundleError(
                            f"two {mag} models predict {target}: {seen[target]} and {bundle.name}; give one"
                        )
                    seen[target] = bundle.name
            # One pass per input normaliser and TTA setting: bundles that chose differently run apart.
            passes: dict[tuple[str, int], list[ModelBundle]] = {}
            for bundle in members:
                key = (json.dumps(bundle.metadata.normalization["input"], sort_keys=True), self._tta_for(bundle))
                passes.setdefault(key, []).append(bundle)
            groups[mag] = [self._make_group(mag, same, tta) for (_, tta), same in passes.items()]
        return groups

    def _tta_for(self, bundle: ModelBundle) -> int:
        """The TTA a bundle's stains get: the predictor's, else the bundle's own choice, else none."""
        if self.tta is not None:
            return self.tta
        return bundle.metadata.tta or 1

    def _make_group(self, magnification: str, bundles: list[ModelBundle], tta: int) -> _StainGroup:
        targets = [t for b in bundles for t in b.targets]
        affine = {
            t: _affine(b.target_normalizer(t), f"{b.name}: normalization.targets.{t}")
            for b in bundles
            for t in b.targets
        }
        network = StainNetworks(
            [b.model for b in bundles], output_indices=[b.metadata.output_index for b in bundles]
        )
        engine = FieldEngine(
            network,
            device=self.device,
            tiler=Tiler(self.mode, **self._tiler_options),  # type: ignore[arg-type]
            tta=tta,
            **self._engine_options,  # type: ignore[arg-type]
        )
        input_normalizer = bundles[0].input_normalizer()
        channels = np.ravel(np.asarray(input_normalizer.scale)).size
        if channels != N_PLANES:
            raise BundleError(
                f"{bundles[0].name}: input normaliser has {channels} channels, expected {N_PLANES} planes"
            )
        maps = {}
        if self.intensity_map:
            for b in bundles:
                for t, stored in (b.metadata.intensity_map or {}).items():
                    maps[t] = IntensityMap.from_dict(stored, source=f"{b.name}: intensity_map.{t}")
        return _StainGroup(magnification, bundles, targets, input_normalizer, affine, engine, maps)

    @property
    def magnifications(self) -> list[str]:
        return sorted(self.groups)

    def targets(self, magnification: str) -> list[str]:
        """Stains predicted for fields of ``magnification``, in nuclei/lipids/cytoplasm order."""
        found = {t for group in self.groups.get(magnification, []) for t in group.targets}
        return [t for t in TARGETS if t in found]

    def settings(self) -> dict[str, Any]:
        """JSON-ready settings of the first engine plus the run's extras.

        The engines share every setting but ``tta``, which bundles may choose apart: it is one number
        when all stains get the same, else ``{magnification: {target: tta}}``.
        """
        engine = next(iter(self.groups.values()))[0].engine
        per_target = {mag: {t: g.engine.tta for g in groups for t in g.targets} for mag, groups in self.groups.items()}
        used = {tta for targets in per_target.values() for tta in targets.values()}
        return {**engine.settings(), "tta": used.pop() if len(used) == 1 else per_target,
                "mode": self.mode, "uncertainty": self.uncertainty, "frame": self.frame,
                "offsets": self.offsets_source, "intensity_map": self.intensity_map}

    def provenance(self, magnification: str, target: str) -> dict[str, Any]:
        """What makes the ``target`` outputs of ``magnification`` fields: bundle and settings.

        Recorded in every output TIFF; a resumed run compares it with the existing files.
        Only settings that change the prediction by design are included (tiling, precision,
        TTA), not speed settings whose effect is at most rounding.
        """
        for group in self._groups_for(magnification):
            for bundle in group.bundles:
                if target in bundle.targets:
                    settings = group.engine.settings()
                    return {
                        "model": {"name": str(bundle.path or bundle.name), "sha256": bundle.content_hash()},
                        "settings": {"tiler": settings["tiler"], "precision": settings["precision"],
                                     "tta": settings["tta"],
                                     **({"intensity_map": False} if not self.intensity_map
                                        and bundle.metadata.intensity_map else {}),
                                     # only when not the default, so older outputs still match
                                     **({"frame": self.frame} if self.frame != "brightfield" else {})},
                    }
        raise BundleError(f"no {magnification} model predicts {target}")

    def bundles_for(self, magnification: str | None = None) -> list[ModelBundle]:
        """The model bundles that predict ``magnification`` fields (needed only with several magnifications)."""
        return [bundle for group in self._groups_for(magnification) for bundle in group.bundles]

    def _groups_for(self, magnification: str | None) -> list[_StainGroup]:
        if magnification is None:
            if len(self.groups) != 1:
                raise VstainError(
                    f"models for several magnifications ({', '.join(self.magnifications)}); say which one"
                )
            magnification = next(iter(self.groups))
        if magnification not in self.groups:
            raise BundleError(
                f"no model for {magnification} fields (models are for {', '.join(self.magnifications)})"
            )
        return self.groups[magnification]

    # ------------------------------------------------------------------ one field
    def _normalise(self, brightfield: np.ndarray, groups: list[_StainGroup]) -> list[torch.Tensor]:
        if brightfield.ndim != 3 or brightfield.shape[0] != N_PLANES:
            raise VstainError(f"expected a ({N_PLANES}, H, W) brightfield stack, got shape {brightfield.shape}")
        stack = brightfield.astype(np.float32, copy=False)
        prepared = []
        for group in groups:
            normalised = np.asarray(group.input_normalizer.forward(stack), dtype=np.float32)
            tensor = torch.from_numpy(np.ascontiguousarray(normalised))
            prepared.append(tensor.pin_memory() if self.device.type == "cuda" else tensor)
        return prepared

    def _infer(
        self, prepared: list[torch.Tensor], groups: list[_StainGroup]
    ) -> tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        images: dict[str, np.ndarray] = {}
        spreads: dict[str, np.ndarray] = {}
        for tensor, group in zip(prepared, groups):
            if group.intensity_maps:
                # The map is not linear, so it applies to each TTA variant, and the image is the
                # mean of the mapped variants (what predict_variants returns, averaged).
                mapped = self._variants_in_counts(tensor, group)
                for target, values in mapped.items():
                    images[target] = to_uint16(torch.from_numpy(values.mean(axis=0)))
                    if self.uncertainty:
                        spreads[target] = to_uint16(torch.from_numpy(values.std(axis=0)))
                continue
            mean, std = group.engine(tensor, spread=self.uncertainty)
            for channel, target in enumerate(group.targets):
                span, low = group.target_affine[target]
                # float64, as Normalizer.inverse: rounding at .5 then agrees with it exactly
                images[target] = to_uint16(mean[channel].double() * span + low)
                if std is not None:
                    spreads[target] = to_uint16(std[channel].double() * abs(span))
        order = [t for t in TARGETS if t in images]
        return {t: images[t] for t in order}, {t: spreads[t] for t in order if t in spreads}

    def predict_field(
        self,
        brightfield: np.ndarray,
        *,
        magnification: str | None = None,
        return_uncertainty: bool = False,
    ) -> dict[str, np.ndarray] | tuple[dict[str, np.ndarray], dict[str, np.ndarray]]:
        """Predict every stain of one field.

        Parameters
        ----------
        brightfield
            ``(7, H, W)`` stack as stored (uint16; any numeric dtype is accepted).
        magnification
            Needed only when the predictor holds models for several magnifications.
        return_uncertainty
            Also return the TTA standard deviation maps (needs ``uncertainty=True``).

        Returns
        -------
        dict or (dict, dict)
            ``{target: uint16 (H, W)}`` and, if asked, ``{target: uint16 (H, W)}`` spreads.
        """
        if return_uncertainty and not self.uncertainty:
            raise VstainError("create the Predictor with tta=8, uncertainty=True to get uncertainty maps")
        groups = self._groups_for(magnification)
        images, spreads = self._infer(self._normalise(np.asarray(brightfield), groups), groups)
        return (images, spreads) if return_uncertainty else images

    def predict_variants(self, brightfield: np.ndarray, *, magnification: str | None = None) -> dict[str, np.ndarray]:
        """Every TTA transform's prediction of one field, in the stain's units (not rounded).

        Parameters
        ----------
        brightfield
            ``(7, H, W)`` stack as stored (any numeric dtype).
        magnification
            Needed only when the predictor holds models for several magnifications.

        Returns
        -------
        dict
            ``{target: float64 (T, H, W)}``, T = the predictor's ``tta``, in the brightfield frame.
            Their mean, rounded, is :meth:`predict_field`'s image; their population standard
            deviation is its uncertainty map (up to float rounding). Used by conformal calibration
            (src/vstain/uncertainty/), which measures each variant.
        """
        groups = self._groups_for(magnification)
        out: dict[str, np.ndarray] = {}
        for tensor, group in zip(self._normalise(np.asarray(brightfield), groups), groups):
            out.update(self._variants_in_counts(tensor, group))
        return {t: out[t] for t in TARGETS if t in out}

    @staticmethod
    def _variants_in_counts(tensor: torch.Tensor, group: _StainGroup) -> dict[str, np.ndarray]:
        """``{target: float64 (T, H, W)}``: each TTA variant in counts, through the target's intensity map if any."""
        stack = group.engine.variants(tensor).double()
        out = {}
        for channel, target in enumerate(group.targets):
            span, low = group.target_affine[target]
            values = (stack[:, channel] * span + low).numpy()
            mapping = group.intensity_maps.get(target)
            out[target] = mapping(values) if mapping is not None else values
        return out

    # ------------------------------------------------------------------ a plate
    def descriptions(self, magnification: str) -> dict[str, str]:
        """ImageDescription text of each output kind (``target`` or ``target:uncertainty``).

        It is the provenance a resumed run checks, for every TIFF written from this predictor's
        ``magnification`` models.
        """
        out = {}
        for target in self.targets(magnification):
            text = json.dumps({PROVENANCE_KEY: self.provenance(magnification, target)}, sort_keys=True)
            out[target] = out[f"{target}:uncertainty"] = text
        return out

    def _output_paths(self, field: Any, folder: Path) -> dict[str, Path]:
        paths = {t: folder / field.target_filename(t) for t in self.targets(field.magnification)}
        if self.uncertainty:
            paths.update({f"{t}:uncertainty": folder / UNCERTAINTY_DIR / field.target_filename(t)
                          for t in self.targets(field.magnification)})
        return paths

    def predict_plate(
        self,
        plate_dir: str | os.PathLike[str],
        output_dir: str | os.PathLike[str],
        *,
        magnification: str | None = None,
        overwrite: bool = False,
        skip_bad_fields: bool = False,
        progress: bool = True,
        rank: RankInfo | None = None,
        cluster: "ClusterOptions | Client | None" = None,
        announce: Callable[[str], None] | None = None,
    ) -> dict[str, Any]:
        """Predict every field of a plate into ``output_dir`` (see the module docstring).

        Parameters
        ----------
        plate_dir
            Plate folder (``<mag>_images`` layout or flat; only brightfield is needed).
        output_dir
            Where the TIFFs and ``predictions.json`` go (created).
        magnification
            Restrict to one magnification; required for a flat folder.
        overwrite
            Recompute fields whose outputs exist (default: skip them, if the same models and
            settings wrote them; other models' outputs are refused).
        skip_bad_fields
            Predict the good fields of a plate where some fields' brightfield is missing or
            unreadable, listing those in the manifest's ``bad_fields`` (default: refuse, naming
            the first bad file).
        progress
            Show a progress bar (fields/s) on stderr.
        rank
            This worker's share of the fields (default: from the ``torchrun`` environment).
        cluster
            Predict on the CPU workers of a Dask cluster (:class:`~vstain.plate.jobs.ClusterOptions`,
            or an open ``distributed.Client``) instead of in this process; bundles must be files
            the workers can read. Not with a GPU or under ``torchrun``.
        announce
            Receives one line naming the cluster (and its dashboard address) when one is started.

        Returns
        -------
        dict
            The manifest written to ``predictions.json`` (this rank's part under torchrun).
        """
        from tqdm.auto import tqdm

        from vstain.atomic import remove_stale_parts
        from vstain.plate.index import index_plate

        started = time.perf_counter()
        rank = rank or self.rank
        if cluster is not None:
            self._check_cluster_use(rank)
            # Workers may run in other folders (or on other machines): give them absolute paths.
            plate_dir, output_dir = os.path.abspath(plate_dir), os.path.abspath(output_dir)
        index = index_plate(plate_dir, magnification=magnification)
        fields = index.fields
        if not fields:
            index.raise_for_errors()
            raise PlateError(f"{plate_dir}: no fields with 7 brightfield planes")
        plate_mags = sorted({f.magnification for f in fields})
        missing = [m for m in plate_mags if m not in self.groups]
        if missing:
            raise BundleError(
                f"{plate_dir}: holds {', '.join(missing)} fields but the models are for "
                f"{', '.join(self.magnifications)}; pass --magnification {self.magnifications[0]} or add models"
            )
        output = Path(output_dir)
        zarr_output = output.name.endswith(".zarr")
        folders = {m: output / f"{m}_images" if len(plate_mags) > 1 and not zarr_output else output
                   for m in plate_mags}
        inputs = {f.brightfield[0].parent.resolve() for f in fields}
        if any(folder.resolve() in inputs for folder in folders.values()):
            raise PlateError(
                f"{output}: is the plate's image folder; predictions would mix with (or be mistaken "
                "for) the measured stains - choose another --output"
            )
        self._check_offsets(fields)
        bad_fields = _bad_fields(index, plate_dir, skip_bad_fields, len(fields))
        unusable = len(bad_fields)  # found by the index; unreadable pixel data is found when read
        _prepare_folders([output, *folders.values()] + ([f / UNCERTAINTY_DIR for f in folders.values()]
                                                        if self.uncertainty and not zarr_output else []))

        mine = shard(fields, rank.rank, rank.world_size)
        remove_stale_parts(output, [_manifest_name(rank)])
        if rank.world_size > 1:  # this rank changes the folder: its old part and the merge no longer describe it
            for stale in (_manifest_name(rank), MANIFEST_NAME):
                (output / stale).unlink(missing_ok=True)
        descriptions = {m: self.descriptions(m) for m in plate_mags}
        if zarr_output:
            zarr_plate = self._prepare_zarr(output, fields, mine, overwrite)
            done = [f for f in mine if zarr_plate.done(f)]
        else:
            planned = {f.key: self._output_paths(f, folders[f.magnification]) for f in mine}
            # Temporaries a killed run left (kill -9 skips clean-up); only this rank's own names.
            for folder in {p.parent for paths in planned.values() for p in paths.values()}:
                remove_stale_parts(folder, [p.name for paths in planned.values() for p in paths.values()])
            done = [f for f in mine if not overwrite and all(p.is_file() for p in planned[f.key].values())]
            if done:
                self._check_provenance(done, planned, output)
        done_keys = {f.key for f in done}
        todo = [f for f in mine if f.key not in done_keys]
        skipped = len(mine) - len(todo)

        timings: dict[str, list[float]] = {"read": [], "compute": [], "write": []}

        def read(field: Any) -> tuple[list[torch.Tensor], float]:
            t0 = time.perf_counter()
            prepared = self._normalise(field.read_brightfield(), self._groups_for(field.magnification))
            return prepared, time.perf_counter() - t0

        def write(field: Any, images: dict[str, np.ndarray], spreads: dict[str, np.ndarray]) -> float:
            t0 = time.perf_counter()
            images, spreads = self._to_frame(field, images), self._to_frame(field, spreads)
            if zarr_output:
                zarr_plate.write(field, images, spreads)
                return time.perf_counter() - t0
            _write_tiffs(planned[field.key], descriptions[field.magnification], images, spreads)
            return time.perf_counter() - t0

        on_cluster = None
        if cluster is not None and todo:
            on_cluster = self._predict_on_cluster(
                todo, cluster, output=output, folders=folders, zarr_plate=zarr_plate if zarr_output else None,
                skip_bad_fields=skip_bad_fields, progress=progress, announce=announce, timings=timings,
                bad_fields=bad_fields)
        here = todo if cluster is None else []  # the fields this process reads, predicts and writes itself

        bar = tqdm(total=len(here), unit="field", desc="predict", disable=not progress or not here, file=sys.stderr)
        with ThreadPoolExecutor(max_workers=1, thread_name_prefix="vstain-read") as reader, \
                ThreadPoolExecutor(max_workers=1, thread_name_prefix="vstain-write") as writer:
            pending_read: Future | None = reader.submit(read, here[0]) if here else None
            pending_write: Future | None = None
            for i, field in enumerate(here):
                assert pending_read is not None
                try:
                    prepared, read_s = pending_read.result()
                except PlateError as exc:  # header fine, pixel data not (e.g. a truncated file)
                    if not skip_bad_fields:
                        raise PlateError(f"{exc}; fix the field, or pass --skip-bad-fields to predict "
                                         "the others") from None
                    bad_fields.append({"field": field.label, "problem": str(exc)})
                    pending_read = reader.submit(read, here[i + 1]) if i + 1 < len(here) else None
                    bar.update(1)
                    continue
                timings["read"].append(read_s)
                # Stream: the next field is read (and normalised) while this one is computed.
                pending_read = reader.submit(read, here[i + 1]) if i + 1 < len(here) else None
                t0 = time.perf_counter()
                images, spreads = self._infer(prepared, self._groups_for(field.magnification))
                timings["compute"].append(time.perf_counter() - t0)
                if pending_write is not None:
                    timings["write"].append(pending_write.result())
                pending_write = writer.submit(write, field, images, spreads)
                bar.update(1)
            if pending_write is not None:
                timings["write"].append(pending_write.result())
        bar.close()

        elapsed = time.perf_counter() - started
        manifest = self._manifest(plate_dir, output, fields=len(fields), mine=len(mine),
                                  done=len(todo) - len(bad_fields) + unusable,
                                  skipped=skipped, elapsed=elapsed, timings=timings, rank=rank,
                                  issues=[str(i) for i in index.issues], bad_fields=bad_fields)
        if on_cluster is not None:
            manifest["cluster"] = on_cluster.where
            manifest["oom_fallbacks"] = list(dict.fromkeys(manifest["oom_fallbacks"] + on_cluster.fallbacks))
        _write_manifest(output, manifest, rank)
        return manifest

    def _check_cluster_use(self, rank: RankInfo) -> None:
        """Refuse (one line) a cluster together with a GPU or ``torchrun``, or bundles that are not files."""
        check_cluster_use(self.device, rank)
        if self.frame != "brightfield":
            # Workers rebuild the predictor from the bundles and settings only, not the offsets.
            raise ConfigError("`frame` fluorescence is not available on Dask workers (`workers`, `scheduler`, "
                              "`cluster`) yet; predict in the brightfield frame there, or without workers")
        for bundle in self.bundles:
            if bundle.path is None:
                raise BundleError(f"{bundle.name}: a bundle built in memory cannot be sent to Dask workers; "
                                  "save it with save_bundle and pass its file")

    def _recipe(self) -> "_Recipe":
        """What a worker needs to build this predictor: the bundles' files and SHA-256, the settings."""
        files = tuple((str(Path(b.path).resolve()), b.content_hash()) for b in self.bundles if b.path is not None)
        return _Recipe(bundles=files, options=tuple(sorted(self._options.items(), key=lambda kv: kv[0])))

    def _predict_on_cluster(
        self,
        todo: list[Any],
        cluster: "ClusterOptions | Client",
        *,
        output: Path,
        folders: Mapping[str, Path],
        zarr_plate: "_ZarrOutput | None",
        skip_bad_fields: bool,
        progress: bool,
        announce: Callable[[str], None] | None,
        timings: dict[str, list[float]],
        bad_fields: list[dict[str, str]],
    ) -> "_ClusterRun":
        """Read, predict and write ``todo`` on the cluster's workers; times and bad fields land here.

        Each task carries the field's location and where its outputs go, with the exact
        descriptions (provenance) this process would write, so the files are the same bytes.
        """
        from vstain.plate.jobs import ClusterOptions, map_fields, open_client

        recipe = self._recipe()
        jobs = []
        for field in todo:
            mag = field.magnification
            if zarr_plate is not None:
                jobs.append(_FieldJob(field=field, zarr_path=str(output / zarr_plate.layout.paths[field.key]),
                                      zarr_image=zarr_plate.layout.image(field.key),
                                      record={PROVENANCE_KEY: zarr_plate.provenance(field)}))
            else:
                paths = {kind: str(path) for kind, path in self._output_paths(field, folders[mag]).items()}
                jobs.append(_FieldJob(field=field, paths=paths, descriptions=self.descriptions(mag)))
        fallbacks: list[str] = []
        found_bad: dict[Any, dict[str, str]] = {}

        def keep(job: _FieldJob, result: dict[str, Any]) -> None:
            if "problem" in result:  # header fine, pixel data not (e.g. a truncated file)
                if not skip_bad_fields:
                    raise PlateError(f"{result['problem']}; fix the field, or pass --skip-bad-fields to predict "
                                     "the others")
                found_bad[job.field.key] = {"field": job.field.label, "problem": result["problem"]}
                return
            for step in ("read", "compute", "write"):
                timings[step].append(result[f"{step}_s"])
            fallbacks.extend(result["fallbacks"])

        lines: list[str] = []

        def hear(line: str) -> None:
            lines.append(line)
            if announce is not None:
                announce(line)

        try:
            if isinstance(cluster, ClusterOptions):
                with open_client(cluster, announce=hear) as client:
                    map_fields(client, _predict_field_job, jobs, label=lambda job: job.field.label, on_result=keep,
                               arguments=(recipe,), progress=progress, desc="predict")
            else:
                hear(f"Dask cluster at {cluster.scheduler.address}")
                map_fields(cluster, _predict_field_job, jobs, label=lambda job: job.field.label, on_result=keep,
                           arguments=(recipe,), progress=progress, desc="predict")
        finally:  # in the plate's order, as the one-process path lists them
            bad_fields.extend(found_bad[f.key] for f in todo if f.key in found_bad)
        return _ClusterRun(where=lines[0] if lines else "Dask cluster", fallbacks=list(dict.fromkeys(fallbacks)))

    def _prepare_zarr(self, output: Path, fields: list[Any], mine: list[Any], overwrite: bool) -> "_ZarrOutput":
        """Create (or reopen) the prediction plate: every rank writes the same plate and wells, its own fields."""
        from vstain.plate.omezarr import create_plate, prediction_layout, remove_stale_parts

        layout = prediction_layout(fields, {m: self.targets(m) for m in self.magnifications},
                                   uncertainty=self.uncertainty)
        create_plate(output, layout, images=[f.key for f in mine])
        for field in mine:  # temporaries of chunk writes a killed run left, in this rank's images only
            remove_stale_parts(output / layout.paths[field.key])
        return _ZarrOutput(self, output, layout, overwrite)

    def _check_provenance(self, done: list[Any], planned: Mapping[Any, Mapping[str, Path]], output: Path) -> None:
        """Refuse (one line) if an output that would be kept was made by other models or settings."""
        from vstain.plate.tiff import tiff_description

        for field in done:
            for kind, path in planned[field.key].items():
                target = kind.split(":")[0]
                expected = self.provenance(field.magnification, target)
                problem = _provenance_difference(tiff_description(path), expected, target)
                if problem:
                    raise PlateError(
                        f"{path}: {problem}; outputs of different runs would mix in {output} - "
                        "rerun with --overwrite to recompute every field, or choose another --output"
                    )

    def _manifest(self, plate_dir: Any, output: Path, *, fields: int, mine: int, done: int, skipped: int,
                  elapsed: float, timings: Mapping[str, list[float]], rank: RankInfo,
                  issues: list[str], bad_fields: list[dict[str, str]]) -> dict[str, Any]:
        from vstain import __version__

        def stats(values: list[float]) -> dict[str, float]:
            return {"total_s": float(np.sum(values)) if values else 0.0,
                    "mean_s": float(np.mean(values)) if values else 0.0}

        fallbacks = [step for groups in self.groups.values() for g in groups for step in g.engine.fallbacks]
        return {
            "vstain_version": __version__,
            "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()),
            "plate": str(plate_dir),
            "output": str(output),
            "models": [b.summary() for b in self.bundles],
            "targets": {m: self.targets(m) for m in self.magnifications},
            "settings": self.settings(),
            "rank": rank.rank,
            "world_size": rank.world_size,
            "fields": {"plate": fields, "this_rank": mine, "predicted": done, "skipped_existing": skipped,
                       "skipped_bad": len(bad_fields)},
            "timings": {
                "wall_s": elapsed,
                "fields_per_s": done / elapsed if elapsed > 0 and done else 0.0,
                **{name: stats(values) for name, values in timings.items()},
            },
            "oom_fallbacks": fallbacks,
            "bad_fields": bad_fields,
            "plate_issues": issues[:50],
        }


class _ZarrOutput:
    """Predictions written into an OME-Zarr HCS plate: one image per field, a chunk per plane.

    Each field image records, in its ``vstain`` attributes, the provenance of every stain (model
    SHA-256 and settings); a field counts as done when it is complete and was made as this run
    would make it, and a complete field made otherwise stops the run (as TIFF outputs do).
    """

    def __init__(self, predictor: Predictor, output: Path, layout: Any, overwrite: bool) -> None:
        self.predictor, self.output, self.layout, self.overwrite = predictor, output, layout, overwrite

    def provenance(self, field: Any) -> dict[str, Any]:
        """The provenance of each stain of ``field``, as stored in its image's attributes."""
        mag = field.magnification
        return {t: self.predictor.provenance(mag, t) for t in self.predictor.targets(mag)}

    def done(self, field: Any) -> bool:
        from vstain.plate.omezarr import field_record

        record = field_record(self.output, self.layout, field.key)
        if record is None or self.overwrite:
            return False
        stored = (record.get("record") or {}).get(PROVENANCE_KEY) or {}
        for target, expected in self.provenance(field).items():
            text = json.dumps({PROVENANCE_KEY: stored[target]}) if target in stored else None
            problem = _provenance_difference(text, expected, target)
            if problem:
                path = self.output / self.layout.paths[field.key]
                raise PlateError(
                    f"{path}: {problem}; outputs of different runs would mix in {self.output} - "
                    "rerun with --overwrite to recompute every field, or choose another --output"
                )
        return True

    def write(self, field: Any, images: Mapping[str, np.ndarray], spreads: Mapping[str, np.ndarray]) -> None:
        from vstain.plate.omezarr import write_field

        write_field(self.output, self.layout, field.key, _zarr_planes(images, spreads),
                    record={PROVENANCE_KEY: self.provenance(field)})


def _zarr_planes(images: Mapping[str, np.ndarray], spreads: Mapping[str, np.ndarray]) -> list[tuple[str, np.ndarray]]:
    """A field's predictions as (channel label, plane) pairs of the prediction plate."""
    from vstain.plate.omezarr import UNCERTAINTY_SUFFIX, channel_name_of

    planes = [(channel_name_of(t), image) for t, image in images.items()]
    return planes + [(channel_name_of(t) + UNCERTAINTY_SUFFIX, image) for t, image in spreads.items()]


def _write_tiffs(paths: Mapping[str, str | Path], descriptions: Mapping[str, str],
                 images: Mapping[str, np.ndarray], spreads: Mapping[str, np.ndarray]) -> None:
    """A field's predictions (and uncertainty maps) as TIFFs, each written atomically."""
    from vstain.plate.tiff import write_tiff

    for target, image in images.items():
        write_tiff(paths[target], image, description=descriptions[target])
    for target, image in spreads.items():
        key = f"{target}:uncertainty"
        write_tiff(paths[key], image, description=descriptions[key])


# ---------------------------------------------------------------------- on a Dask cluster
def check_cluster_use(device: str | torch.device, rank: RankInfo) -> None:
    """Refuse, in one line, Dask workers together with a GPU or ``torchrun`` (GPUs stay on torchrun).

    Raises
    ------
    ConfigError
        If ``device`` is not the CPU, or this process is one rank of several.
    """
    if torch.device(device).type != "cpu":
        raise ConfigError(f"`device` {device}: Dask workers (`workers`, `scheduler`, `cluster`) predict on CPUs; "
                          "for GPUs run without them (torchrun shards the fields over GPUs)")
    if rank.world_size > 1:
        raise ConfigError(f"this is rank {rank.rank} of {rank.world_size} under torchrun, which shards the fields "
                          "itself; run either torchrun or Dask workers (`workers`, `scheduler`, `cluster`), not both")


@dataclass(frozen=True)
class _Recipe:
    """How a worker builds the run's predictor: bundle files with their SHA-256, and the settings."""

    bundles: tuple[tuple[str, str], ...]
    options: tuple[tuple[str, Any], ...]


@dataclass(frozen=True)
class _FieldJob:
    """One field for a worker: where its brightfield is and where (and how described) its outputs go."""

    field: Any
    paths: Mapping[str, str] | None = None
    descriptions: Mapping[str, str] | None = None
    zarr_path: str | None = None
    zarr_image: Any = None
    record: Mapping[str, Any] | None = None


@dataclass(frozen=True)
class _ClusterRun:
    where: str
    fallbacks: list[str]


def _worker_predictor(recipe: _Recipe) -> Predictor:
    """The run's predictor, built from the bundle files; refuses a file changed since the run began."""
    predictor = Predictor([path for path, _ in recipe.bundles], device="cpu", **dict(recipe.options))
    for bundle, (path, expected) in zip(predictor.bundles, recipe.bundles):
        if bundle.content_hash() != expected:
            raise BundleError(f"{path}: changed since this run started (sha256 {bundle.content_hash()[:12]}, "
                              f"the run uses {expected[:12]}); rerun predict")
    return predictor


def _predict_field_job(job: _FieldJob, recipe: _Recipe) -> dict[str, Any]:
    """Read, predict and write one field on a Dask worker (bundles loaded once per worker).

    Returns the step times and the engine's fallbacks, or ``{"problem": ...}`` for a field whose
    pixel data cannot be read (the caller decides, as for the one-process path).
    """
    from vstain.plate.jobs import field_threads, worker_cached

    torch.set_num_threads(field_threads())  # the nanny set 1; a field has the worker's threads
    predictor = worker_cached(("vstain.predictor", recipe), lambda: _worker_predictor(recipe))
    field = job.field
    groups = predictor._groups_for(field.magnification)
    t0 = time.perf_counter()
    try:
        prepared = predictor._normalise(field.read_brightfield(), groups)
    except PlateError as exc:
        return {"problem": str(exc)}
    t1 = time.perf_counter()
    images, spreads = predictor._infer(prepared, groups)
    t2 = time.perf_counter()
    if job.zarr_path is not None:
        from vstain.plate.omezarr import write_image

        write_image(job.zarr_path, job.zarr_image, _zarr_planes(images, spreads), record=job.record)
    else:
        assert job.paths is not None and job.descriptions is not None
        _write_tiffs(job.paths, job.descriptions, images, spreads)
    t3 = time.perf_counter()
    fallbacks = [step for groups_ in predictor.groups.values() for g in groups_ for step in g.engine.fallbacks]
    return {"read_s": t1 - t0, "compute_s": t2 - t1, "write_s": t3 - t2, "fallbacks": fallbacks}


def _bad_fields(index: Any, plate_dir: Any, skip: bool, good: int) -> list[dict[str, str]]:
    """Fields of the plate that cannot be predicted; raise unless ``skip`` (then list them)."""
    unusable = index.unusable_fields()
    if unusable and not skip:
        first = next(iter(unusable.values()))[0]
        more = len(unusable) - 1
        others = f" (and {more} more bad field{'s' if more > 1 else ''}: vstain check {plate_dir} lists them)" \
            if more else ""
        raise PlateError(
            f"{first.path}: {first.message}{others}; fix the field, or pass --skip-bad-fields to "
            f"predict the {good} good field{'s' if good != 1 else ''}"
        )
    return [
        {"field": f"{mag} {well} F{number:03d}", "problem": f"{issues[0].path}: {issues[0].message}"}
        for (mag, well, number), issues in unusable.items()
    ]


def _prepare_folders(folders: Iterable[Path]) -> None:
    """Create the output folders and prove each writable, before any field is computed."""
    for folder in folders:
        try:
            folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise PlateError(f"{folder}: exists and is not a folder; choose another --output") from None
        except NotADirectoryError:
            raise PlateError(f"{folder}: lies under a file, not a folder; choose another --output") from None
        except OSError as exc:
            raise PlateError(f"{folder}: cannot create the output folder ({exc.strerror}); "
                             "choose another --output") from None
        try:
            with tempfile.TemporaryFile(dir=folder, prefix=".vstain-write-test."):
                pass
        except OSError as exc:
            raise PlateError(f"{folder}: cannot write there ({exc.strerror}); choose another --output "
                             "or fix the folder's permissions") from None


def _provenance_difference(description: str | None, expected: Mapping[str, Any], target: str) -> str | None:
    """Why an existing output was not made as this run would make it (None: it was)."""
    try:
        stored = json.loads(description or "")[PROVENANCE_KEY]
        model, settings = stored["model"], stored["settings"]
    except (ValueError, TypeError, KeyError):
        return "does not record which model wrote it (another program or an older vstain)"
    want = expected["model"]
    if model.get("sha256") != want["sha256"]:
        return (f"{target} was predicted by {model.get('name')} (sha256 {str(model.get('sha256'))[:12]}), "
                f"this run uses {want['name']} (sha256 {want['sha256'][:12]})")
    for key, value in expected["settings"].items():
        if settings.get(key) != value:
            return f"was predicted with {key}={settings.get(key)!r}, this run uses {key}={value!r}"
    return None


def _manifest_name(rank: RankInfo) -> str:
    """The manifest file this process writes: ``predictions.json``, or its rank's part."""
    return MANIFEST_NAME if rank.world_size == 1 else f"predictions.rank-{rank.rank}-of-{rank.world_size}.json"


def _write_manifest(output: Path, manifest: dict[str, Any], rank: RankInfo) -> None:
    """Write ``predictions.json``; under torchrun, a part per rank merged by whichever rank ends last.

    Merging is idempotent (every rank that sees all parts writes the same merge atomically), so
    no process group or barrier is needed. A rank deletes its own part and the merge when it
    starts, so ``predictions.json`` exists only while every rank's part describes the folder. Parts
    made by other models or output settings (a rank that died before rerunning with new ones) are
    not merged: the folder then mixes outputs, which a warning names.
    """
    from vstain.atomic import write_text_atomic

    output.mkdir(parents=True, exist_ok=True)
    if rank.world_size == 1:
        write_text_atomic(output / MANIFEST_NAME, json.dumps(manifest, indent=2) + "\n")
        return
    part = output / _manifest_name(rank)
    write_text_atomic(part, json.dumps(manifest, indent=2) + "\n")
    paths = [output / f"predictions.rank-{r}-of-{rank.world_size}.json" for r in range(rank.world_size)]
    try:
        parts = [json.loads(p.read_text()) for p in paths]
    except FileNotFoundError:  # a rank has not finished (or has just started again and removed its part)
        return
    made_by = [_made_by(p) for p in parts]
    if any(m != made_by[0] for m in made_by):
        differ = [p.name for p, m in zip(paths, made_by) if m != _made_by(manifest)]
        warnings.warn(f"{output}: {', '.join(differ)} were made by other models or settings than this rank's "
                      "outputs, so predictions.json is not written; rerun those ranks with the same models "
                      "and settings (--overwrite)", stacklevel=2)
        return
    write_text_atomic(output / MANIFEST_NAME, json.dumps(merge_manifests(parts), indent=2) + "\n")


def _made_by(manifest: Mapping[str, Any]) -> tuple[list[str], dict[str, Any]]:
    """What determines a manifest's outputs: its models' SHA-256 and the settings that change pixels."""
    settings = manifest.get("settings", {})
    return [m.get("sha256") for m in manifest.get("models", [])], {k: settings.get(k) for k in _OUTPUT_SETTINGS}


def merge_manifests(parts: Iterable[Mapping[str, Any]]) -> dict[str, Any]:
    """Combine the per-rank manifests of one run: counts and times summed, wall time the slowest."""
    parts = list(parts)
    merged = dict(parts[0])
    merged["rank"] = "all"
    merged["fields"] = {key: (parts[0]["fields"]["plate"] if key == "plate" else sum(p["fields"][key] for p in parts))
                        for key in parts[0]["fields"]}
    wall = max(p["timings"]["wall_s"] for p in parts)
    merged["timings"] = {
        "wall_s": wall,
        "fields_per_s": merged["fields"]["predicted"] / wall if wall > 0 else 0.0,
        "per_rank": [p["timings"] for p in parts],
    }
    merged["oom_fallbacks"] = [step for p in parts for step in p.get("oom_fallbacks", [])]
    # Every rank lists the fields the index found bad; a field unreadable when read is one rank's.
    bad = {b["field"]: b for p in parts for b in p.get("bad_fields", [])}
    merged["bad_fields"] = list(bad.values())
    merged["fields"]["skipped_bad"] = len(bad)
    return merged
