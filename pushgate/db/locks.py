"""PostgreSQL advisory locks, the farm's named locks (released by the server when the
holding session dies)."""

from __future__ import annotations

import hashlib

from sqlalchemy import Connection

# --- PostgreSQL advisory locks -----------------------------------------------------------------


def lock_key(name: str) -> int:
    """A stable signed 64-bit advisory-lock key for a lock name."""
    return int.from_bytes(hashlib.sha256(name.encode()).digest()[:8], "big", signed=True)


def pg_lock(conn: Connection, key: int, *, wait: bool) -> bool:
    """Session-level advisory lock on this connection (released when it closes)."""
    if wait:
        conn.exec_driver_sql("SELECT pg_advisory_lock(%(k)s)", {"k": key})
        return True
    got = conn.exec_driver_sql("SELECT pg_try_advisory_lock(%(k)s)", {"k": key}).scalar()
    return bool(got)


def pg_unlock(conn: Connection, key: int) -> None:
    conn.exec_driver_sql("SELECT pg_advisory_unlock(%(k)s)", {"k": key})


def pg_holds(conn: Connection, key: int) -> bool:
    """Whether this connection's session holds the advisory lock `key` (a session that
    was terminated and reconnected does not)."""
    hi, lo = (key >> 32) & 0xFFFFFFFF, key & 0xFFFFFFFF
    return bool(
        conn.exec_driver_sql(
            "SELECT EXISTS (SELECT 1 FROM pg_locks WHERE locktype = 'advisory'"
            " AND pid = pg_backend_pid() AND granted AND objsubid = 1"
            " AND classid = %(hi)s::bigint::oid AND objid = %(lo)s::bigint::oid)",
            {"hi": hi, "lo": lo},
        ).scalar()
    )
