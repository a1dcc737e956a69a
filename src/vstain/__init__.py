"""vstain: virtual staining of brightfield z-stacks into fluorescence images.

``import vstain`` is light: the conveniences that need torch (:func:`load_model`,
:class:`Predictor`) are imported on first use.
"""

from __future__ import annotations

from typing import Any

__version__ = "0.1.0"

_LAZY = {
    "load_model": ("vstain.inference.bundle", "load_model"),
    "Predictor": ("vstain.inference.predictor", "Predictor"),
}

__all__ = ["__version__", *_LAZY]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        module_name, attribute = _LAZY[name]
        value = getattr(importlib.import_module(module_name), attribute)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'vstain' has no attribute {name!r}")
