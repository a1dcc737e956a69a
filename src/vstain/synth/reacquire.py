"""The stains of a synthetic plate's fields once more: without camera noise, or as a second exposure.

A synthetic plate knows what a real one cannot: the specimen behind every recorded stain. Rendering
the same fields again from ``plate.json`` (same parameters, seed and site) gives two reference
points for judging predictions (``vstain bench quality``, vstain/bench/quality.py):

* ``noise_free``: the expected counts, rounded, without shot or read noise, i.e. what a perfect
  predictor of the *mean* stain would output. Its error against the recorded stain is what any
  regression of the mean, however good, still loses to camera noise, pixelwise and in the
  pipeline's features (thresholds and object counts move when noise is removed).
* ``reacquired``: the same expected counts through a new exposure of the camera (independent
  noise), i.e. what the instrument would record if the field were imaged twice. Its error is the
  plate's own reproducibility: a measurement that differs this much between two acquisitions
  cannot ask a prediction to agree better.
* ``median_loading``: ``noise_free`` with every cell's CellTracker loading at the median of its
  spread (``cytoplasm_loading_sigma`` 0; the other stains as ``noise_free``). How much dye a cell
  takes up leaves no trace in vstain synth's brightfield, so this render knows all that a perfect
  predictor of the cytoplasm *from the brightfield* could, plus the stain's fine grain within each
  cell (kept as recorded; the brightfield does not show it either) and where each cell's body lies,
  which on some plates the brightfield barely shows away from the cell's edges: its error is a lower
  bound on the part of a cytoplasm error no model can remove (the median, because the challenge's
  pixel error is an absolute one), not always a tight one.

Only the three stains are written (C01-C03, with the plate's file names), never the brightfield;
the field is rendered whole (:func:`vstain.synth.field.render_field`), so a field costs about as much
as it did in ``vstain synth``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Literal, Sequence, get_args

import numpy as np

from vstain.errors import PlateError
from vstain.plate.tiff import write_tiff
from vstain.synth.field import render_field
from vstain.synth.noise import expose
from vstain.synth.parameters import SynthParameters
from vstain.synth.plate import MANIFEST, field_files
from vstain.vocabulary import TARGET_CHANNELS

__all__ = ["REACQUISITIONS", "Reacquisition", "render_stains_again"]

Reacquisition = Literal["noise_free", "reacquired", "median_loading"]
#: The renderings :func:`render_stains_again` makes.
REACQUISITIONS: tuple[Reacquisition, ...] = get_args(Reacquisition)


def render_stains_again(plate: str | Path, magnification: str, fields: Sequence[tuple[str, str]],
                        out: str | Path, *, kind: Reacquisition, noise_seed: int = 0) -> list[Path]:
    """Render the stains of ``fields`` of the synthetic ``plate`` again, as ``kind`` says.

    Parameters
    ----------
    plate
        A plate written by ``vstain synth`` (its ``plate.json`` lists every field's seed).
    magnification
        The magnification of ``fields``.
    fields
        ``(well, field)`` pairs such as ``("B04", "F001")``.
    out
        Folder that receives ``<magnification>_images/`` with the C01-C03 files, named as in the plate.
    kind
        ``"noise_free"`` (expected counts, rounded), ``"reacquired"`` (a new camera exposure) or
        ``"median_loading"`` (``noise_free`` with every cell's CellTracker loading at its median).
    noise_seed
        Seed of the new exposure's noise (with the field's own seed); unused for ``noise_free``.

    Returns
    -------
    list of Path
        The files written.

    Raises
    ------
    PlateError
        If the plate has no ``plate.json`` or does not hold one of ``fields``.
    """
    root = Path(plate)
    manifest_path = root / MANIFEST
    if not manifest_path.is_file():
        raise PlateError(f"{manifest_path}: not found; only plates written by `vstain synth` can be rendered again")
    manifest = json.loads(manifest_path.read_text())
    if kind not in REACQUISITIONS:
        raise ValueError(f"kind {kind!r}: choose one of {', '.join(REACQUISITIONS)}")
    entries = {(e["magnification"], e["well"], e["field"]): e for e in manifest["fields"]}
    params = SynthParameters.from_dict(manifest["parameters"][magnification]) \
        if magnification in manifest.get("parameters", {}) else None
    if params is not None and kind == "median_loading":
        # A spread of 0 still draws one normal per cell, so every later draw of the field (nuclei,
        # droplets, debris) stays as recorded; only the loadings become exp(0) = 1, their median.
        params = SynthParameters.from_dict({**params.to_dict(), "cytoplasm_loading_sigma": 0.0})
    folder = Path(out) / f"{magnification}_images"
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for well, field in fields:
        entry = entries.get((magnification, well, field))
        if entry is None or params is None:
            raise PlateError(f"{manifest_path}: no {magnification} field {well} {field}")
        seed = np.random.SeedSequence(entry["seed_entropy"])
        rendered = render_field(magnification=magnification, seed=seed, size=tuple(manifest["size"][magnification]),
                                params=params, site=int(field[1:]), camera_noise=False)
        # Independent of the recorded noise: its own stream from the field's seed and noise_seed.
        rng = np.random.default_rng(np.random.SeedSequence([*entry["seed_entropy"], int(noise_seed), 1]))
        files = field_files(manifest["plate_id"], well, int(field[1:]))
        for target, channel in TARGET_CHANNELS.items():
            image = rendered.targets[target]
            if kind == "reacquired":
                image = expose(image, rng, offset=params.camera_offset, gain=params.gain, read_noise=params.read_noise)
            path = folder / files[f"C{channel:02d}"]
            write_tiff(path, image)
            written.append(path)
    return written
