"""Precise BatchNorm statistics (trainer.precise_bn_batches): exact averages, untouched training stream."""

from __future__ import annotations

import csv
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from tiny_training import tiny_config
from torch import nn

from vstain.config import load_config
from vstain.errors import ConfigError
from vstain.training.fit import fit
from vstain.training.precise_bn import recompute_batch_norm


def _two_batches() -> list[torch.Tensor]:
    return [torch.tensor([1.0, 2.0, 3.0, 4.0]).reshape(1, 1, 2, 2),
            torch.tensor([5.0, 5.0, 5.0, 9.0]).reshape(1, 1, 2, 2)]


def test_recompute_averages_the_batch_statistics_by_hand():
    # A dropout that would zero nearly everything comes first: if it ran, the mean would be ~0.
    network = nn.Sequential(nn.Dropout(p=0.999), nn.BatchNorm2d(1))
    network.train()
    norm = network[1]
    norm.running_mean.fill_(100.0)
    count = recompute_batch_norm(network, _two_batches(), network)
    assert count == 2
    # batch means 2.5 and 6; unbiased batch variances 5/3 and 12/3
    assert norm.running_mean.item() == pytest.approx((2.5 + 6.0) / 2)
    assert norm.running_var.item() == pytest.approx((5 / 3 + 4.0) / 2)
    assert norm.num_batches_tracked.item() == 2
    assert norm.momentum == 0.1  # the layer's own momentum is back for training
    assert network.training and network[0].training and norm.training


def test_recompute_restores_evaluation_mode_and_keeps_statistics_without_batches():
    network = nn.Sequential(nn.Conv2d(1, 1, 1), nn.BatchNorm2d(1))
    network.eval()
    norm = network[1]
    norm.running_mean.fill_(3.0)
    norm.running_var.fill_(7.0)
    assert recompute_batch_norm(network, [], network) == 0
    assert norm.running_mean.item() == 3.0 and norm.running_var.item() == 7.0
    assert not network.training and not norm.training
    recompute_batch_norm(network, _two_batches(), network)
    assert not network.training and not norm.training
    assert recompute_batch_norm(nn.Conv2d(1, 1, 1), _two_batches(), lambda x: x) == 0  # no BatchNorm


def _epoch_losses(run: Path) -> list[str]:
    with open(run / "logs" / "metrics.csv") as handle:
        return [row["train/loss_epoch"] for row in csv.DictReader(handle) if row.get("train/loss_epoch")]


def test_training_with_precise_statistics_exports_them_and_trains_the_same(tmp_path, random_plate):
    path = tiny_config(tmp_path, random_plate, "lupi", trainer__max_epochs=2)
    # best by training loss, identical in both runs, so both export the same epoch
    overrides = ["validation.monitor=train/loss_epoch"]
    plain = fit(load_config(path, overrides), tmp_path / "plain")
    precise = fit(load_config(path, [*overrides, "trainer.precise_bn_batches=2"]), tmp_path / "precise")
    # BatchNorm normalises training batches with their own statistics: the steps are the same
    assert _epoch_losses(tmp_path / "plain") == _epoch_losses(tmp_path / "precise")
    a, b = load_file(plain), load_file(precise)
    means = [k for k in a if k.endswith("running_mean")]
    assert means
    for key in a:
        if key.endswith(("running_mean", "running_var", "num_batches_tracked")):
            continue
        torch.testing.assert_close(a[key], b[key], rtol=0, atol=0, msg=key)
    # the exported statistics are the average over 2 batches, not the running ones of 4 steps
    tracked = [k for k in b if k.endswith("num_batches_tracked")]
    assert {int(b[k]) for k in tracked} == {2}
    assert {int(a[k]) for k in tracked} == {4}
    assert any(not torch.equal(a[k], b[k]) for k in means)


def test_precise_statistics_setting_is_validated(tmp_path, random_plate):
    path = tiny_config(tmp_path, random_plate, "regression")
    with pytest.raises(ConfigError, match=r"trainer\.precise_bn_batches"):
        load_config(path, ["trainer.precise_bn_batches=0"])
    with pytest.raises(ConfigError, match=r"trainer\.precise_bn_batches.*ema_decay"):
        load_config(path, ["trainer.precise_bn_batches=4", "trainer.ema_decay=0.9"])
