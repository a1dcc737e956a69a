"""Brightfield-to-stain offsets: estimation per field and per site, resampling into either frame.

See docs/alignment.md. Knows nothing of torch.
"""

from vstain.alignment.estimate import REFERENCES, Offset, estimate_field, estimate_offset, reference_image
from vstain.alignment.offsets import MIN_CONFIDENCE, OffsetRow, OffsetTable, SiteOffsets, resolve
from vstain.alignment.plate import Alignment, align_fields
from vstain.alignment.resample import to_brightfield_frame, to_fluorescence_frame, translate

__all__ = [
    "MIN_CONFIDENCE",
    "REFERENCES",
    "Alignment",
    "Offset",
    "OffsetRow",
    "OffsetTable",
    "SiteOffsets",
    "align_fields",
    "estimate_field",
    "estimate_offset",
    "reference_image",
    "resolve",
    "to_brightfield_frame",
    "to_fluorescence_frame",
    "translate",
]
