"""What the vendors' request signers share: query parameters, and headers made canonical or refused."""

from __future__ import annotations

from collections.abc import Iterable, Mapping

__all__ = ["Query", "normalized_headers"]

# Query parameters: a mapping, or pairs when a name repeats.
Query = Mapping[str, str] | Iterable[tuple[str, str]]


def normalized_headers(headers: Mapping[str, str]) -> dict[str, str]:
    """Lowercase names and trimmed values; a header given twice or with a line break is refused."""
    out: dict[str, str] = {}
    for name, value in headers.items():
        key = name.strip().lower()
        if not key:
            raise ValueError("a header has an empty name")
        if key in out:
            # Two spellings of one header would sign one value and send two: refuse rather than guess.
            raise ValueError(f"header {key!r} is given twice")
        if "\n" in value or "\r" in value:
            raise ValueError(f"header {key!r} has a line break in its value")
        out[key] = value.strip()
    return out
