"""A GAN module built from a config without a gan section is refused with a ConfigError, not an assert."""

from __future__ import annotations

import numpy as np
import pytest

from vstain.config import load_config
from vstain.errors import ConfigError
from vstain.plate.normalize import Normalizer
from vstain.training.gan import GanModule


def test_gan_module_without_gan_section_is_a_config_error(tmp_path):
    config = load_config("configs/smoke/lipids_pretrain.yaml", values={"data.root": str(tmp_path)})
    assert config.gan is None
    lipids = Normalizer(np.array([0.0]), np.array([1000.0]), channels=["C02"]).to_dict()
    with pytest.raises(ConfigError, match="gan: the gan recipe needs a gan section"):
        GanModule(config.model_dump(mode="json"), {"targets": {"lipids": lipids}, "target_medians": {"lipids": 0.5}})
