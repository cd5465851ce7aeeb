"""Arguments reduced to one canonical digest, so an approval binds the exact call.

The canonical form is JSON with nothing left to choice:

- ``None``, ``True``, ``False`` are ``null``, ``true``, ``false``;
- an integer is its decimal digits (any size, ``-`` for negatives);
- a float is Python's shortest round-tripping ``repr`` (``0.1``, ``1.0``,
  ``1e+16``, ``-0.0``): always with a ``.`` or an exponent, so ``1`` and
  ``1.0`` are different values; NaN and the infinities are refused;
- a string is a JSON string as ``json.dumps(text, ensure_ascii=True)``
  writes it: ``\\"`` and ``\\\\``, ``\\n`` and the other short escapes for
  their controls, ``\\uXXXX`` (lowercase hex, a surrogate pair beyond the
  BMP) for every other character outside U+0020 to U+007E;
- a list or tuple is ``[a,b]``;
- a mapping with string keys is ``{"k":v}``, keys sorted by code point,
  no duplicates;
- no whitespace anywhere.

The digest is the lowercase hex SHA-256 of that text's ASCII bytes. Only
the digest is kept or shown: the arguments themselves may hold secrets.
"""

from __future__ import annotations

import hashlib
import json
import math

__all__ = ["MAX_ARGUMENT_DEPTH", "arguments_digest", "canonical_arguments"]

MAX_ARGUMENT_DEPTH = 64
"""Deepest nesting of lists and mappings accepted (deeper is most likely a cycle)."""


def arguments_digest(value: object) -> str:
    """The SHA-256 of `value`'s canonical form; `ValueError` if it is not JSON-like."""
    return hashlib.sha256(canonical_arguments(value).encode("ascii")).hexdigest()


def canonical_arguments(value: object) -> str:
    """`value` in the canonical form this module describes; `ValueError` if it has none."""
    parts: list[str] = []
    _write(value, parts, 0)
    return "".join(parts)


def _write(value: object, parts: list[str], depth: int) -> None:
    # Exact types first; a subclass is read through its base type's own methods,
    # so no method it redefines runs.
    kind = type(value)
    if value is None:
        parts.append("null")
    elif kind is bool:
        parts.append("true" if value else "false")
    elif isinstance(value, int) and issubclass(kind, int):
        parts.append(int.__repr__(int.__int__(value)))
    elif isinstance(value, float) and issubclass(kind, float):
        number = float.__float__(value)
        if not math.isfinite(number):
            raise ValueError("arguments may hold no NaN or infinity: neither has a canonical text")
        parts.append(float.__repr__(number))
    elif isinstance(value, str) and issubclass(kind, str):
        parts.append(json.dumps(str.__str__(value), ensure_ascii=True))
    elif isinstance(value, list | tuple) and issubclass(kind, list | tuple):
        if depth >= MAX_ARGUMENT_DEPTH:
            raise ValueError(f"arguments nest deeper than {MAX_ARGUMENT_DEPTH} levels")
        items = list.__iter__(value) if isinstance(value, list) else tuple.__iter__(value)
        parts.append("[")
        for index, item in enumerate(items):
            if index:
                parts.append(",")
            _write(item, parts, depth + 1)
        parts.append("]")
    elif isinstance(value, dict) and issubclass(kind, dict):
        if depth >= MAX_ARGUMENT_DEPTH:
            raise ValueError(f"arguments nest deeper than {MAX_ARGUMENT_DEPTH} levels")
        entries: dict[str, object] = {}
        for key, item in dict.items(value):
            if not (isinstance(key, str) and issubclass(type(key), str)):
                raise ValueError(
                    f"argument mapping keys must be strings, got a {type(key).__name__}"
                )
            plain_key = str.__str__(key)
            if plain_key in entries:
                raise ValueError("argument mapping has two keys with the same text")
            entries[plain_key] = item
        parts.append("{")
        for index, key in enumerate(sorted(entries)):
            if index:
                parts.append(",")
            parts.append(json.dumps(key, ensure_ascii=True))
            parts.append(":")
            _write(entries[key], parts, depth + 1)
        parts.append("}")
    else:
        raise ValueError(
            f"arguments must be JSON-like (None, bool, int, float, str, list, tuple, dict "
            f"with str keys), got a value of type {kind.__name__}"
        )
