"""A one-glance figure of a rendered field: brightfield Z01 / Z04 / Z07 over the three stains."""

from __future__ import annotations

import io
import os
from pathlib import Path

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
    buffer = io.BytesIO()
    figure.savefig(buffer, dpi=dpi, format="png")
    plt.close(figure)
    # Every panel is grey: an 8-bit greyscale PNG is a quarter of matplotlib's RGBA one.
    from PIL import Image

    buffer.seek(0)
    grey = Image.open(buffer).convert("L")
    target = Path(path)
    with atomic_path(target) as tmp:
        grey.save(tmp, format="PNG", optimize=True)
    return target
