"""`predict` on Dask workers (issue 13, item 2): same bytes as one process, resume after a kill, refusals.

One real LocalCluster of two worker processes serves the module (worker start-up is the slow part).
"""

from __future__ import annotations

import filecmp
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch

from tiny_bundles import TINY_TIRAMISU, bundle_metadata, write_plate
from vstain.cli import main
from vstain.errors import ConfigError, PlateError
from vstain.inference.bundle import BundleError, BundleMetadata, ModelBundle, save_bundle
from vstain.inference.distributed import RankInfo
from vstain.inference.predictor import Predictor
from vstain.plate.jobs import ClusterOptions, open_client

WELLS, FIELDS = ("B02", "C03"), (1, 2)


@pytest.fixture(scope="module")
def client():
    with open_client(ClusterOptions(workers=2)) as client:
        yield client


@pytest.fixture(scope="module")
def lipids(tmp_path_factory) -> Path:
    from vstain.models import build_model

    torch.manual_seed(0)
    network = build_model("tiramisu", **TINY_TIRAMISU).eval()
    return save_bundle(tmp_path_factory.mktemp("models") / "lipids_20x", network, bundle_metadata())


def _files(root: Path) -> dict[str, Path]:
    return {str(p.relative_to(root)): p for p in sorted(root.rglob("*.tif"))}


def _same_tiffs(a: Path, b: Path) -> None:
    left, right = _files(a), _files(b)
    assert sorted(left) == sorted(right) and left
    for name in left:
        assert filecmp.cmp(left[name], right[name], shallow=False), name


def test_cluster_outputs_are_the_bytes_of_a_one_process_run_and_resume(tmp_path, client, lipids):
    import zarr

    plate = write_plate(tmp_path / "plate", wells=WELLS, fields=FIELDS, shape=(32, 40))
    predictor = Predictor([lipids], tta=8, uncertainty=True)
    one = predictor.predict_plate(plate, tmp_path / "one", progress=False)
    lines: list[str] = []
    two = predictor.predict_plate(plate, tmp_path / "two", progress=False, cluster=client, announce=lines.append)
    _same_tiffs(tmp_path / "one", tmp_path / "two")  # pixels and the provenance descriptions
    assert two["fields"] == one["fields"] == {"plate": 4, "this_rank": 4, "predicted": 4, "skipped_existing": 0,
                                              "skipped_bad": 0}
    assert lines == [f"Dask cluster at {client.scheduler.address}"] and two["cluster"] == lines[0]
    assert len(two["timings"]["compute"]) == 2 and two["timings"]["compute"]["total_s"] > 0
    assert json.loads((tmp_path / "two" / "predictions.json").read_text())["fields"]["predicted"] == 4

    # resume: nothing to do; then one field lost (and a temporary of a killed write left) -> that field only
    stamps = {name: p.stat().st_mtime_ns for name, p in _files(tmp_path / "two").items()}
    assert predictor.predict_plate(plate, tmp_path / "two", progress=False, cluster=client)["fields"][
        "skipped_existing"] == 4
    lost = sorted(stamps)[0]
    (tmp_path / "two" / lost).unlink()
    (tmp_path / "two" / f".{Path(lost).name}.x1.part").write_bytes(b"half")
    third = predictor.predict_plate(plate, tmp_path / "two", progress=False, cluster=client)
    assert (third["fields"]["predicted"], third["fields"]["skipped_existing"]) == (1, 3)
    assert not list((tmp_path / "two").rglob("*.part"))
    _same_tiffs(tmp_path / "one", tmp_path / "two")
    kept = {n: p.stat().st_mtime_ns for n, p in _files(tmp_path / "two").items() if Path(n).name != Path(lost).name}
    assert len(kept) == 6 and all(stamp == stamps[n] for n, stamp in kept.items())  # the other 3 fields' files

    # an OME-Zarr prediction plate: the same arrays and provenance records as one process writes
    predictor.predict_plate(plate, tmp_path / "one.ome.zarr", progress=False)
    predictor.predict_plate(plate, tmp_path / "two.ome.zarr", progress=False, cluster=client)
    images = sorted(p.parent.relative_to(tmp_path / "one.ome.zarr")
                    for p in (tmp_path / "one.ome.zarr").glob("*/*/*/zarr.json"))
    assert len(images) == 4
    for image in images:  # one array per field image (level 0), its attributes say who made it
        one_image, two_image = tmp_path / "one.ome.zarr" / image, tmp_path / "two.ome.zarr" / image
        np.testing.assert_array_equal(zarr.open_array(one_image / "0", mode="r")[:],
                                      zarr.open_array(two_image / "0", mode="r")[:])
        record = [dict(zarr.open_group(path, mode="r").attrs)["vstain"] for path in (one_image, two_image)]
        assert record[0] == record[1] and record[0]["complete"]


def test_a_bad_field_on_a_worker_is_skipped_or_stops_the_run(tmp_path, client, lipids):
    plate = write_plate(tmp_path / "plate", wells=WELLS, fields=(1, 2), shape=(48, 64))
    plane = next((plate / "20x_images").glob("*_C03_T0001F002L01A04Z03C04.tif"))
    plane.write_bytes(plane.read_bytes()[: plane.stat().st_size // 2])  # header fine, pixels cut
    predictor = Predictor([lipids])
    manifest = predictor.predict_plate(plate, tmp_path / "out", progress=False, cluster=client, skip_bad_fields=True)
    assert manifest["fields"]["predicted"] == 3 and manifest["fields"]["skipped_bad"] == 1
    assert [b["field"] for b in manifest["bad_fields"]] == ["20x C03 F002"] and str(plane) in \
        manifest["bad_fields"][0]["problem"]
    assert len(_files(tmp_path / "out")) == 3
    with pytest.raises(PlateError, match="--skip-bad-fields") as error:
        predictor.predict_plate(plate, tmp_path / "stop", progress=False, cluster=client)
    assert str(plane) in str(error.value) and "\n" not in str(error.value)


@pytest.mark.slow
def test_a_killed_predict_reruns_only_the_missing_fields(tmp_path, client, lipids):
    plate = write_plate(tmp_path / "plate", wells=WELLS, fields=tuple(range(1, 9)), shape=(128, 128))
    out = tmp_path / "out"
    command = [sys.executable, "-m", "vstain", "predict", "--models", str(lipids), "--input", str(plate),
               "--output", str(out), "--tta", "8", "--no-progress", "--scheduler", client.scheduler.address]
    job = subprocess.Popen(command, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                           start_new_session=True, env={**os.environ, "NO_ALBUMENTATIONS_UPDATE": "1"})
    deadline = time.monotonic() + 300
    while not list(out.glob("*.tif")) and job.poll() is None and time.monotonic() < deadline:
        time.sleep(0.01)
    os.killpg(job.pid, signal.SIGKILL)
    job.wait(timeout=60)
    # fields a worker was already computing still finish (atomically); wait for the workers to be idle

    def _executing(dask_worker) -> int:  # nested: sent by value, the workers need not import this module
        return len(dask_worker.state.executing)

    while any(client.run(_executing).values()):
        time.sleep(0.1)
    before = {name: p.stat().st_mtime_ns for name, p in _files(out).items()}
    assert 1 <= len(before) < 16, "the job ended before it could be killed"
    assert not (out / "predictions.json").exists()
    rerun = Predictor([lipids], tta=8).predict_plate(plate, out, progress=False, cluster=client)
    assert (rerun["fields"]["predicted"], rerun["fields"]["skipped_existing"]) == (16 - len(before), len(before))
    assert all(_files(out)[name].stat().st_mtime_ns == stamp for name, stamp in before.items())
    assert len(_files(out)) == 16 and not list(out.glob(".*.part"))


# ------------------------------------------------------------------ refusals (no cluster is started)
def _one_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    return err


def test_a_gpu_or_torchrun_with_dask_workers_is_refused_in_one_line(tmp_path, lipids, capsys, monkeypatch):
    plate = write_plate(tmp_path / "plate", fields=(1,), shape=(32, 32))
    args = ["predict", "--models", str(lipids), "--input", str(plate), "--output", str(tmp_path / "out")]
    assert main([*args, "--device", "cuda", "--workers", "2"]) == 2
    assert "--device cuda: Dask workers (--workers, --scheduler, --cluster) predict on CPUs" in _one_line(capsys)
    assert main([*args, "--device", "cuda:1", "--scheduler", "tcp://127.0.0.1:1"]) == 2
    assert "predict on CPUs" in _one_line(capsys)
    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", "1")
    assert main([*args, "--workers", "2"]) == 2
    assert "rank 1 of 2 under torchrun" in _one_line(capsys)
    assert not (tmp_path / "out").exists()
    with pytest.raises(ConfigError, match="torchrun"):
        Predictor([lipids]).predict_plate(plate, tmp_path / "out", cluster=ClusterOptions(workers=2),
                                          rank=RankInfo(0, 2, 0))


def test_bundles_that_workers_cannot_load_as_this_run_are_refused(tmp_path, lipids, tiny_tiramisu):
    from vstain.inference.predictor import _Recipe, _worker_predictor

    plate = write_plate(tmp_path / "plate", fields=(1,), shape=(32, 32))
    in_memory = ModelBundle(tiny_tiramisu, BundleMetadata.from_dict(bundle_metadata()))
    with pytest.raises(BundleError, match="built in memory cannot be sent to Dask workers"):
        Predictor([in_memory]).predict_plate(plate, tmp_path / "out", cluster=ClusterOptions(workers=2))
    recipe = Predictor([lipids])._recipe()
    assert recipe.bundles == ((str(lipids.resolve()), Predictor([lipids]).bundles[0].content_hash()),)
    assert _worker_predictor(recipe).bundles[0].content_hash() == recipe.bundles[0][1]
    changed = _Recipe(bundles=((recipe.bundles[0][0], "0" * 64),), options=recipe.options)
    with pytest.raises(BundleError, match="changed since this run started"):
        _worker_predictor(changed)


def test_help_shows_the_dask_ways_and_its_examples_parse(capsys):
    import shlex

    from vstain.cli import build_parser

    with pytest.raises(SystemExit):
        main(["predict", "--help"])
    text = capsys.readouterr().out
    assert "--workers N" in text and "--scheduler ADDRESS" in text and "--cluster YAML" in text
    examples = [line.strip().removeprefix("torchrun --nproc-per-node 4 -m ").rstrip(" \\")
                for line in text.split("example:")[1].split("\n\n")[0].replace("\\\n", " ").splitlines()
                if line.strip()]
    assert len(examples) == 7  # one predicts in the fluorescence frame (alignment), one with intervals
    assert any("--workers 2" in e for e in examples) and any("--scheduler tcp://" in e for e in examples)
    for example in examples:
        args = build_parser().parse_args(shlex.split(example, comments=True)[1:])
        assert args.command == "predict" and args.models
