"""The inference benchmark on tiny networks: every variant runs, the reference comes first."""

from __future__ import annotations

import pytest
import torch

from vstain.bench.inference import Variant, bench_inference, stain_networks
from vstain.bench.run import format_table
from vstain.bench.sizes import BenchSizes

SIZES = BenchSizes(fields=((48, 64),), reference_batch=2, tile_batch=2, gan_batch=1, lupi_batch=1,
                   regression_batch=1, crop=32, train_steps=1, repeats=1)


def test_bench_inference_on_tiny_networks():
    device = torch.device("cpu")
    network = stain_networks(tiny=True)
    variants = [Variant("reference", "reference"), Variant("whole", "whole"),
                Variant("whole cl", "whole", channels_last=True)]
    rows = bench_inference(network, device=device, sizes=SIZES, variants=variants, log=lambda _: None)
    assert [r["variant"] for r in rows] == ["reference", "whole", "whole cl"]
    assert all(r["error"] is None and r["seconds_per_field"] > 0 for r in rows)
    assert rows[0]["speedup_vs_reference"] == pytest.approx(1.0) and rows[0]["tiles"] == 1
    assert not network.channels_last  # variants do not leak their memory format into the next
    table = format_table({"device": "cpu", "torch": torch.__version__, "inference": rows})
    assert "reference" in table and "s/field" in table
