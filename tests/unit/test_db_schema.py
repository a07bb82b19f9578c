"""Migrations from an empty database give exactly the schema declared in schema.py."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.config import Config as AlembicConfig
from alembic.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import inspect, text

from pushgate.db.engine import MIGRATIONS, SCHEMA_HEAD, Database, DatabaseError
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


def test_schema_head_is_alembics_head() -> None:
    # upgrade() skips alembic when the database is at SCHEMA_HEAD: a new
    # migration must move it, or databases would never get the migration.
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(cfg).get_heads() == [SCHEMA_HEAD]


def test_database_behind_the_head_is_upgraded(db: Database) -> None:
    cfg = AlembicConfig()
    cfg.set_main_option("script_location", str(MIGRATIONS))
    with db.engine.connect() as conn:
        cfg.attributes["connection"] = conn
        command.downgrade(cfg, "-1")
        conn.commit()
    assert db.schema_version() not in (None, SCHEMA_HEAD)
    db.upgrade()
    assert db.schema_version() == SCHEMA_HEAD
    with db.engine.connect() as conn:
        diff = compare_metadata(MigrationContext.configure(conn), metadata)
    assert diff == []


def test_unreachable_database_is_one_clear_error(tmp_path: Path) -> None:
    # A directory where the database file should be: SQLite cannot open it.
    (tmp_path / "x.db").mkdir()
    with pytest.raises(DatabaseError, match="cannot open database"):
        Database(f"sqlite:///{tmp_path}/x.db").upgrade()
