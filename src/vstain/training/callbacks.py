"""Side jobs of a training run, as Lightning callbacks: validation image panels and the export
of the best validated generator as a model bundle.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

import lightning as L
import numpy as np
import torch
from lightning.pytorch.callbacks import Callback, ModelCheckpoint

from vstain.inference.engine import DIHEDRAL
from vstain.plate.index import field_identity
from vstain.training.tta_choice import choose_tta
from vstain.vocabulary import TRAIN, VALIDATION

if TYPE_CHECKING:
    from vstain.inference.intensity_map import IntensityMap


class ValidationPanels(Callback):
    """After each validation, save brightfield / truth / prediction of the first held-out field
    as a PNG (and as TensorBoard images when that logger is active).
    """

    def __init__(self, folder: Path, *, max_side: int = 384) -> None:
        self.folder = Path(folder)
        self.max_side = max_side

    def on_validation_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        panel = getattr(module, "validation_panel", None)
        if panel is None or not trainer.is_global_zero or trainer.sanity_checking:
            return
        images = [panel["brightfield"]] + [c for c in panel["truth"]] + [c for c in panel["prediction"]]
        step = max(1, max(images[0].shape) // self.max_side)
        images = [_stretch(i[::step, ::step]) for i in images]
        k = len(panel["truth"])
        titles = ["brightfield (mid plane)"] + [f"truth {i}" for i in range(k)] + [f"prediction {i}" for i in range(k)]
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        fig, axes = plt.subplots(1, len(images), figsize=(3 * len(images), 3.2))
        for ax, image, title in zip(np.atleast_1d(axes), images, titles):
            ax.imshow(image, cmap="gray", vmin=0, vmax=1)
            ax.set_title(title, fontsize=8)
            ax.axis("off")
        fig.suptitle(f"epoch {trainer.current_epoch}", fontsize=9)
        self.folder.mkdir(parents=True, exist_ok=True)
        fig.savefig(self.folder / f"epoch{trainer.current_epoch:04d}.png", dpi=80, bbox_inches="tight")
        plt.close(fig)
        for logger in trainer.loggers:
            experiment = getattr(logger, "experiment", None)
            if experiment is not None and hasattr(experiment, "add_image"):
                for title, image in zip(titles, images):
                    experiment.add_image(f"val/{title}", image[None], trainer.global_step)


def _stretch(image: np.ndarray) -> np.ndarray:
    low, high = np.percentile(image, (0.5, 99.5))
    return np.clip((image - low) / max(high - low, 1e-6), 0, 1).astype(np.float32)


class BundleExport(Callback):
    """At the end of training, write the generator of the best *validation* checkpoint as a
    vstain model bundle (never chosen on training loss); then, where the config asks, fit its
    intensity map (``validation.intensity_map``) and choose its test-time augmentation
    (``validation.tta``) on the validation fields, in that order, and store both in the bundle.
    """

    def __init__(self, path: Path, datamodule: Any, *, monitor: str, summary: Any = None) -> None:
        self.path = Path(path)
        self.datamodule = datamodule
        self.monitor = monitor
        self.summary = summary  # a RunSummary whose linear-baseline verdict goes into the bundle

    def on_fit_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        best = next((c for c in trainer.checkpoint_callbacks
                     if isinstance(c, ModelCheckpoint) and c.monitor == self.monitor), None)
        network = module.export_network()
        validation: dict[str, Any] = {}
        if best is not None and best.best_model_path:
            state = torch.load(best.best_model_path, map_location="cpu", weights_only=True)["state_dict"]
            prefix = "generator."
            weights = {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}
            network = _copy_with(network, weights)
            validation = {self.monitor: float(best.best_model_score), "checkpoint": Path(best.best_model_path).name}
        else:
            warnings.warn("no validation ran: exporting the last weights unvalidated", stacklevel=2)
            validation = {"note": "not validated"}
        for key, value in trainer.callback_metrics.items():
            if key.startswith("val/") and key != self.monitor:
                validation.setdefault(f"last_{key}", float(value))
        verdict = self.summary.verdict if self.summary is not None else {}
        if "beats_linear" in verdict:
            validation["linear_baseline"] = {t: v["linear"] for t, v in verdict["per_target"].items()}
            validation["best_per_target"] = {t: v["model"] for t, v in verdict["per_target"].items()}
            validation["beats_linear"] = verdict["beats_linear"]

        from vstain.inference.bundle import save_bundle
        from vstain.models import model_arguments

        cfg = module.cfg
        arguments = {**model_arguments(cfg.model.name), **cfg.model.args}
        metadata = {
            "architecture": cfg.model.name,
            "arguments": arguments,
            "targets": list(module.targets),
            "magnification": cfg.data.magnification,
            "normalization": self.datamodule.normalization,
            "output_index": module.output_index(),
            "training": {"name": cfg.name, "recipe": cfg.recipe, "seed": cfg.seed,
                         "epochs": trainer.current_epoch, "steps": trainer.global_step,
                         # which fields the network saw: vstain calibrate refuses to calibrate on them
                         "fields": {TRAIN: [field_identity(f) for f in self.datamodule.train_fields],
                                    VALIDATION: [field_identity(f) for f in self.datamodule.val_fields]}},
            "validation": validation,
            "alignment": self.datamodule.alignment,
        }
        save_bundle(self.path, network, metadata)
        limit = cfg.trainer.limit_val_fields
        fields = self.datamodule.val_fields[: limit or None]
        if cfg.validation.intensity_map == "quantiles":
            if fields:
                maps = fit_intensity_maps(self.path, fields, device=str(module.device), mode=cfg.validation.mode)
                metadata = {**metadata, "intensity_map": {t: m.to_dict() for t, m in maps.items()}}
                save_bundle(self.path, network, metadata)
                for target, mapping in maps.items():
                    print(f"[{cfg.name}] intensity map ({target}, {mapping.fields} validation fields): predicted "
                          f"99.9th percentile {mapping.predicted[-2]:.0f} -> real {mapping.target[-2]:.0f} counts, "
                          f"median {mapping.predicted[len(mapping.predicted) // 2]:.0f} -> "
                          f"{mapping.target[len(mapping.target) // 2]:.0f}", flush=True)
            else:
                warnings.warn("validation.intensity_map: no validation fields to fit it on; the bundle has none",
                              stacklevel=2)
        if cfg.validation.tta == "auto" and not fields:
            warnings.warn("validation.tta auto: no validation fields to choose on; vstain predict will not "
                          "augment this model unless asked (--tta 8)", stacklevel=2)
        elif cfg.validation.tta == "auto":
            # After the map: the choice scores the predictions vstain predict would write.
            choice = choose_tta(self.path, self.datamodule.val_dataset.store, device=str(module.device),
                                mode=cfg.validation.mode)
            validation["tta"] = choice.to_dict()
            metadata = {**metadata, "validation": validation, "tta": choice.tta}
            save_bundle(self.path, network, metadata)
            print(f"[{cfg.name}] test-time augmentation ({choice.fields} validation fields): pixel error "
                  f"{choice.mean_error(1):.4f} without, {choice.mean_error(DIHEDRAL):.4f} with the mean of "
                  f"{DIHEDRAL} flips/rotations -> vstain predict uses --tta {choice.tta}", flush=True)
        elif cfg.validation.tta != 1:
            save_bundle(self.path, network, {**metadata, "tta": cfg.validation.tta})


def fit_intensity_maps(bundle: Path, fields: Sequence[Any], *, device: str = "cpu",
                       mode: str = "whole") -> dict[str, IntensityMap]:
    """Quantile maps of a bundle's predictions onto the real stains of ``fields`` (one per target).

    Parameters
    ----------
    bundle
        The exported model (without a map yet: its raw levels are what is mapped).
    fields
        Validation fields (:class:`vstain.plate.index.Field`) with brightfield and the bundle's targets.
    device, mode
        Where and how the fields are predicted (``vstain predict``'s device and tiling).
    """
    from vstain.inference.intensity_map import IntensityMap
    from vstain.inference.predictor import Predictor

    predictor = Predictor([bundle], device=device, mode=mode, intensity_map=False)
    predicted: dict[str, list[np.ndarray]] = {}
    real: dict[str, list[np.ndarray]] = {}
    for field in fields:
        # The unrounded levels: the map is applied to those (vstain predict maps before rounding).
        variants = predictor.predict_variants(field.read_brightfield())
        for target, stack in variants.items():
            predicted.setdefault(target, []).append(stack.mean(axis=0))
            real.setdefault(target, []).append(field.read_target(target))
    return {target: IntensityMap.fit(predicted[target], real[target]) for target in predicted}


def _copy_with(network: torch.nn.Module, weights: dict[str, torch.Tensor]) -> torch.nn.Module:
    import copy

    clone = copy.deepcopy(network).cpu()
    clone.load_state_dict(weights)
    return clone.eval()


class EpochSummary(Callback):
    """One line per epoch (used when the progress bar is off, e.g. in the demo and on clusters)."""

    def __init__(self, name: str) -> None:
        self.name = name

    def on_train_epoch_end(self, trainer: L.Trainer, module: L.LightningModule) -> None:
        if not trainer.is_global_zero:
            return
        shown = {k: float(v) for k, v in trainer.callback_metrics.items()
                 if k in ("train/loss_epoch", "val/pixel_rel_mae", "val/iou")}
        values = "  ".join(f"{k}={v:.4g}" for k, v in shown.items())
        print(f"[{self.name}] epoch {trainer.current_epoch + 1}/{trainer.max_epochs}  "
              f"step {trainer.global_step}  {values}", flush=True)
