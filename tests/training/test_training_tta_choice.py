"""validation.tta: the test-time augmentation a model gets, chosen on its validation fields."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from tiny_training import tiny_config

from tiny_bundles import TINY_TIRAMISU, bundle_metadata
from vstain.config import load_config
from vstain.data.store import FieldStore
from vstain.errors import ConfigError
from vstain.inference.bundle import load_model, save_bundle
from vstain.inference.predictor import Predictor
from vstain.plate.index import index_plate
from vstain.plate.naming import ImageName, format_name
from vstain.plate.tiff import write_tiff
from vstain.training.fit import fit
from vstain.training.tta_choice import choose_tta


def _network() -> torch.nn.Module:
    from vstain.models import build_model

    torch.manual_seed(0)
    return build_model("tiramisu", **TINY_TIRAMISU).eval()


def _plate_with_targets(root: Path, targets: list[np.ndarray], brightfields: list[np.ndarray]) -> FieldStore:
    """One well, one field per target image, as a FieldStore of the lipids target (as validation reads it)."""
    folder = root / "20x_images"
    for number, (target, brightfield) in enumerate(zip(targets, brightfields), start=1):
        base = ImageName(plate="AssayPlate_Test", well="B02", field=number, channel=4, action=4)
        for z in range(1, 8):
            write_tiff(folder / format_name(base.for_channel(4, z=z)), brightfield[z - 1])
        write_tiff(folder / format_name(base.for_channel(2)), target)
    fields = index_plate(root, magnification="20x").select(magnification="20x")
    return FieldStore(fields, ["lipids"], input_normalise=lambda x: x)


def _brightfields(count: int, seed: int = 3) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 1000, (7, 48, 40)).astype(np.uint16) for _ in range(count)]


def _relative_mae(predictions: list[np.ndarray], targets: list[np.ndarray]) -> float:
    """The challenge pixel metric by hand: MAE over all pixels / median of all target pixels."""
    error = np.mean([np.abs(p.astype(float) - t.astype(float)).mean() for p, t in zip(predictions, targets)])
    return float(error / np.median(np.concatenate([t.ravel() for t in targets])))


def test_choice_scores_both_settings_as_predict_writes_them(tmp_path):
    bundle = save_bundle(tmp_path / "m", _network(), bundle_metadata())
    brightfields = _brightfields(2)
    rng = np.random.default_rng(5)
    targets = [rng.integers(100, 2000, (48, 40)).astype(np.uint16) for _ in brightfields]
    choice = choose_tta(bundle, _plate_with_targets(tmp_path / "plate", targets, brightfields))
    for tta in (1, 8):
        written = [Predictor([bundle], tta=tta).predict_field(b)["lipids"] for b in brightfields]
        assert choice.errors[tta]["lipids"] == pytest.approx(_relative_mae(written, targets), rel=1e-4)
    assert choice.fields == 2
    assert choice.tta == min((1, 8), key=lambda t: (choice.mean_error(t), t))
    assert choice.to_dict() == {"1": choice.errors[1], "8": choice.errors[8]}


@pytest.mark.parametrize("made_with", [1, 8])
def test_the_setting_that_made_the_targets_wins(tmp_path, made_with):
    # Targets equal to what one setting predicts: that setting has no error, so it must be chosen.
    bundle = save_bundle(tmp_path / "m", _network(), bundle_metadata())
    brightfields = _brightfields(2)
    targets = [Predictor([bundle], tta=made_with).predict_field(b)["lipids"] for b in brightfields]
    choice = choose_tta(bundle, _plate_with_targets(tmp_path / "plate", targets, brightfields))
    other = 8 if made_with == 1 else 1
    assert choice.tta == made_with
    assert choice.errors[made_with]["lipids"] < 1e-3 < choice.errors[other]["lipids"]


def test_a_tie_keeps_the_cheaper_setting(tmp_path):
    # All weights zero: every transform predicts the same flat image, so both settings score alike.
    network = _network()
    with torch.no_grad():
        for parameter in network.parameters():
            parameter.zero_()
    bundle = save_bundle(tmp_path / "flat", network, bundle_metadata())
    brightfields = _brightfields(1)
    targets = [np.random.default_rng(2).integers(100, 2000, (48, 40)).astype(np.uint16)]
    choice = choose_tta(bundle, _plate_with_targets(tmp_path / "plate", targets, brightfields))
    assert choice.errors[1] == choice.errors[8]
    assert choice.tta == 1


def test_choice_refuses_an_empty_store(tmp_path):
    bundle = save_bundle(tmp_path / "m", _network(), bundle_metadata())
    with pytest.raises(ValueError, match="no validation fields"):
        choose_tta(bundle, FieldStore([], ["lipids"], input_normalise=lambda x: x))


def test_training_stores_the_choice_in_the_bundle(tmp_path, random_plate):
    path = tiny_config(tmp_path, random_plate, "regression")
    auto = load_model(fit(load_config(path, ["validation.tta=auto"]), tmp_path / "auto")).metadata
    errors = auto.validation["tta"]
    assert set(errors) == {"1", "8"} and set(errors["1"]) == {"lipids"}
    assert auto.tta == (8 if errors["8"]["lipids"] < errors["1"]["lipids"] else 1)
    always = load_model(fit(load_config(path, ["validation.tta=8"]), tmp_path / "always")).metadata
    assert always.tta == 8 and "tta" not in always.validation
    assert load_model(fit(load_config(path), tmp_path / "plain")).metadata.tta is None


def test_tta_setting_is_validated(tmp_path, random_plate):
    path = tiny_config(tmp_path, random_plate, "regression")
    with pytest.raises(ConfigError, match=r"validation\.tta"):
        load_config(path, ["validation.tta=4"])
