"""Moved to ``segany.atomic`` (one atomic-write helper for the whole package); this name stays
so code written against the old location keeps importing."""

from segany.atomic import (
    TEMP_SUFFIX,
    atomic_open,
    write_bytes_atomic,
    write_json_atomic,
    write_text_atomic,
)

__all__ = [
    "TEMP_SUFFIX",
    "atomic_open",
    "write_bytes_atomic",
    "write_json_atomic",
    "write_text_atomic",
]
