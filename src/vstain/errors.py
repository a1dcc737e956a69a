"""Errors a user can act on: one hierarchy under :class:`VstainError`.

Every exception raised for bad input derives from :class:`VstainError` and also from the built-in
exception it is (``ValueError`` for a bad value, ``FileNotFoundError`` for a missing path), so
library callers can catch either. The command line prints the message as one line
(``error: ...``, exit code 2) instead of a traceback.

Library messages name the function parameter at fault in backticks (```truth```); the command
line shows the matching flag instead (``--truth``), see :func:`message_for_cli`.
"""

from __future__ import annotations

import re
from typing import Mapping


class VstainError(Exception):
    """A problem with the user's input, files or configuration, explained in one line."""


class InvalidName(VstainError, ValueError):
    """A file name that is not a CV7000 image name."""


class ConfigError(VstainError, ValueError):
    """A setting (config key, argument) with an unknown name, a wrong type or value, or a missing path."""


class ConfigNotFound(ConfigError, FileNotFoundError):
    """A config file (or a file a config names) that does not exist."""


class SplitError(VstainError, ValueError):
    """A split CSV that cannot be used as asked (unknown subset, unknown fields, no validation field)."""


class SplitNotFound(SplitError, FileNotFoundError):
    """A split CSV that does not exist."""


class PlateError(VstainError, ValueError):
    """A plate folder or image that cannot be used as asked (missing planes, mixed sizes, wrong dtype, ...)."""


class PlateNotFound(PlateError, FileNotFoundError):
    """A plate, image or output folder path that does not exist."""


class BundleError(VstainError, ValueError):
    """A model bundle that cannot be read or does not fit the data."""


class AlignmentError(VstainError, ValueError):
    """An offsets file that cannot be read, or that does not fit the plate it is used with."""


_PARAMETER = re.compile(r"`([A-Za-z_][A-Za-z0-9_]*)`")


def message_for_cli(error: BaseException, flags: Mapping[str, str]) -> str:
    """``str(error)`` with each backticked parameter name that ``flags`` knows replaced by its flag.

    Parameters
    ----------
    error
        The exception to show.
    flags
        Parameter name -> how the command line spells it, e.g. ``{"truth": "--truth"}``.

    Examples
    --------
    >>> message_for_cli(PlateError("x: no such folder (`truth`)"), {"truth": "--truth"})
    'x: no such folder (--truth)'
    """
    return _PARAMETER.sub(lambda m: flags.get(m.group(1), m.group(0)), str(error))
