"""The Lightning DataModule of a training run: split, statistics, normalisers, masks, loaders.

Everything derived from the plate is computed once and written into the run folder
(``split.csv``, ``stats.json``, ``masks/``, ``offsets.csv`` with ``data.alignment``) so the run is
reproducible and inspectable, and a resumed run reuses exactly the same split, normalisation and
offsets.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import Any, Sequence

import lightning as L
import numpy as np
from torch.utils.data import DataLoader

from vstain.alignment.offsets import OffsetTable, SiteOffsets
from vstain.config import TrainConfig
from vstain.data.augment import AugmentSettings
from vstain.data.datasets import EpochSampler, FieldDataset, NucleusCropDataset, RandomCropDataset
from vstain.data.store import FieldStore
from vstain.errors import PlateError, SplitError
from vstain.plate.images import ImageLocation, read_image
from vstain.plate.index import Field, index_plate
from vstain.plate.normalize import Normalizer
from vstain.plate.splits import Split, leave_wells_out, random_fields_out
from vstain.plate.stats import PlateStats, compute_stats
from vstain.plate.tiff import write_tiff
from vstain.vocabulary import TRAIN, VALIDATION


class PlateDataModule(L.LightningDataModule):
    """Training and validation data of one config, written to / reused from ``run_dir``."""

    def __init__(self, config: TrainConfig, run_dir: str | Path) -> None:
        super().__init__()
        self.config = config
        self.run_dir = Path(run_dir)
        self.train_fields: list[Field] = []
        self.val_fields: list[Field] = []
        self.normalization: dict[str, Any] = {}
        #: Site offsets of the targets (JSON form, for the model bundle), or None without alignment.
        self.alignment: dict[str, Any] | None = None
        self._offsets: OffsetTable | None = None
        self._input: Normalizer | None = None
        self._targets: Normalizer | None = None
        self.train_dataset: RandomCropDataset | NucleusCropDataset | None = None
        self.val_dataset: FieldDataset | None = None

    @property
    def needs_masks(self) -> bool:
        return self.config.recipe == "lupi" or self.config.data.sampling in ("nuclei", "mixed")

    # ------------------------------------------------------------------ preparation
    def prepare(self) -> None:
        """Index the plate, fix the split and the statistics (reusing the run folder's if present)."""
        data = self.config.data
        index = index_plate(data.root, magnification=data.magnification)
        fields = index.select(magnification=data.magnification, with_targets=data.targets)
        if not fields:
            index.raise_for_errors()
            raise PlateError(f"{data.root}: no {data.magnification} field has all of {', '.join(data.targets)}")
        split, source = self._split(fields)
        # A split naming fields that are not there is a typo or another plate's split: say so.
        try:
            split.check_fields([f.key for f in index.fields], source=source, magnifications=[data.magnification])
        except SplitError:
            index.raise_for_errors()  # the fields may be there but broken: that is the problem to name
            raise
        lacking = sorted(k for k in split.assignments if k[0] == data.magnification
                         and k not in {f.key for f in fields} and split.assignments[k] in (TRAIN, VALIDATION))
        if lacking:
            raise SplitError(f"{source}: {len(lacking)} {TRAIN}/{VALIDATION} field(s) lack one of "
                             f"{', '.join(data.targets)}: " + ", ".join(f"{w} F{n:03d}" for _, w, n in lacking[:5]))
        split.check_trainable(data.magnification, source=source)
        split.save(self.run_dir / "split.csv")
        train_keys, val_keys = split.keys(TRAIN), split.keys(VALIDATION)
        self.train_fields = [f for f in fields if f.key in train_keys]
        self.val_fields = [f for f in fields if f.key in val_keys]
        stats = self._stats()
        check_learnable_targets(stats, data.magnification, data.targets, root=data.root)
        self._input = Normalizer.from_stats(stats, data.magnification, kind=data.normalization)
        # Targets are clipped to [0, 1] whatever the normalisation: the networks end in a scaled
        # tanh with range (0, 1), and the log-squared loss is undefined below 0. (Inputs keep
        # the percentile normaliser's unclipped tails.)
        self._targets = Normalizer.from_stats(stats, data.magnification, channels=data.targets,
                                              kind=data.normalization, clip=True)
        self.normalization = {
            "input": self._input.to_dict(),
            "targets": {
                t: Normalizer.from_stats(stats, data.magnification, channels=(t,), kind=data.normalization,
                                         clip=True).to_dict()
                for t in data.targets
            },
            # Raw-count medians of the training targets: the loss scale of `loss.median: dataset`
            # and the starting level of `model.output_init: median`.
            "target_medians": {t: stats.get(data.magnification, t).percentile(50) for t in data.targets},
        }
        self._offsets = self._alignment()
        if self.needs_masks:
            for field in self.train_fields + self.val_fields:
                self._mask_path(field)  # computes and stores missing masks once

    def _split(self, fields: list[Field]) -> tuple[Split, str]:
        """The split and where it came from (for messages): the config's file, the run's, or a new one."""
        data = self.config.data
        saved = self.run_dir / "split.csv"
        if data.split is not None:
            split, source = Split.load(data.split), str(data.split)
        elif saved.exists():
            split, source = Split.load(saved), str(saved)
        elif data.holdout_wells:
            split, source = leave_wells_out([f.key for f in fields], data.holdout_wells), "data.holdout_wells"
        else:
            split = random_fields_out([f.key for f in fields], data.holdout_fields, seed=self.config.seed)
            source = "data.holdout_fields"
        return split, source

    def _alignment(self) -> OffsetTable | None:
        """The offsets of the targets (``data.alignment``), saved as ``offsets.csv`` in the run folder.

        ``auto`` estimates them on the training and validation fields (once: a resumed run reuses
        the saved file); a file is checked against the fields it must cover and refused in one
        line if it lacks their magnification or sites.
        """
        data = self.config.data
        if data.alignment == "none":
            return None
        fields = self.train_fields + self.val_fields
        saved = self.run_dir / "offsets.csv"
        if data.alignment == "auto":
            if saved.exists():
                table = OffsetTable.load(saved)
            else:
                from vstain.alignment.plate import align_fields

                # Every stain the fields have, not only the targets: a stain no field registers with
                # confidence (nuclei are nearly transparent in brightfield) then takes the offset of the
                # field's other stains (one camera: they share most of it) instead of none at all.
                alignment = align_fields(fields)
                for line in alignment.warnings:
                    warnings.warn(f"alignment: {line}", stacklevel=2)
                table = alignment.table
            source = str(saved)
        else:
            table, source = OffsetTable.load(data.alignment), str(data.alignment)
        sites = SiteOffsets.from_table(table, data.magnification, source=source)
        # A field without its own row uses its site's offset; a site the table lacks is refused.
        own = {(f.key, t) for f in fields for t in data.targets
               if table.offset(f.magnification, f.well, f.field, t) is not None}
        sites.check_covers(data.magnification, [f.field for f in fields for t in data.targets
                                                if (f.key, t) not in own], data.targets, source=source)
        table.save(saved)
        self.alignment = SiteOffsets(sites.magnification, {t: sites.sites[t] for t in data.targets}).to_dict()
        return table

    def target_offset(self, field: Field, target: str) -> tuple[float, float]:
        """Offset ``(dy, dx)`` of ``target`` in ``field``: its own row of the offsets table, else its site's."""
        assert self._offsets is not None
        own = self._offsets.offset(field.magnification, field.well, field.field, target)
        if own is not None:
            return own
        site = SiteOffsets.from_dict(self.alignment or {}).offset(target, field.field)
        assert site is not None  # check_covers refused tables without it
        return site

    def _stats(self) -> PlateStats:
        data = self.config.data
        saved = self.run_dir / "stats.json"
        if data.stats is not None:
            stats = PlateStats.load(data.stats)
        elif saved.exists():
            stats = PlateStats.load(saved)
        else:
            # Training split only: validation fields must not leak into the normalisation.
            stats = compute_stats(self.train_fields, source={"plate": str(data.root), "subset": "train"})
        stats.save(saved)
        return stats

    def _mask_path(self, field: Field) -> ImageLocation:
        if field.mask is not None:
            return field.mask
        path = self.run_dir / "masks" / field.target_filename("nuclei")
        if not path.exists():
            from vstain.evaluation.nuclei import segment_nuclei

            labels = segment_nuclei(field.read_target("nuclei"), magnification=field.magnification)
            write_tiff(path, labels.astype(np.uint16))
        return path

    def _labels(self, field: Field) -> np.ndarray:
        return read_image(self._mask_path(field))  # a TIFF, or a label plane of an OME-Zarr plate

    # ------------------------------------------------------------------ Lightning hooks
    def setup(self, stage: str | None = None) -> None:
        if self._input is None:
            self.prepare()
        data = self.config.data
        assert self._input is not None and self._targets is not None
        labels = self._labels if self.needs_masks else None
        common = dict(input_normalise=self._input.forward, target_normalise=self._targets.forward,
                      labels=labels, max_cached=data.max_cached_fields,
                      target_offsets=self.target_offset if self._offsets is not None else None)
        train_store = FieldStore(self.train_fields, data.targets, **common)
        val_fields = self.val_fields[: self.config.trainer.limit_val_fields or None]
        self.val_dataset = FieldDataset(FieldStore(val_fields, data.targets, **{**common, "max_cached": 1}))
        augment = AugmentSettings(**data.augment.model_dump())
        if data.sampling in ("nuclei", "mixed"):
            fraction = data.centred_fraction if data.sampling == "mixed" else 1.0
            self.train_dataset = NucleusCropDataset(train_store, crop=data.crop_size, augment=augment,
                                                    samples_per_epoch=data.samples_per_epoch, seed=self.config.seed,
                                                    centred_fraction=fraction)
        else:
            self.train_dataset = RandomCropDataset(train_store, crop=data.crop_size, augment=augment,
                                                   samples_per_epoch=data.samples_per_epoch, seed=self.config.seed)

    def _rank(self) -> tuple[int, int]:
        trainer = self.trainer
        return (trainer.global_rank, trainer.world_size) if trainer is not None else (0, 1)

    def train_dataloader(self) -> DataLoader:
        assert self.train_dataset is not None
        rank, world = self._rank()
        sampler = EpochSampler(len(self.train_dataset), seed=self.config.seed, rank=rank, world_size=world)
        workers = self.config.data.num_workers
        return DataLoader(self.train_dataset, batch_size=self.config.data.batch_size, sampler=sampler,
                          num_workers=workers, persistent_workers=workers > 0, pin_memory=False)

    def val_dataloader(self) -> DataLoader:
        assert self.val_dataset is not None
        rank, world = self._rank()
        # Each process validates its own share; the metrics sum their states across processes.
        indices = list(range(rank, len(self.val_dataset), world))
        return DataLoader(self.val_dataset, batch_size=1, sampler=indices, num_workers=0)


def check_learnable_targets(stats: PlateStats, magnification: str, targets: Sequence[str], *, root: Path) -> None:
    """Refuse, before training starts, a target stain with nothing to learn on the training fields.

    A stain whose 0.01st and 99.99th percentiles coincide is constant (or empty, e.g. a channel
    that was never imaged) on the training fields: every normalisation of it is undefined and any
    model would learn a flat image.

    Raises
    ------
    PlateError
        Naming the plate, the stain and what to do.
    """
    from vstain.plate.stats import TARGET_KEYS

    for target in targets:
        entry = stats.get(magnification, target)
        low, high = entry.percentile(0.01), entry.percentile(99.99)
        if high <= low:
            where = "every pixel" if entry.min == entry.max else "99.98 % of the pixels"
            raise PlateError(
                f"{root}: the {target} stain ({TARGET_KEYS[target]}) of the {magnification} training fields is "
                f"constant ({where} {low:g}): nothing to learn; check that the stain was imaged, or leave "
                f"{target} out of data.targets"
            )
