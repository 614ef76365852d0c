"""Persistence: the SQLite database (records and audit chain) and its repositories."""

from telemed.store.database import Database, DatabaseError, Conflict, NotFound

__all__ = ["Database", "DatabaseError", "Conflict", "NotFound"]
