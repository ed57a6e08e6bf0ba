"""Typed errors raised at segany's public boundary.

Each subclasses the builtin a caller would naturally catch (``ValueError``, ``OSError``), so
``except ValueError`` keeps working while ``except SeganyError`` catches everything of ours.
"""

from __future__ import annotations


class SeganyError(Exception):
    """Base class of every error segany raises on purpose."""


class InputError(SeganyError, ValueError):
    """A user-supplied value (image, prompt, option) is not what the API expects."""


class CheckpointError(SeganyError, ValueError):
    """A weights file is missing keys, has unexpected or mis-shaped keys, or is unsafe."""


class DownloadError(SeganyError, OSError):
    """A checkpoint could not be downloaded whole and verified."""


class MissingExtraError(SeganyError, ImportError):
    """An optional feature needs a package from an extra that is not installed."""

    def __init__(self, feature: str, extra: str, package: str) -> None:
        super().__init__(
            f"{feature} needs the '{package}' package: install it with "
            f"`pip install 'segany[{extra}]'`"
        )
