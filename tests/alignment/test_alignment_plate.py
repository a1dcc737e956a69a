"""``align_fields`` as a plate job: the same table on a Dask cluster, resumed after a kill, refusals."""

from __future__ import annotations

import os

import pytest

import vstain.alignment.plate as plate_module
from vstain.alignment.plate import align_fields
from vstain.cli import main
from vstain.errors import AlignmentError
from vstain.plate.index import index_plate
from vstain.plate.jobs import ClusterOptions


@pytest.fixture(scope="module")
def misaligned_plate(tmp_path_factory):
    from vstain.synth.plate import generate_plate

    plate = tmp_path_factory.mktemp("align-jobs") / "plate"
    generate_plate(plate, magnification="40x", wells=2, fields=2, seed=3, size=(384, 384), max_shift_px=6.0)
    return plate


def test_two_worker_processes_give_the_table_of_one_process(misaligned_plate):
    fields = index_plate(misaligned_plate).fields
    here = align_fields(fields)
    spread = align_fields(fields, cluster=ClusterOptions(workers=2))
    assert spread.table.to_csv() == here.table.to_csv()
    assert spread.relatives == here.relatives and len(spread.seconds) == len(fields)


def test_a_rerun_reuses_the_saved_fields_and_only_those(misaligned_plate, tmp_path, monkeypatch):
    fields = index_plate(misaligned_plate).fields
    saved = tmp_path / "offsets.csv.fields"
    first = align_fields(fields, results=saved)
    assert sorted(p.name for p in saved.iterdir()) == [
        "40x_B02_F001.json", "40x_B02_F002.json", "40x_B03_F001.json", "40x_B03_F002.json"]
    estimated = []
    real = plate_module.estimate_one_field

    def counting(field, *args, **kwargs):
        estimated.append(field.label)
        return real(field, *args, **kwargs)

    monkeypatch.setattr(plate_module, "estimate_one_field", counting)
    # A run killed after two fields: the others' files are gone; the rerun estimates only those.
    for name in ("40x_B02_F002.json", "40x_B03_F001.json"):
        (saved / name).unlink()
    again = align_fields(fields, results=saved)
    assert sorted(estimated) == ["40x B02 F002", "40x B03 F001"] and again.reused == 2
    assert again.table.to_csv() == first.table.to_csv()
    assert again.relatives == first.relatives  # the matches came back from the files exactly
    # A field whose image changed is estimated again; so is every field under other settings.
    estimated.clear()
    stain = fields[0].targets["lipids"]
    os.utime(stain, ns=(stain.stat().st_atime_ns, stain.stat().st_mtime_ns + 10**9))
    align_fields(fields, results=saved)
    assert estimated == [fields[0].label]
    estimated.clear()
    align_fields(fields, results=saved, stains=["lipids"])
    assert len(estimated) == len(fields)


def test_estimates_against_a_model_are_not_saved_for_a_run_without_it(misaligned_plate, tmp_path):
    import numpy as np

    saved = tmp_path / "offsets.csv.fields"
    fields = index_plate(misaligned_plate).fields
    align_fields(fields, results=saved, predict=lambda brightfield: {"lipids": np.asarray(brightfield[3], np.float32)})
    assert not saved.exists()


def test_a_model_is_not_sent_to_a_cluster(misaligned_plate):
    with pytest.raises(AlignmentError, match="in this process"):
        align_fields(index_plate(misaligned_plate).fields, predict=lambda brightfield: {},
                     cluster=ClusterOptions(workers=2))


def test_align_command_on_workers_writes_the_same_csv_and_cleans_up(misaligned_plate, tmp_path, capsys):
    here, spread = tmp_path / "here.csv", tmp_path / "spread.csv"
    assert main(["align", str(misaligned_plate), "--out", str(here), "--quiet", "--no-plot"]) == 0
    assert main(["align", str(misaligned_plate), "--out", str(spread), "--quiet", "--no-plot", "--workers", "2"]) == 0
    assert spread.read_text() == here.read_text()
    assert "local Dask cluster: 2 workers" in capsys.readouterr().out
    assert not (tmp_path / "spread.csv.fields").exists()
    assert main(["align", str(misaligned_plate), "--out", str(spread), "--workers", "2",
                 "--model", str(tmp_path / "any.safetensors")]) == 2
    assert "--model aligns in this process" in capsys.readouterr().err
