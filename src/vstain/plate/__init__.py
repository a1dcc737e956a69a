"""Plate folders: CV7000 names, indexing and validation, TIFF I/O, statistics, normalisers, splits, cache.

Knows nothing of torch.
"""

from vstain.plate.cache import CachedField, PlateCache, cache_plate, default_cache_folder, open_cached_field
from vstain.plate.index import Field, FieldKey, PlateIndex, PlateIssue, index_plate
from vstain.plate.naming import ImageName, format_name, parse_name
from vstain.plate.normalize import Normalizer
from vstain.plate.splits import (
    REFERENCE_HOLDOUT,
    Split,
    leave_wells_out,
    random_fields_out,
    random_split,
    read_split_keys,
)
from vstain.plate.stats import ChannelStats, PlateStats, compute_stats, reference_stats
from vstain.plate.tiff import read_tiff, tiff_header, write_tiff

__all__ = [
    "REFERENCE_HOLDOUT",
    "CachedField",
    "ChannelStats",
    "Field",
    "FieldKey",
    "ImageName",
    "Normalizer",
    "PlateCache",
    "PlateIndex",
    "PlateIssue",
    "PlateStats",
    "Split",
    "cache_plate",
    "compute_stats",
    "default_cache_folder",
    "format_name",
    "index_plate",
    "leave_wells_out",
    "open_cached_field",
    "parse_name",
    "random_fields_out",
    "random_split",
    "read_split_keys",
    "read_tiff",
    "reference_stats",
    "tiff_header",
    "write_tiff",
]
