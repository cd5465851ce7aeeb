"""Names a person can read as written, and what a presented value may show.

Four eyes compares names, so two names that print the same must be the
same string: a name holding an invisible character is refused outright
(not folded away), since folding would record one person under a name
that reads like another. Free text (reasons) may hold anything, and
presented values (what `verify` is asked about) are shown escaped.
"""

from __future__ import annotations

import re
import unicodedata
from collections.abc import Iterator

__all__ = [
    "DEFAULT_IGNORABLE_RANGES",
    "MAX_NAME_LENGTH",
    "MAX_REASON_LENGTH",
    "TOKEN_LENGTH",
    "check_name",
    "check_reason",
    "is_default_ignorable",
    "plain_str",
    "presented",
    "same_person",
    "token_shaped_windows",
]

MAX_NAME_LENGTH = 256
"""Longest actor, session id, policy, action or resource: a ledger's memory is bounded by count."""
MAX_REASON_LENGTH = 1024
"""Longest free-text reason kept with a denial, revocation or delegation."""

# Default_Ignorable_Code_Point, exactly as DerivedCoreProperties.txt of Unicode
# 15.0.0 lists it (unchanged since 14.0.0, the version of Python 3.11's
# unicodedata). Python has no accessor for the property, so it is embedded;
# tests compare it with the Unicode data file when one is installed. It holds
# the Hangul fillers (U+115F, U+1160, U+3164, U+FFA0), the variation
# selectors, the combining grapheme joiner and Khmer inherent vowels: marks
# and letters that `str.isprintable()` accepts yet that print as nothing.
DEFAULT_IGNORABLE_RANGES: tuple[tuple[int, int], ...] = (
    (0x00AD, 0x00AD),
    (0x034F, 0x034F),
    (0x061C, 0x061C),
    (0x115F, 0x1160),
    (0x17B4, 0x17B5),
    (0x180B, 0x180D),
    (0x180E, 0x180E),
    (0x180F, 0x180F),
    (0x200B, 0x200F),
    (0x202A, 0x202E),
    (0x2060, 0x2064),
    (0x2065, 0x2065),
    (0x2066, 0x206F),
    (0x3164, 0x3164),
    (0xFE00, 0xFE0F),
    (0xFEFF, 0xFEFF),
    (0xFFA0, 0xFFA0),
    (0xFFF0, 0xFFF8),
    (0x1BCA0, 0x1BCA3),
    (0x1D173, 0x1D17A),
    (0xE0000, 0xE0000),
    (0xE0001, 0xE0001),
    (0xE0002, 0xE001F),
    (0xE0020, 0xE007F),
    (0xE0080, 0xE00FF),
    (0xE0100, 0xE01EF),
    (0xE01F0, 0xE0FFF),
)
_IGNORABLE = re.compile(
    "[" + "".join(f"{chr(first)}-{chr(last)}" for first, last in DEFAULT_IGNORABLE_RANGES) + "]"
)
# Categories that print as nothing (control, format, surrogate, unassigned)
# or break the line (line and paragraph separators).
_UNSEEN_CATEGORIES = frozenset({"Cc", "Cf", "Cs", "Zl", "Zp"})
TOKEN_LENGTH = 43
"""Length of an approval token: `secrets.token_urlsafe(32)`, 43 URL-safe characters."""
_TOKEN_SHAPED = re.compile(f"[A-Za-z0-9_-]{{{TOKEN_LENGTH},}}")


def is_default_ignorable(char: str) -> bool:
    """Whether the one-character `char` is a Default_Ignorable_Code_Point."""
    return _IGNORABLE.fullmatch(char) is not None


def plain_str(value: object) -> str | None:
    """`value` as an exact `str` when it is a string, else None; no method of `value` runs.

    A `str` subclass can redefine any method (`encode`, `__len__`, `__eq__`), so
    it is copied to a plain `str` before anything else touches it. The test is
    on `type()`: `isinstance` believes an object that forges its `__class__`.
    """
    if isinstance(value, str) and issubclass(type(value), str):
        return str.__str__(value)
    return None


def check_name(name: str, value: object) -> str:
    """`value` as an exact `str`; `ValueError` unless it is a name a person can read as written.

    Refused: anything but a string, the empty string, more than
    `MAX_NAME_LENGTH` characters, whitespace at either end, characters that
    print as nothing or as a plain space (control and format characters,
    line and paragraph separators, spaces other than U+0020, lone
    surrogates), and every Default_Ignorable_Code_Point (variation
    selectors, the combining grapheme joiner, Hangul fillers...). Otherwise
    ``"bot\ufe0f"`` would pass four eyes as someone other than ``"bot"``
    while reading the same in every audit. The message never repeats the
    value: it may be a token passed in the wrong place.
    """
    text = plain_str(value)
    if text is None:
        raise ValueError(f"{name} must be a string, got a value of type {type(value).__name__}")
    if not text:
        raise ValueError(f"{name} must be a non-empty string")
    if len(text) > MAX_NAME_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_NAME_LENGTH} characters, got {len(text)}")
    if text != text.strip():
        raise ValueError(f"{name} must not begin or end with whitespace")
    ignorable = _IGNORABLE.search(text)
    if ignorable is not None:
        char = ignorable.group()
        raise ValueError(
            f"{name} must not contain U+{ord(char):04X} (a default-ignorable code point, "
            f"at index {ignorable.start()}): it prints as nothing, so the name would read "
            "as another"
        )
    # isprintable() is one pass in C and true for nearly every name; only a name
    # it flags is looked at character by character.
    if not text.isprintable():
        for index, char in enumerate(text):
            category = unicodedata.category(char)
            if category in _UNSEEN_CATEGORIES or (category == "Zs" and char != " "):
                raise ValueError(
                    f"{name} must not contain U+{ord(char):04X} (Unicode category {category}, "
                    f"at index {index}): names may hold a plain space, but no control, format "
                    "or other invisible character"
                )
    return text


def same_person(name: str, other: str | None) -> bool:
    """Whether two checked names name the same person, for four eyes.

    Names are compared after Unicode compatibility normalisation and case
    folding (NFKC, then casefold, then NFKC again, since folding can leave
    text unnormalised), with any default-ignorable code point the folding
    produced removed: ``Bot``, ``BOT`` and ``bot`` typed in full-width
    letters are all ``bot``. This may only refuse more; records keep each
    name as given.
    """
    return other is not None and folded(name) == folded(other)


def folded(name: str) -> str:
    """The form four eyes compares: what counts one person's requests too."""
    text = unicodedata.normalize("NFKC", unicodedata.normalize("NFKC", name).casefold())
    return _IGNORABLE.sub("", text)


def check_reason(name: str, value: object) -> str:
    """`value` as an exact `str`; `ValueError` unless it is a string of bounded length.

    A reason may be empty and may hold any character: it is free text for people.
    """
    text = plain_str(value)
    if text is None:
        raise ValueError(f"{name} must be a string, got a value of type {type(value).__name__}")
    if len(text) > MAX_REASON_LENGTH:
        raise ValueError(f"{name} must be at most {MAX_REASON_LENGTH} characters, got {len(text)}")
    return text


def presented(text: str, length: int | None = None) -> str:
    """A presented value as spans and messages may show it: bounded, on one line, unambiguous.

    At most `MAX_NAME_LENGTH` characters of it are kept (then the length of
    the whole, `length` if the caller cut it already), and every character a
    reader could not see (controls, line breaks, format and default-ignorable
    characters, lone surrogates) or a backslash is escaped as Python writes
    it, so ``"bob\\n"`` and ``"bob"`` differ.
    """
    total = len(text) if length is None else length
    kept = text[:MAX_NAME_LENGTH]
    if kept.isprintable() and "\\" not in kept and _IGNORABLE.search(kept) is None:
        shown = kept
    else:
        shown = "".join(_escaped(char) for char in kept)
    return f"{shown}...({total} characters in all)" if total > len(kept) else shown


def _escaped(char: str) -> str:
    if char == "\\":
        return "\\\\"
    if char.isprintable() and not is_default_ignorable(char):
        return char
    return ascii(char)[1:-1]


def token_shaped_windows(text: str) -> Iterator[tuple[int, str]]:
    """Every (index, substring) of `text` that could be one of our tokens.

    A token may sit inside a longer run of URL-safe characters (say,
    ``"bearer" + token`` with no space), so each window of a run is one.
    """
    for run in _TOKEN_SHAPED.finditer(text):
        start, end = run.span()
        for index in range(start, end - TOKEN_LENGTH + 1):
            yield index, text[index : index + TOKEN_LENGTH]
