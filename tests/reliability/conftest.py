"""Shared pieces of the bad-input tests: tiny bundles, a CLI runner, one-line error checks, file snapshots."""

from __future__ import annotations

import hashlib
from pathlib import Path

import numpy as np
import pytest


def _normalizer(low, high, channels) -> dict:
    from vstain.plate.normalize import Normalizer

    return Normalizer(np.asarray(low, float), np.asarray(high, float), channels=channels, kind="minmax").to_dict()


TINY = dict(init_filters=8, down_blocks=[1, 1], up_blocks=[1, 1], bottleneck_layers=1, growth_rate=4)


@pytest.fixture
def bundles(tmp_path) -> dict[str, Path]:
    """Two lipids bundles ("A", "B") of the same tiny architecture with different weights."""
    import torch

    from vstain.inference.bundle import save_bundle
    from vstain.models import build_model

    torch.set_num_threads(1)
    metadata = {
        "architecture": {"name": "tiramisu", "arguments": dict(TINY)},
        "targets": ["lipids"],
        "magnification": "20x",
        "normalization": {
            "input": _normalizer([1000.0] * 7, [4000.0] * 7, [f"C04Z{z:02d}" for z in range(1, 8)]),
            "targets": {"lipids": _normalizer([0.0], [3000.0], ["C02"])},
        },
    }
    out = {}
    for seed, name in enumerate("AB"):
        torch.manual_seed(seed)
        network = build_model("tiramisu", **TINY).eval()
        out[name] = save_bundle(tmp_path / "models" / name / "lipids", network, metadata)
    return out


@pytest.fixture
def cli(capsys):
    """Run ``vstain ARGS`` in-process; returns (exit code, stdout, stderr)."""
    from vstain.cli import main

    def run(*args: str) -> tuple[int, str, str]:
        capsys.readouterr()
        code = main([str(a) for a in args])
        captured = capsys.readouterr()
        return code, captured.out, captured.err

    return run


def assert_one_line_error(err: str, *names: str) -> str:
    """``err`` is exactly one ``error: ...`` line that mentions every one of ``names``."""
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line, got {len(lines)}:\n{err}"
    line = lines[0]
    assert line.startswith("error: "), line
    for name in names:
        assert str(name) in line, f"{name!r} not in {line!r}"
    assert "Traceback" not in err and "weights_only" not in line
    return line


def snapshot(folder: Path) -> dict[str, str]:
    """{relative path: sha256} of every file under ``folder`` (to prove inputs are untouched)."""
    return {
        str(p.relative_to(folder)): hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@pytest.fixture(name="one_line_error")
def _one_line_error():
    """:func:`assert_one_line_error`, as a fixture (test modules here do not import conftest)."""
    return assert_one_line_error


@pytest.fixture(name="snapshot")
def _snapshot():
    """:func:`snapshot`, as a fixture."""
    return snapshot
