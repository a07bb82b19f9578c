"""Connections: SQLite (the embedded default) and PostgreSQL (a farm).

SQLite runs in WAL mode with a busy timeout, and every write transaction
starts with BEGIN IMMEDIATE so two writers never deadlock on a lock upgrade
(SQLite ignores FOR UPDATE). PostgreSQL uses ordinary transactions; claims use
SELECT ... FOR UPDATE SKIP LOCKED in the query modules.
"""

from __future__ import annotations

import fcntl
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Connection, Engine, create_engine, event
from sqlalchemy.engine import make_url
from sqlalchemy.exc import ArgumentError
from sqlalchemy.sql import Executable

from pushgate.errors import PushgateError

MIGRATIONS = Path(__file__).parent / "migrations"
# The newest migration's revision (a test checks it against alembic's head):
# a database already there needs no alembic at all, whose import and script
# scan cost every command ~0.12 s.
SCHEMA_HEAD = "0008"
_IMMEDIATE = "pushgate_immediate"


class DatabaseError(PushgateError):
    """The database cannot be reached or is not in the expected shape."""


def make_engine(url: str) -> Engine:
    try:
        u = make_url(url)
    except ArgumentError:
        raise DatabaseError(
            "not a database URL (sqlite:///PATH or postgresql://USER@HOST/DB)"
        ) from None
    if u.get_backend_name() not in ("sqlite", "postgresql") or u.drivername not in (
        "sqlite",
        "postgresql",
        "postgresql+psycopg",
    ):
        raise DatabaseError(
            f"database {u.drivername!r} is not supported"
            " (sqlite:///PATH or postgresql://USER@HOST/DB)"
        )
    if u.get_backend_name() == "sqlite":
        if u.database and u.database != ":memory:":
            Path(u.database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            u, connect_args={"timeout": 60, "check_same_thread": False}, pool_size=8, max_overflow=8
        )

        @event.listens_for(engine, "connect")
        def _connect(dbapi_conn: Any, _rec: Any) -> None:
            # Let us issue BEGIN ourselves (pysqlite's implicit BEGIN is deferred).
            dbapi_conn.isolation_level = None
            cur = dbapi_conn.cursor()
            cur.execute("PRAGMA journal_mode=WAL")
            cur.execute("PRAGMA busy_timeout=60000")
            cur.execute("PRAGMA foreign_keys=ON")
            cur.execute("PRAGMA synchronous=NORMAL")
            cur.close()

        @event.listens_for(engine, "begin")
        def _begin(conn: Connection) -> None:
            raw = conn.connection.driver_connection
            if raw.in_transaction:  # type: ignore[union-attr]
                return  # begun on the driver already (Database.driver_transaction)
            immediate = conn.get_execution_options().get(_IMMEDIATE, False)
            # On the driver directly: through exec_driver_sql this cost as much
            # as the rest of a step's transaction.
            raw.execute("BEGIN IMMEDIATE" if immediate else "BEGIN")  # type: ignore[union-attr]

        return engine
    if u.get_backend_name() == "postgresql" and u.drivername == "postgresql":
        u = u.set(drivername="postgresql+psycopg")
    return create_engine(u, pool_pre_ping=True, pool_size=5, max_overflow=10)


class DriverStatement:
    """A Core statement compiled once per dialect and run on the DB-API cursor.

    For the per-step and per-job hot path, inside a transaction begun through
    SQLAlchemy: executing through SQLAlchemy costs several times what the
    driver does (measured 0.31 vs 0.15 ms for a step's two statements).
    Parameters are plain values the driver takes as they are (str, int,
    float, bool, None); constants written into the statement are filled in.
    """

    def __init__(self, stmt: Executable):
        self.stmt = stmt
        self._compiled: dict[str, tuple[str, tuple[str, ...] | None, dict[str, Any]]] = {}

    def _prepare(self, conn: Connection, params: dict[str, Any]) -> tuple[str, Any]:
        dialect = conn.dialect
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            c = self.stmt.compile(dialect=dialect)  # type: ignore[attr-defined]
            if c.post_compile_params:
                raise ValueError("a DriverStatement cannot have expanding (IN) parameters")
            fixed = {
                name: value
                for name, value in c.construct_params(_check=False).items()
                if not c.binds[name].required
            }
            order = tuple(c.positiontup) if c.positional else None
            compiled = self._compiled[dialect.name] = (c.string, order, fixed)
        sql, order, fixed = compiled
        if fixed:
            params = fixed | params
        return sql, tuple(map(params.__getitem__, order)) if order is not None else params

    @staticmethod
    @contextmanager
    def _cursor(conn: Connection) -> Iterator[Any]:
        cur = conn.connection.driver_connection.cursor()  # type: ignore[union-attr]
        try:
            yield cur
        finally:
            cur.close()

    def __call__(self, conn: Connection, params: dict[str, Any]) -> int:
        """Execute; returns the number of rows changed."""
        sql, args = self._prepare(conn, params)
        with self._cursor(conn) as cur:
            cur.execute(sql, args)
            return int(cur.rowcount)

    def many(self, conn: Connection, rows: list[dict[str, Any]]) -> None:
        if not rows:
            return
        prepared = [self._prepare(conn, r) for r in rows]
        with self._cursor(conn) as cur:
            cur.executemany(prepared[0][0], [a for _, a in prepared])

    def rows(self, conn: Connection, params: dict[str, Any]) -> list[tuple[Any, ...]]:
        sql, args = self._prepare(conn, params)
        with self._cursor(conn) as cur:
            cur.execute(sql, args)
            return [tuple(r) for r in cur.fetchall()]


class Database:
    """An engine plus the two kinds of transaction pushgate uses."""

    def __init__(self, url: str):
        self.url = url
        self.engine = make_engine(url)
        self.dialect = self.engine.dialect.name

    @property
    def is_sqlite(self) -> bool:
        return self.dialect == "sqlite"

    @contextmanager
    def write(self) -> Iterator[Connection]:
        """A write transaction: BEGIN IMMEDIATE on SQLite; commits on success."""
        with self.write_connection() as conn:
            with conn.begin():
                yield conn

    def write_connection(self) -> Connection:
        """A connection whose transactions are write transactions, for a caller
        that keeps it across many (see `write`); the caller closes it."""
        return self.engine.connect().execution_options(**{_IMMEDIATE: True})

    @contextmanager
    def driver_transaction(self, conn: Connection) -> Iterator[Connection]:
        """A write transaction on `conn` begun and ended on the driver.

        For the runner's group commits, where SQLAlchemy's transaction
        machinery cost a third of each commit. Statements may go through
        SQLAlchemy too: its autobegin then joins the driver's transaction
        (the begin listener sees it open) and the commit goes through it.
        """
        raw = conn.connection.driver_connection
        if self.is_sqlite:
            raw.execute("BEGIN IMMEDIATE")  # type: ignore[union-attr]
        try:
            yield conn
        except BaseException:
            try:
                if conn.in_transaction():
                    conn.rollback()
                else:
                    raw.rollback()  # type: ignore[union-attr]
            except Exception:  # noqa: BLE001 - the first error is the one raised
                # The connection itself is gone (the server dropped it): it must not go
                # back to the pool, whose reset would fail on it again.
                conn.invalidate()
            raise
        if conn.in_transaction():
            conn.commit()
        else:
            raw.commit()  # type: ignore[union-attr]

    @contextmanager
    def read(self) -> Iterator[Connection]:
        with self.engine.connect() as conn:
            with conn.begin():
                yield conn

    def schema_version(self) -> str | None:
        """The migration the database is at; None if it has none (new or foreign)."""
        from sqlalchemy import inspect, text

        with self.engine.connect() as conn:
            if not inspect(conn).has_table("alembic_version"):
                return None
            return conn.execute(text("SELECT version_num FROM alembic_version")).scalar()

    def upgrade(self) -> None:
        """Bring the schema to the newest migration (idempotent)."""
        from sqlalchemy.exc import OperationalError

        try:
            if self.schema_version() == SCHEMA_HEAD:
                return
            with self._migration_lock() as conn:
                # Asked again under the lock: another process may have just done it.
                if self.schema_version() != SCHEMA_HEAD:
                    self._alembic_upgrade(conn)
        except OperationalError as e:
            raise DatabaseError(f"cannot open database {self.safe_url}: {e.orig}") from None

    @contextmanager
    def _migration_lock(self) -> Iterator[Connection]:
        """Processes that find the schema behind take turns to check and upgrade it, so
        the first use of a new database by several at once works: a session advisory
        lock on PostgreSQL (on the connection yielded), a flock on a file beside the
        database on SQLite (whose deferred transactions would fail 'database is locked'
        on the DDL rather than wait)."""
        with self.engine.connect() as conn:
            if self.dialect == "postgresql":
                conn.exec_driver_sql("SELECT pg_advisory_lock(7311001)")
                conn.commit()
                try:
                    yield conn
                finally:
                    if not conn.invalidated:
                        conn.rollback()
                        conn.exec_driver_sql("SELECT pg_advisory_unlock(7311001)")
                        conn.commit()
                return
            db = make_url(self.url).database
            if not db or db == ":memory:":
                yield conn
                return
            with open(f"{db}.migrate-lock", "a+b") as fh:
                fcntl.flock(fh, fcntl.LOCK_EX)
                yield conn  # the flock goes with the file's close

    def _alembic_upgrade(self, conn: Connection) -> None:
        """Run the migrations on conn (under _migration_lock), committed before the lock
        is released (else the next holder reads the version from before them)."""
        from alembic import command
        from alembic.config import Config as AlembicConfig

        cfg = AlembicConfig()
        cfg.set_main_option("script_location", str(MIGRATIONS))
        cfg.attributes["connection"] = conn
        command.upgrade(cfg, "head")
        conn.commit()

    @property
    def safe_url(self) -> str:
        """The URL with any password hidden, for messages."""
        return make_url(self.url).render_as_string(hide_password=True)

    def dispose(self) -> None:
        self.engine.dispose()


def open_db(url: str, *, upgrade: bool = True) -> Database:
    db = Database(url)
    if upgrade:
        db.upgrade()
    return db
