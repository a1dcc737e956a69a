"""The README's CLI tour runs exactly as written (on a small synthetic plate), so it cannot rot."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]


def tour_commands() -> list[str]:
    text = (ROOT / "README.md").read_text()
    block = re.search(r"<!-- tour -->\s*```bash\n(.*?)```\s*<!-- /tour -->", text, re.S)
    assert block, "README.md lost its <!-- tour --> block"
    return [line.strip() for line in block.group(1).splitlines() if line.strip() and not line.startswith("#")]


def test_tour_names_every_main_command():
    used = {command.split()[1] for command in tour_commands()}
    assert {"synth", "check", "stats", "train", "predict", "evaluate", "bench"} <= used


@pytest.mark.slow
def test_readme_tour_runs_as_written(tmp_path):
    # no configs/ folder here: `-c configs/smoke/...` finds the config shipped in the package
    env = {**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1",
           "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ.get('PATH', '')}"}
    for command in tour_commands():
        result = subprocess.run(command, shell=True, cwd=tmp_path, env=env, capture_output=True, text=True,
                                timeout=900)
        assert result.returncode == 0, f"{command}\n{result.stdout[-2000:]}\n{result.stderr[-2000:]}"
    assert (tmp_path / "runs/all_stains/model.safetensors").is_file()
    assert len(list((tmp_path / "predicted").glob("*.tif"))) == 12  # 4 fields x 3 stains
    scores = json.loads((tmp_path / "evaluation/scores.json").read_text())
    assert scores["20x"]["n_fields"] == 4 and scores["total"] == scores["total"]  # finite, not NaN
    assert (tmp_path / "evaluation/report.html").is_file()
    assert json.loads((tmp_path / "bench.json").read_text())
