"""Tables describing a :class:`~vstain.plate.index.PlateIndex` for people (``vstain check``)."""

from __future__ import annotations

from collections import Counter, defaultdict

import pandas as pd

from vstain.errors import InvalidName
from vstain.plate.index import PlateIndex
from vstain.plate.naming import parse_name
from vstain.vocabulary import MAGNIFICATIONS, TARGETS


def field_table(index: PlateIndex) -> pd.DataFrame:
    """One row per valid field: brightfield planes, stains, mask and image size present."""
    return index.summary()


def well_table(index: PlateIndex) -> pd.DataFrame:
    """One row per well: how many valid fields, how many carry each stain and a mask, sizes, problems.

    A well whose every field has an error still gets a row (0 fields), so a 384-well plate reads
    as one screen per magnification with the broken wells visible.
    """
    fields_by_well = defaultdict(list)
    for f in index.fields:
        fields_by_well[(f.magnification, f.well)].append(f)
    issues_by_well = _issues_per_well(index)
    order = {m: i for i, m in enumerate(MAGNIFICATIONS)}
    rows = []
    for mag, well in sorted(set(fields_by_well) | set(issues_by_well), key=lambda k: (order.get(k[0], 9), k[1])):
        fields = fields_by_well.get((mag, well), [])
        sizes = Counter("x".join(map(str, f.shape)) if f.shape else "?" for f in fields)
        rows.append(
            {
                "magnification": mag,
                "well": well,
                "fields": len(fields),
                **{t: sum(t in f.targets for f in fields) for t in TARGETS},
                "mask": sum(f.mask is not None for f in fields),
                "size": ",".join(sorted(sizes)) or "-",
                "issues": issues_by_well.get((mag, well), 0),
            }
        )
    return pd.DataFrame(rows)


def _issues_per_well(index: PlateIndex) -> Counter:
    """Issues counted per (magnification, well), where the issue's field or its file name tells the well."""
    single_mag = index.magnifications[0] if len(index.magnifications) == 1 else None
    counts: Counter = Counter()
    for issue in index.issues:
        if issue.field is not None:  # the index knew the field (always for zarr plates)
            counts[(issue.field[0], issue.field[1])] += 1
            continue
        try:
            well = parse_name(issue.path.name).well
        except InvalidName:
            continue
        folder = issue.path.parent.name
        mag = folder.removesuffix("_images") if folder.removesuffix("_images") in MAGNIFICATIONS else single_mag
        if mag is not None:
            counts[(mag, well)] += 1
    return counts
