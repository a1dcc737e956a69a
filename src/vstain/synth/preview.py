"""One-glance figures: a rendered field (brightfield Z01 / Z04 / Z07 over the three stains), and a
gallery of plate variants side by side.
"""

from __future__ import annotations

import io
import os
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from vstain.atomic import atomic_path
from vstain.synth.field import RenderedField


def save_preview(field: RenderedField, path: str | os.PathLike[str], *, dpi: int = 72) -> Path:
    """Write a 2x3 PNG panel of ``field`` (each image stretched to its 0.5-99.5 percentiles)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [
        (field.brightfield[0], "brightfield Z01"),
        (field.brightfield[3], "brightfield Z04"),
        (field.brightfield[6], "brightfield Z07"),
        (field.targets["nuclei"], "C01 nuclei (Hoechst)"),
        (field.targets["lipids"], "C02 lipids (BODIPY)"),
        (field.targets["cytoplasm"], "C03 cytoplasm (CellTracker)"),
    ]
    rows, cols = field.labels.shape
    panel_height = 4.0 * rows / cols
    figure, axes = plt.subplots(2, 3, figsize=(12, 2 * panel_height + 1.0))
    for axis, (image, title) in zip(axes.ravel(), panels):
        low, high = np.percentile(image, [0.5, 99.5])
        axis.imshow(image, cmap="gray", vmin=low, vmax=max(high, low + 1), interpolation="antialiased")
        axis.set_title(title, fontsize=11)
        axis.set_axis_off()
    px = field.params.pixel_size_um
    figure.suptitle(
        f"vstain synth, {field.params.magnification} ({px} µm/px, {rows}x{cols} px), "
        f"{field.n_nuclei} nuclei",
        fontsize=12,
    )
    figure.tight_layout()
    return _save_grey_png(figure, path, dpi=dpi)


def save_gallery(fields: Mapping[str, RenderedField], path: str | os.PathLike[str], *, dpi: int = 60,
                 panel_inches: float = 1.5) -> Path:
    """Write one row per variant (brightfield Z01 / Z04 / Z07, C01 / C02 / C03) to a greyscale PNG.

    Each column shares one display range over all rows (the 0.5-99.5 percentiles of the pooled
    pixels), so brighter, dimmer or noisier variants look so next to each other.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    titles = ("Z01", "Z04 (focus)", "Z07", "C01 nuclei", "C02 lipids", "C03 cytoplasm")

    def columns(field: RenderedField) -> list[np.ndarray]:
        return [field.brightfield[0], field.brightfield[3], field.brightfield[6],
                field.targets["nuclei"], field.targets["lipids"], field.targets["cytoplasm"]]

    images = {name: columns(field) for name, field in fields.items()}
    ranges = []
    for c in range(len(titles)):
        pooled = np.concatenate([images[name][c][::2, ::2].ravel() for name in images])
        low, high = np.percentile(pooled, [0.5, 99.5])
        ranges.append((low, max(high, low + 1)))
    n = len(images)
    figure, axes = plt.subplots(n, len(titles), figsize=(panel_inches * len(titles) + 1.1, panel_inches * n + 0.3),
                                squeeze=False)
    for r, (name, row) in enumerate(images.items()):
        for c, image in enumerate(row):
            axis = axes[r, c]
            axis.imshow(image, cmap="gray", vmin=ranges[c][0], vmax=ranges[c][1], interpolation="antialiased")
            axis.set_xticks([])
            axis.set_yticks([])
            if r == 0:
                axis.set_title(titles[c], fontsize=8)
            if c == 0:
                axis.set_ylabel(name, fontsize=8)
    figure.tight_layout(pad=0.3, h_pad=0.2, w_pad=0.2)
    return _save_grey_png(figure, path, dpi=dpi)


def _save_grey_png(figure: Any, path: str | Path, *, dpi: int) -> Path:
    """Save ``figure`` (closed afterwards) atomically as an 8-bit greyscale PNG; returns the path.

    Every panel of these figures is grey: an 8-bit greyscale PNG is a quarter of matplotlib's RGBA one.
    """
    import matplotlib.pyplot as plt
    from PIL import Image

    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png")
    plt.close(figure)
    buffer.seek(0)
    grey = Image.open(buffer).convert("L")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    with atomic_path(target) as tmp:
        grey.save(tmp, format="PNG", optimize=True)
    return target

