"""Name → network registry used by configs and model bundles.

``build_model(name)`` returns the reference configuration; keyword overrides change single
arguments. ``model_arguments(name)`` gives the defaults as plain JSON-ready values so a bundle can
record exactly what was built (``build_model(name, **recorded)`` rebuilds it).
"""

from __future__ import annotations

import inspect
from typing import Any

from torch import nn

from vstain.errors import ConfigError
from vstain.models.lupi import LupiTiramisu
from vstain.models.multi import MultiTiramisu
from vstain.models.patchgan import PatchGAN
from vstain.models.tiramisu import Tiramisu

__all__ = ["MODELS", "MODEL_NAMES", "build_model", "model_arguments"]

#: Registered networks; each class's keyword defaults are its reference configuration.
MODELS: dict[str, type[nn.Module]] = {
    "tiramisu": Tiramisu,
    "lupi": LupiTiramisu,
    "patchgan": PatchGAN,
    "tiramisu_multi": MultiTiramisu,
}
MODEL_NAMES: tuple[str, ...] = tuple(MODELS)


def _json_ready(value: Any) -> Any:
    return list(value) if isinstance(value, tuple) else value


def _model_class(name: str) -> type[nn.Module]:
    try:
        return MODELS[name]
    except (KeyError, TypeError):
        raise ConfigError(
            f"unknown model {name!r}; choose one of {', '.join(MODEL_NAMES)}"
        ) from None


def model_arguments(name: str) -> dict[str, Any]:
    """Constructor arguments of model ``name`` with their reference defaults (tuples as lists)."""
    signature = inspect.signature(_model_class(name).__init__)
    return {
        parameter.name: _json_ready(parameter.default)
        for parameter in list(signature.parameters.values())[1:]
        if parameter.default is not inspect.Parameter.empty
    }


def build_model(name: str, **overrides: Any) -> nn.Module:
    """Build registered network ``name`` (see ``MODEL_NAMES``) with optional argument overrides.

    Raises
    ------
    ConfigError
        For an unknown name, an unknown argument or a value the network rejects.
    """
    cls = _model_class(name)
    arguments = model_arguments(name)
    unknown = sorted(set(overrides) - set(arguments))
    if unknown:
        raise ConfigError(
            f"unknown argument {unknown[0]!r} for model {name!r}; valid arguments: "
            f"{', '.join(arguments)}"
        )
    arguments.update(overrides)
    try:
        return cls(**arguments)
    except ConfigError:
        raise
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"model {name!r}: bad arguments {overrides}: {exc}") from exc
