"""The job store: the interface, MongoDB (mongo) and an in-memory test double (memory)."""

from consumer.store.base import JobStore, RawBody, StoreConflict

__all__ = ["JobStore", "RawBody", "StoreConflict"]
