"""MeasureObjectSizeShape, MeasureObjectIntensity and per-image aggregation (docs/cellprofiler-pipeline.md §4.6, §1.3).

Per-object tables are :class:`pandas.DataFrame` indexed by object number 1..N (N = the largest
label) with CellProfiler's feature names:

* :func:`size_shape` — ``AreaShape_{Area, Perimeter, FormFactor, Compactness, Solidity,
  MeanRadius}``: Area = pixel count; Perimeter = scikit-image's 4-neighbourhood weighted
  boundary count (computed for all objects at once, bit-identical to ``skimage.measure.perimeter``
  on each object's crop); FormFactor = 4πA/P²; Compactness = P²/max(4πA, 1); Solidity =
  A / pixel count of ``convex_hull_image``; MeanRadius = mean Euclidean distance transform over
  the object on its bounding box padded by 1 px.
* :func:`intensity` — ``Intensity_{IntegratedIntensity, MeanIntensity, StdIntensity}_<image>``
  (sum, mean, population std over the object's pixels).
* :func:`aggregate` — ``Mean_<objects>_<feature>`` / ``StDev_<objects>_<feature>``: numpy mean
  and population std over the objects' finite values; NaN when none.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
import scipy.ndimage as ndi
from skimage.morphology import convex_hull_image

SHAPE_FEATURES = ("Area", "Compactness", "FormFactor", "MeanRadius", "Perimeter", "Solidity")
INTENSITY_FEATURES = ("IntegratedIntensity", "MeanIntensity", "StdIntensity")

_ORTHOGONAL = ((-1, 0), (1, 0), (0, -1), (0, 1))
_DIAGONAL = ((-1, -1), (-1, 1), (1, -1), (1, 1))
# scikit-image's perimeter weights for the code 1 + 2·(orthogonal border nbrs) + 10·(diagonal).
_PERIMETER_WEIGHTS = np.zeros(50)
_PERIMETER_WEIGHTS[[5, 7, 15, 17, 25, 27]] = 1.0
_PERIMETER_WEIGHTS[[21, 33]] = np.sqrt(2.0)
_PERIMETER_WEIGHTS[[13, 23]] = (1.0 + np.sqrt(2.0)) / 2.0


def _shifted(labels: np.ndarray, dy: int, dx: int) -> np.ndarray:
    """``labels`` moved so that out[y, x] = labels[y + dy, x + dx], zero outside the image."""
    h, w = labels.shape
    out = np.zeros_like(labels)
    out[max(-dy, 0) : h - max(dy, 0), max(-dx, 0) : w - max(dx, 0)] = labels[
        max(dy, 0) : h - max(-dy, 0), max(dx, 0) : w - max(-dx, 0)
    ]
    return out


def perimeters(labels: np.ndarray) -> np.ndarray:
    """Perimeter of every object 1..N as ``skimage.measure.perimeter(obj, 4)`` gives it."""
    n = int(labels.max(initial=0))
    padded = np.pad(labels, 1)
    border = np.zeros(padded.shape, bool)
    for dy, dx in _ORTHOGONAL:
        border |= _shifted(padded, dy, dx) != padded
    border &= padded > 0
    border_labels = np.where(border, padded, 0)
    code = border.astype(np.int64)
    for weight, offsets in ((2, _ORTHOGONAL), (10, _DIAGONAL)):
        for dy, dx in offsets:
            neighbour = _shifted(border_labels, dy, dx)
            code += weight * ((neighbour == border_labels) & border)
    return np.bincount(border_labels[border], weights=_PERIMETER_WEIGHTS[code[border]], minlength=n + 1)[1:]


def _hull_areas_and_mean_radii(labels: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Convex-hull pixel counts and mean radii of objects 1..n (NaN for absent labels).

    CellProfiler takes each object's distance transform on its bounding box padded by 1 px. For
    an object with no other object in that padded box this equals the whole image's distance
    transform (the 1-px frame is background and closer than anything beyond it), so one global
    transform serves every isolated object and only touching objects need their own.
    """
    padded = np.pad(labels, 1)
    global_edt: np.ndarray | None = None
    convex_area = np.full(n, np.nan)
    mean_radius = np.full(n, np.nan)
    hull_cache: dict[tuple, float] = {}
    for k, box in enumerate(ndi.find_objects(labels)):
        if box is None:
            continue
        crop = tuple(slice(b.start, b.stop + 2) for b in box)  # bbox + 1 px, in padded coordinates
        sub = padded[crop]
        obj = sub == k + 1
        key = (obj.shape, obj.tobytes())  # small droplets repeat a handful of shapes
        if key not in hull_cache:
            hull_cache[key] = convex_hull_image(obj[1:-1, 1:-1]).sum()
        convex_area[k] = hull_cache[key]
        if np.any(sub[~obj]):  # another object inside the padded box
            mean_radius[k] = ndi.distance_transform_edt(obj)[obj].mean()
        else:
            if global_edt is None:
                global_edt = ndi.distance_transform_edt(padded > 0)
            mean_radius[k] = global_edt[crop][obj].mean()
    return convex_area, mean_radius


def size_shape(labels: np.ndarray) -> pd.DataFrame:
    """AreaShape features of every object of ``labels`` (index = object number 1..N)."""
    n = int(labels.max(initial=0))
    index = pd.RangeIndex(1, n + 1, name="ObjectNumber")
    area = np.bincount(labels.ravel(), minlength=n + 1)[1:].astype(float)
    perimeter = perimeters(labels)
    convex_area, mean_radius = _hull_areas_and_mean_radii(labels, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        form_factor = 4.0 * np.pi * area / perimeter**2
        compactness = perimeter**2 / np.maximum(4.0 * np.pi * area, 1.0)
        solidity = area / convex_area
    table = {
        "Area": area,
        "Compactness": compactness,
        "FormFactor": form_factor,
        "MeanRadius": mean_radius,
        "Perimeter": perimeter,
        "Solidity": solidity,
    }
    table = {name: np.where(area > 0, values, np.nan) for name, values in table.items()}
    return pd.DataFrame({f"AreaShape_{k}": v for k, v in table.items()}, index=index)


def intensity(labels: np.ndarray, image: np.ndarray, name: str) -> pd.DataFrame:
    """Integrated, mean and std intensity of ``image`` over every object (index 1..N)."""
    n = int(labels.max(initial=0))
    inside = labels > 0  # only labelled pixels matter; nuclei cover a few % of a field
    flat = labels[inside]
    values = image[inside].astype(np.float64)
    count = np.bincount(flat, minlength=n + 1)[1:].astype(float)
    total = np.bincount(flat, weights=values, minlength=n + 1)[1:]
    with np.errstate(divide="ignore", invalid="ignore"):
        mean = total / count
        centred = values - np.concatenate([[0.0], mean])[flat]
        variance = np.bincount(flat, weights=centred * centred, minlength=n + 1)[1:] / count
    present = count > 0
    return pd.DataFrame(
        {
            f"Intensity_IntegratedIntensity_{name}": np.where(present, total, np.nan),
            f"Intensity_MeanIntensity_{name}": mean,
            f"Intensity_StdIntensity_{name}": np.sqrt(variance),
        },
        index=pd.RangeIndex(1, n + 1, name="ObjectNumber"),
    )


def measure_objects(labels: np.ndarray, images: dict[str, np.ndarray]) -> pd.DataFrame:
    """Shape features plus intensity features in each of ``images`` ({CellProfiler name: image})."""
    tables = [size_shape(labels)] + [intensity(labels, image, name) for name, image in images.items()]
    return pd.concat(tables, axis=1)


def aggregate(table: pd.DataFrame, objects: str) -> dict[str, float]:
    """``Mean_<objects>_<col>`` and ``StDev_<objects>_<col>`` over the finite values of each column."""
    out: dict[str, float] = {}
    for column in table.columns:
        values = table[column].to_numpy(dtype=float)
        values = values[np.isfinite(values)]
        out[f"Mean_{objects}_{column}"] = float(np.mean(values)) if values.size else float("nan")
        out[f"StDev_{objects}_{column}"] = float(np.std(values)) if values.size else float("nan")
    return out
