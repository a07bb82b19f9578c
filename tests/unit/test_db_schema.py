"""Migrations from an empty database give exactly the schema declared in schema.py."""

from __future__ import annotations

from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect, text

from pushgate.db.engine import Database
from pushgate.db.schema import metadata


def test_upgrade_from_empty_matches_schema(db: Database) -> None:
    with db.engine.connect() as conn:
        mc = MigrationContext.configure(conn, opts={"compare_type": True})
        diff = compare_metadata(mc, metadata)
    assert diff == []
    with db.engine.connect() as conn:
        names = set(inspect(conn).get_table_names())
    assert set(metadata.tables) <= names


def test_upgrade_is_idempotent(db: Database) -> None:
    db.upgrade()
    with db.read() as conn:
        assert conn.execute(text("SELECT count(*) FROM flights")).scalar_one() == 0


def test_sqlite_write_uses_wal(tmp_path: object) -> None:
    d = Database(f"sqlite:///{tmp_path}/x.db")
    d.upgrade()
    with d.read() as conn:
        assert conn.exec_driver_sql("PRAGMA journal_mode").scalar_one() == "wal"
    d.dispose()
