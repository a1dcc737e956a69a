"""Plate folders: CV7000 names, indexing and validation, TIFF I/O, statistics, splits, cache.

Knows nothing of torch.
"""

from vstain.plate.index import Field, FieldKey, PlateIndex, PlateIssue, index_plate
from vstain.plate.naming import ImageName, format_name, parse_name
from vstain.plate.tiff import read_tiff, write_tiff

__all__ = [
    "Field",
    "FieldKey",
    "ImageName",
    "PlateIndex",
    "PlateIssue",
    "format_name",
    "index_plate",
    "parse_name",
    "read_tiff",
    "write_tiff",
]
