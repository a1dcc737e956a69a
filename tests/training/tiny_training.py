"""A tiny training config on a tiny plate, shared by the training tests."""

from __future__ import annotations

from pathlib import Path

import yaml

TINY = {"init_filters": 8, "down_blocks": [1, 1, 1, 1], "up_blocks": [1, 1, 1, 1],
        "bottleneck_layers": 1, "growth_rate": 4, "dropout": 0.0}


def tiny_config(tmp_path: Path, plate: Path, recipe: str, **extra) -> Path:
    """Write the config of a ``recipe`` run on ``plate``; ``section__key=value`` overrides a setting."""
    data = {"root": str(plate), "targets": ["lipids"], "crop_size": 32, "batch_size": 2,
            "samples_per_epoch": 4, "holdout_fields": 1}
    config = {"name": f"tiny_{recipe}", "recipe": recipe, "seed": 7, "data": data,
              "model": {"name": "tiramisu", "args": dict(TINY)},
              "trainer": {"max_epochs": 1, "progress_bar": False, "log_every_n_steps": 1}}
    if recipe == "lupi":
        data.update(targets=["nuclei"], sampling="nuclei")
        config["model"]["name"] = "lupi"
        config["optimizer"] = {"name": "adamw", "lr": 1e-3, "weight_decay": 1e-3}
    if recipe == "gan":
        config["gan"] = {"discriminator": {"name": "patchgan", "args": {"ndf": 8, "n_layers": 2}}}
        config["trainer"]["gradient_clip"] = 1.0
    for key, value in extra.items():
        section, _, name = key.partition("__")
        config.setdefault(section, {})[name] = value
    path = tmp_path / f"{recipe}.yaml"
    path.write_text(yaml.safe_dump(config))
    return path
