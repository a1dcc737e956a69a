"""Fixtures of the plate tests (defined in plate_files.py, which test files import directly)."""

from plate_files import plate  # noqa: F401  (a fixture: importing it here registers it)
