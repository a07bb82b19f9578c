"""Named locks shared by every process using one database, and the test hook that pauses
a process at a named point (so a test can kill -9 it exactly there).

PostgreSQL: a session advisory lock on a connection held for the lock's life (the server
releases it if the process dies). SQLite: flock on a file beside the database (the kernel
releases it if the process dies).
"""

from __future__ import annotations

import fcntl
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from sqlalchemy import Connection
from sqlalchemy.engine import make_url
from sqlalchemy.exc import DBAPIError, SQLAlchemyError

from pushgate.db import locks as dbl
from pushgate.db.engine import Database
from pushgate.errors import PushgateError

PAUSE_ENV = "PUSHGATE_TEST_PAUSE_AT"
PAUSE_FILE_ENV = "PUSHGATE_TEST_PAUSE_FILE"


def pause_point(stage: str) -> None:
    """Test hook: with PUSHGATE_TEST_PAUSE_AT=<stage>, note the stage in
    $PUSHGATE_TEST_PAUSE_FILE and sleep until killed (so a test can kill -9 the process
    at exactly this point)."""
    if os.environ.get(PAUSE_ENV) != stage:
        return
    marker = os.environ.get(PAUSE_FILE_ENV)
    if marker:
        Path(marker).write_text(f"{stage} {os.getpid()}\n")
    while True:
        time.sleep(3600)


# --- locks -------------------------------------------------------------------------------------


class LockBusy(PushgateError):
    """A lock asked for without waiting is held by another process."""


class LockLost(PushgateError):
    """A lock held on a database connection is gone with that connection (dropped by the
    server or the network): what was done under it must stop, to be resumed later."""


class HeldLock:
    """A lock db_lock holds; `check()` before acting under it (e.g. before a push)."""

    def __init__(self, name: str, conn: Connection | None = None, key: int = 0):
        self.name = name
        self.conn = conn
        self.key = key

    def check(self) -> None:
        """LockLost unless the lock is still held. A flock lasts as long as the process;
        an advisory lock as long as its connection's session, which is asked."""
        if self.conn is None:
            return
        lost = f"lock {self.name!r} lost: its database connection dropped"
        if self.conn.invalidated:
            raise LockLost(lost)
        try:
            held = dbl.pg_holds(self.conn, self.key)
            self.conn.commit()
        except SQLAlchemyError as e:
            why = str(getattr(e, "orig", None) or e).strip().splitlines()
            raise LockLost(f"{lost} ({why[0] if why else type(e).__name__})") from None
        if not held:
            raise LockLost(f"lock {self.name!r} lost: its database session was ended")


def _lock_dir(db: Database) -> Path:
    u = make_url(db.url)
    if u.database and u.database != ":memory:":
        return Path(u.database).resolve().parent / "locks"
    return Path("/tmp") / f"pushgate-locks-{os.getuid()}"


@contextmanager
def db_lock(db: Database, name: str, *, wait: bool = True) -> Iterator[HeldLock]:
    """An exclusive named lock shared by every process using this database.

    PostgreSQL: a session advisory lock on a connection held for the duration (released by
    the server if the process dies, or if the connection drops: HeldLock.check tells).
    SQLite: flock on a file beside the database (released by the kernel if the process
    dies).
    """
    if db.dialect == "postgresql":
        key = dbl.lock_key(f"pushgate:{name}")
        conn = db.engine.connect()
        try:
            if not dbl.pg_lock(conn, key, wait=wait):
                raise LockBusy(name)
            conn.commit()
            try:
                yield HeldLock(name, conn, key)
            finally:
                # A connection that dropped took the lock with its session (and used
                # again it would only reconnect).
                try:
                    conn.rollback()
                    if not conn.invalidated:
                        dbl.pg_unlock(conn, key)
                        conn.commit()
                except DBAPIError:
                    pass
        finally:
            conn.close()
        return
    d = _lock_dir(db)
    d.mkdir(parents=True, exist_ok=True)
    safe = "".join(c if c.isalnum() or c in "._-" else "_" for c in name)
    with open(d / f"{safe}.lock", "a+b") as fh:
        try:
            fcntl.flock(fh, fcntl.LOCK_EX | (0 if wait else fcntl.LOCK_NB))
        except BlockingIOError:
            raise LockBusy(name) from None
        try:
            yield HeldLock(name)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
