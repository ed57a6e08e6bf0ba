"""Moved to ``segany.decoding`` (the Predictor uses it too); kept importable from here."""

from segany.decoding import PointDecoder

__all__ = ["PointDecoder"]
