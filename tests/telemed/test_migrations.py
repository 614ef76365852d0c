"""Schema migrations: an older database is brought up to date in place, keeping its data; a
migration that fails leaves the database as it was."""

from __future__ import annotations

import sqlite3

import pytest

from telemed.store.database import DatabaseError, connect, migrate, migrations


def test_old_database_is_upgraded_and_keeps_its_records(tmp_path):
    path = tmp_path / "old.sqlite3"
    conn = sqlite3.connect(path)
    number, script = migrations()[0]
    conn.executescript(script + f"\nPRAGMA user_version={number};")
    conn.execute("INSERT INTO institutions (id, name, kind, created_at)"
                 " VALUES ('i', 'Old', 'village', 'x')")
    conn.commit()
    conn.close()
    upgraded = connect(path)
    assert upgraded.execute("PRAGMA user_version").fetchone()[0] == migrations()[-1][0]
    assert upgraded.execute("SELECT name FROM institutions").fetchone()[0] == "Old"
    assert upgraded.execute("SELECT COUNT(*) FROM dicom_instances").fetchone()[0] == 0
    assert upgraded.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert migrate(upgraded) == migrations()[-1][0], "migrating twice changes nothing"


def test_failed_migration_rolls_back(tmp_path, monkeypatch):
    conn = connect(tmp_path / "db.sqlite3")
    latest = migrations()[-1][0]
    broken = migrations() + [(latest + 1, "CREATE TABLE half (x); INSERT INTO nowhere VALUES (1);")]
    monkeypatch.setattr("telemed.store.database.migrations", lambda: broken)
    with pytest.raises(DatabaseError, match=f"{latest + 1:03d}"):
        migrate(conn)
    assert conn.execute("PRAGMA user_version").fetchone()[0] == latest
    assert conn.execute("SELECT COUNT(*) FROM sqlite_master WHERE name = 'half'").fetchone()[0] == 0


def test_shipped_migrations_are_numbered_one_by_one():
    """Each number once, none skipped: a second file with a number already used was never
    applied to databases past it (006_lossy_imaging and an ECG migration both once said 006)."""
    assert [number for number, _ in migrations()] == list(range(1, len(migrations()) + 1))
