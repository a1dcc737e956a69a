"""Fixtures of the inference tests (defined in tiny_bundles.py, which test files import directly)."""

from tiny_bundles import tiny_tiramisu  # noqa: F401  (a fixture: importing it here registers it)
