"""Errors a user can act on.

Every exception raised for bad input derives from :class:`VstainError`; the command line prints
its message as one line (``error: ...``) and exits non-zero instead of showing a traceback.
"""

from __future__ import annotations


class VstainError(Exception):
    """A problem with the user's input, files or configuration, explained in one line."""


class InvalidName(VstainError, ValueError):
    """A file name that is not a CV7000 image name."""


class PlateError(VstainError):
    """A plate folder that cannot be used as asked (missing files, mixed sizes, ...)."""


class ConfigError(VstainError):
    """A configuration file with an unknown key, a wrong type or a missing path."""
