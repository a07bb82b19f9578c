"""Processes as the tests look at them in /proc."""

from __future__ import annotations


def alive(pid: int) -> bool:
    """pid runs (a zombie is dead: killed, not yet reaped)."""
    try:
        with open(f"/proc/{pid}/stat") as f:
            return f.read().rsplit(")", 1)[1].split()[0] != "Z"
    except FileNotFoundError:
        return False
