"""SQLite in WAL mode behind one worker thread, so the event loop never blocks on disk."""

from __future__ import annotations

import asyncio
import sqlite3
from concurrent.futures import ThreadPoolExecutor
from importlib import resources
from pathlib import Path
from typing import Any, Callable, TypeVar

T = TypeVar("T")


class DatabaseError(RuntimeError):
    """The database cannot be opened or migrated."""


class NotFound(LookupError):
    """A referenced record does not exist."""

    def __init__(self, kind: str, ident: str) -> None:
        super().__init__(f"{kind} {ident!r} not found")
        self.kind = kind
        self.ident = ident


class Conflict(RuntimeError):
    """A write clashes with what is stored (duplicate key, stale state)."""


def migrations() -> list[tuple[int, str]]:
    """Numbered SQL files shipped in telemed/migrations, in order. Two files with one number
    would leave all but one unapplied (the database remembers only the number): refused."""
    folder = resources.files("telemed") / "migrations"
    found = []
    for entry in folder.iterdir():
        name = entry.name
        if name.endswith(".sql") and name[:3].isdigit():
            found.append((int(name[:3]), entry.read_text(encoding="utf-8")))
    numbers = [number for number, _ in found]
    if len(set(numbers)) != len(numbers):
        raise DatabaseError(f"two migrations share a number: {sorted(numbers)}")
    return sorted(found)


def connect(path: Path) -> sqlite3.Connection:
    """Open (creating if needed) and migrate the database at path."""
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    conn.row_factory = sqlite3.Row
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA foreign_keys=ON")
    conn.execute("PRAGMA busy_timeout=5000")
    migrate(conn)
    return conn


def migrate(conn: sqlite3.Connection) -> int:
    """Apply migrations newer than PRAGMA user_version, each in its own transaction."""
    current = conn.execute("PRAGMA user_version").fetchone()[0]
    for number, script in migrations():
        if number <= current:
            continue
        try:
            conn.executescript(f"BEGIN IMMEDIATE;\n{script}\nPRAGMA user_version={number};\nCOMMIT;")
        except sqlite3.Error as exc:
            if conn.in_transaction:
                conn.execute("ROLLBACK")
            raise DatabaseError(f"migration {number:03d} failed: {exc}") from exc
        current = number
    return current


class Database:
    """Owns one connection and the single thread that uses it."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="telemed-db")
        self._conn: sqlite3.Connection | None = None

    async def open(self) -> None:
        loop = asyncio.get_running_loop()
        self._conn = await loop.run_in_executor(self._executor, connect, self.path)

    async def close(self) -> None:
        if self._conn is None:
            return
        conn, self._conn = self._conn, None
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, conn.close)
        self._executor.shutdown(wait=True)

    async def read(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) on the database thread."""
        return await self._submit(fn, args, write=False)

    async def write(self, fn: Callable[..., T], *args: Any) -> T:
        """Run fn(conn, *args) in one IMMEDIATE transaction: all of it lands or none."""
        return await self._submit(fn, args, write=True)

    async def _submit(self, fn: Callable[..., T], args: tuple, write: bool) -> T:
        if self._conn is None:
            raise DatabaseError("database is not open")
        conn = self._conn
        loop = asyncio.get_running_loop()
        runner = _in_transaction if write else _plain
        return await loop.run_in_executor(self._executor, runner, conn, fn, args)


def _plain(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple) -> T:
    return fn(conn, *args)


def _in_transaction(conn: sqlite3.Connection, fn: Callable[..., T], args: tuple) -> T:
    conn.execute("BEGIN IMMEDIATE")
    try:
        result = fn(conn, *args)
    except BaseException:
        conn.execute("ROLLBACK")
        raise
    conn.execute("COMMIT")
    return result
