"""OME-Zarr HCS plates: lossless conversion both ways, NGFF validity (independent readers), check, resume."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import tifffile
from plate_files import make_plate

from vstain.cli import main
from vstain.errors import PlateError
from vstain.plate.cache import PlateCache, cache_plate
from vstain.plate.convert import convert_plate
from vstain.plate.index import index_plate
from vstain.plate.omezarr import (
    BRIGHTFIELD_LABELS,
    CHANNEL_LABELS,
    PlateImage,
    PlateLayout,
    create_plate,
    write_field,
)
from vstain.plate.stats import compute_stats
from vstain.vocabulary import PIXEL_SIZE_UM


@pytest.fixture
def tiff_plate(tmp_path: Path) -> Path:
    root = tmp_path / "plate"
    make_plate(root, wells=("B03", "C02"), fields=2, shape=(24, 40), seed=3)
    make_plate(root, magnification="40x", wells=("B03",), fields=1, shape=(20, 20), seed=4)
    masks = root / "masks" / "20x_images"
    masks.mkdir(parents=True)
    rng = np.random.default_rng(5)
    name = "AssayPlate_Greiner_#655090_B03_T0001F002L01A01Z01C01.tif"
    tifffile.imwrite(masks / name, rng.integers(0, 9, (24, 40), dtype=np.uint16))
    return root


def tiffs(root: Path) -> dict[str, np.ndarray]:
    return {str(p.relative_to(root)): tifffile.imread(p) for p in sorted(root.rglob("*.tif"))}


def test_round_trip_is_lossless_and_keeps_names_wells_fields_and_masks(tiff_plate, tmp_path):
    zarr_plate = tmp_path / "plate.ome.zarr"
    report = convert_plate(tiff_plate, zarr_plate)
    assert (report.fields, report.converted, report.skipped) == (5, 5, 0)
    back = tmp_path / "back"
    convert_plate(zarr_plate, back)
    original, restored = tiffs(tiff_plate), tiffs(back)
    assert sorted(original) == sorted(restored) and len(original) == 5 * 10 + 1
    for name, image in original.items():
        assert restored[name].dtype == np.uint16
        np.testing.assert_array_equal(restored[name], image, err_msg=name)
    # the zarr plate indexes to the same fields, with the same file names
    a, b = index_plate(tiff_plate), index_plate(zarr_plate, check_pixels=True)
    assert b.issues == []
    assert [f.key for f in a.fields] == [f.key for f in b.fields]
    for fa, fb in zip(a.fields, b.fields):
        assert [p.name for p in fa.files] == [p.name for p in fb.files]
        assert (fa.mask is None) == (fb.mask is None) and fa.shape == fb.shape and fa.plate == fb.plate
        np.testing.assert_array_equal(fa.read_brightfield(), fb.read_brightfield())
    assert compute_stats(a.fields).to_dict()["stats"] == compute_stats(b.fields).to_dict()["stats"]


def test_written_plate_is_valid_ngff_for_independent_readers(tiff_plate, tmp_path):
    from ome_zarr.io import parse_url
    from ome_zarr.reader import Plate, Reader
    from ome_zarr_models import open_ome_zarr
    from ome_zarr_models.v05.hcs import HCS

    zarr_plate = tmp_path / "plate.ome.zarr"
    convert_plate(tiff_plate, zarr_plate)
    model = open_ome_zarr(zarr_plate)  # ome-zarr-models validates every group against the NGFF 0.5 schema
    assert isinstance(model, HCS)
    plate = model.ome_attributes.plate
    assert [w.path for w in plate.wells] == ["B/03", "C/02"]
    assert [(a.id, a.name) for a in plate.acquisitions] == [(0, "20x"), (1, "40x")]
    wells = list(model.well_groups)
    assert [len(w.ome_attributes.well.images) for w in wells] == [3, 2]  # B03: 2 fields at 20x, 1 at 40x
    # ome-zarr-py's reader (napari's) walks a plate of one magnification and stitches its fields
    # (it assumes one field size per plate: a plate per magnification is what it can show)
    convert_plate(tiff_plate, tmp_path / "20x.ome.zarr", magnification="20x")
    nodes = list(Reader(parse_url(str(tmp_path / "20x.ome.zarr")))())
    plate_node = next(n for n in nodes if Plate in [type(s) for s in n.specs])
    assert plate_node.data[0].shape[-2:] == (2 * 24, 2 * 40)  # wells B03, C02: rows B, C x columns 02, 03
    document = json.loads((zarr_plate / "B" / "03" / "0" / "zarr.json").read_text())["attributes"]
    multiscales = document["ome"]["multiscales"][0]
    assert [a["name"] for a in multiscales["axes"]] == ["c", "y", "x"]
    scale = multiscales["datasets"][0]["coordinateTransformations"][0]["scale"]
    assert scale == [1.0, PIXEL_SIZE_UM["20x"], PIXEL_SIZE_UM["20x"]]
    assert [c["label"] for c in document["ome"]["omero"]["channels"]] == list(CHANNEL_LABELS)
    identity = document["vstain"]["identity"]
    assert (identity["well"], identity["field"], identity["magnification"]) == ("B03", 1, "20x")
    array = json.loads((zarr_plate / "B" / "03" / "0" / "0" / "zarr.json").read_text())
    assert array["chunk_grid"]["configuration"]["chunk_shape"] == [1, 24, 40]  # one chunk per plane
    assert json.loads((zarr_plate / "B" / "03" / "1" / "labels" / "zarr.json").read_text())[
        "attributes"]["ome"]["labels"] == ["nuclei"]


def test_an_interrupted_conversion_redoes_only_unfinished_fields(tiff_plate, tmp_path):
    zarr_plate = tmp_path / "plate.ome.zarr"
    convert_plate(tiff_plate, zarr_plate)
    # as a kill leaves it: one field not marked complete, one chunk temporary left behind
    image = zarr_plate / "C" / "02" / "1"
    document = json.loads((image / "zarr.json").read_text())
    document["attributes"]["vstain"]["complete"] = False
    (image / "zarr.json").write_text(json.dumps(document))
    (image / "0" / "c" / "4").mkdir(parents=True, exist_ok=True)
    (image / "0" / "c" / "4" / "0.deadbeef.partial").write_bytes(b"half")
    assert "never completely written" in str(index_plate(zarr_plate).issues[0])
    report = convert_plate(tiff_plate, zarr_plate)
    assert (report.converted, report.skipped) == (1, 4)
    assert not list(zarr_plate.rglob("*.partial")) and index_plate(zarr_plate).issues == []
    # converting back resumes the same way
    back = tmp_path / "back"
    convert_plate(zarr_plate, back)
    victim = next(back.rglob("*C02_T0001F002*Z03C04.tif"))
    victim.unlink()
    assert convert_plate(zarr_plate, back).converted == 1
    assert victim.is_file()


def test_conversion_refuses_what_it_cannot_do_losslessly(tiff_plate, tmp_path):
    with pytest.raises(PlateError, match="lies inside the plate"):
        convert_plate(tiff_plate, tiff_plate / "inside.ome.zarr")
    other = tmp_path / "other"
    make_plate(other, wells=("D04",), fields=1, shape=(24, 40), seed=1)
    convert_plate(other, tmp_path / "x.ome.zarr")
    with pytest.raises(PlateError, match="exists and holds another vstain layout"):
        convert_plate(tiff_plate, tmp_path / "x.ome.zarr")
    (tiff_plate / "20x_images" / "AssayPlate_Greiner_#655090_B03_T0001F001L01A04Z02C04.tif").unlink()
    with pytest.raises(PlateError, match=r"lacks brightfield plane\(s\)"):
        convert_plate(tiff_plate, tmp_path / "y.ome.zarr")
    assert convert_plate(tiff_plate, tmp_path / "y.ome.zarr", skip_invalid=True).fields == 4


def _layout(shape=(8, 8), labels=CHANNEL_LABELS) -> PlateLayout:
    image = PlateImage(magnification="20x", plate="P", well="B02", field=1, timepoint=1,
                       channels=tuple((label, f"P_B02_T0001F001L01A01Z01{label[:3]}.tif") for label in labels),
                       shape=shape)
    return PlateLayout(name="P", images=[image, PlateImage(**{**image.__dict__, "well": "B03"})])


def _fill(root: Path, layout: PlateLayout) -> None:
    rng = np.random.default_rng(0)
    for image in layout.images:
        write_field(root, layout, image.key,
                    ((label, rng.integers(0, 9, image.shape, dtype=np.uint16)) for label in image.labels))


def test_check_reports_zarr_problems_with_the_tiff_messages(tmp_path, capsys):
    root = tmp_path / "bad.ome.zarr"
    missing_plane = [label for label in CHANNEL_LABELS if label != "C04Z03"]
    layout = _layout(labels=tuple(missing_plane))
    create_plate(root, layout)
    _fill(root, layout)
    index = index_plate(root)
    assert {str(i.message) for i in index.errors} == {"field B02 F001 lacks brightfield plane(s) C04Z03",
                                                      "field B03 F001 lacks brightfield plane(s) C04Z03"}
    # a missing well, a plane never written, a corrupt chunk (found with --deep), a float array
    root = tmp_path / "plate.ome.zarr"
    layout = _layout()
    create_plate(root, layout)
    _fill(root, layout)
    shutil.rmtree(root / "B" / "03")
    assert main(["check", str(root)]) == 1
    out = capsys.readouterr().out
    assert "well B03 is listed in the plate but missing" in out
    chunk = root / "B" / "02" / "0" / "0" / "c" / "5" / "0" / "0"
    chunk.write_bytes(b"\x00" * 7)
    assert main(["check", str(root)]) == 1  # names and headers only: the corrupt chunk is not read
    assert "pixel data unreadable" not in capsys.readouterr().out
    assert main(["check", str(root), "--deep"]) == 1
    assert "C04Z03: pixel data unreadable" in capsys.readouterr().out
    chunk.unlink()
    index = index_plate(root)
    assert any("C04Z03 (P_B02_T0001F001L01A01Z01C04.tif) never written: no chunk c/5/0/0" in i.message
               for i in index.errors)


def test_check_refuses_non_uint16_and_badly_chunked_arrays(tmp_path):
    import zarr

    root = tmp_path / "plate.ome.zarr"
    layout = _layout()
    create_plate(root, layout)
    _fill(root, layout)
    array = root / "B" / "03" / "0" / "0"
    shutil.rmtree(array)
    zarr.create_array(store=array, shape=(10, 8, 8), chunks=(1, 8, 8), dtype="float32", dimension_names="cyx")
    shutil.rmtree(root / "B" / "02" / "0" / "0")
    zarr.create_array(store=root / "B" / "02" / "0" / "0", shape=(10, 8, 8), chunks=(1, 4, 4), dtype="uint16")
    messages = sorted(i.message for i in index_plate(root).errors)
    assert messages == ["chunks (1, 4, 4): expected one chunk per plane (1, 8, 8)",
                        "float32 data; CV7000 images are uint16"]


def test_zarr_plates_feed_the_cache_and_the_stats_command(tiff_plate, tmp_path, capsys):
    zarr_plate = tmp_path / "plate.ome.zarr"
    convert_plate(tiff_plate, zarr_plate)
    index = index_plate(zarr_plate, magnification="20x")
    report = cache_plate(index.fields, tmp_path / "cache", plate=zarr_plate)
    assert len(report.written) == 4
    cached = PlateCache(tmp_path / "cache").open(("20x", "B03", 2))
    np.testing.assert_array_equal(cached.brightfield, index.select(keys=[("20x", "B03", 2)])[0].read_brightfield())
    assert cached.mask is not None
    assert cache_plate(index.fields, tmp_path / "cache").skipped == [f.key for f in index.fields]
    assert main(["stats", str(zarr_plate), "--out", str(tmp_path / "a.json"), "--no-progress"]) == 0
    assert main(["stats", str(tiff_plate), "--out", str(tmp_path / "b.json"), "--workers", "2",
                 "--no-progress"]) == 0
    a, b = (json.loads((tmp_path / n).read_text()) for n in ("a.json", "b.json"))
    assert a["stats"] == b["stats"] and not (tmp_path / "a.json.fields").exists()


def test_stats_resume_from_saved_field_histograms(tiff_plate, tmp_path):
    fields = index_plate(tiff_plate).fields
    whole = compute_stats(fields)
    partial = tmp_path / "parts"
    compute_stats(fields[:2], results=partial)
    assert len(list(partial.glob("*.npz"))) == 2
    resumed = compute_stats(fields, results=partial)
    assert resumed.to_dict()["stats"] == whole.to_dict()["stats"]
    assert len(list(partial.glob("*.npz"))) == len(fields)


def test_brightfield_labels_are_the_stats_keys():
    from vstain.plate.stats import BRIGHTFIELD_KEYS

    assert BRIGHTFIELD_LABELS == BRIGHTFIELD_KEYS


def test_importing_the_plate_package_stays_light():
    code = ("import sys, vstain.plate, vstain.plate.omezarr, vstain.plate.jobs, vstain.plate.convert\n"
            "heavy = [m for m in ('torch', 'zarr', 'dask', 'distributed', 'ome_zarr') if m in sys.modules]\n"
            "assert heavy == [], heavy\n")
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr


def _create_share(root: str, layout: PlateLayout, keys: list, barrier, errors) -> None:
    try:
        barrier.wait(timeout=30)
        create_plate(root, layout, images=keys)
    except Exception as exc:  # reported to the test, which names it
        errors.put(f"{type(exc).__name__}: {exc}")


def test_processes_create_one_plate_at_the_same_moment(tmp_path):
    # torchrun ranks writing one prediction plate all create its root and wells; zarr's own
    # "open or create" raised ContainsGroupError for a slower rank in ~1 of 12 simultaneous starts.
    # Four ranks: two with a field each, two with none (more ranks than fields).
    import multiprocessing

    context = multiprocessing.get_context("fork")  # fast starts, so the ranks really overlap
    layout = _layout()
    create_plate(tmp_path / "warm.ome.zarr", layout)  # imports done here, not in each child
    shares = [[image.key] for image in layout.images] + [[], []]
    failures = []
    for attempt in range(30):
        root = str(tmp_path / f"plate-{attempt}.ome.zarr")
        barrier, errors = context.Barrier(len(shares)), context.Queue()
        ranks = [context.Process(target=_create_share, args=(root, layout, keys, barrier, errors)) for keys in shares]
        for rank in ranks:
            rank.start()
        for rank in ranks:
            rank.join(timeout=60)
        assert [r.exitcode for r in ranks] == [0] * len(shares)
        while not errors.empty():
            failures.append(errors.get())
    assert failures == []
    _fill(root, layout)  # every share exists: each field image can be written and read back
    assert len(index_plate(root).fields) == 2 and not index_plate(root).errors
