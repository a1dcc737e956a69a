"""Training's validation predicts whole fields as vstain predict does: the same tiler, margin included."""

from __future__ import annotations

import numpy as np
import torch

from vstain.config import load_config
from vstain.inference.tiler import DEFAULT_MARGIN, Tiler
from vstain.plate.normalize import Normalizer
from vstain.training.regression import RegressionModule


def test_validation_uses_the_prediction_tiler_with_its_edge_margin(tmp_path):
    config = load_config("configs/smoke/lipids_pretrain.yaml", values={"data.root": str(tmp_path)})
    lipids = Normalizer(np.array([0.0]), np.array([1000.0]), channels=["C02"]).to_dict()
    module = RegressionModule(config.model_dump(mode="json"),
                              {"targets": {"lipids": lipids}, "target_medians": {"lipids": 0.5}})
    assert module.tiler.margin == DEFAULT_MARGIN > 0
    assert module.tiler.describe() == Tiler(config.validation.mode).describe()
    # what the margin changes, on the module's own network: its output at the field's edge
    module.eval()
    image = torch.rand(7, 48, 64, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        with_margin = module.tiler(image, module.network_output)
        bare = Tiler(config.validation.mode, margin=0)(image, module.network_output)
    assert with_margin.shape == bare.shape == (1, 48, 64)
    assert not torch.allclose(with_margin[:, 0], bare[:, 0])
