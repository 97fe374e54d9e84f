"""The base for vendor payload models: tolerant of new fields and of numbers sent as strings."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict

__all__ = ["VendorModel"]


class VendorModel(BaseModel):
    # Vendors add fields without notice and mix 0 and "0"; both must parse.
    model_config = ConfigDict(extra="allow", coerce_numbers_to_str=True, frozen=True)
