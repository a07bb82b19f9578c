"""Every on-disk path and every URL of a log, artifact, work dir or mirror: made here only.

Logs and artifacts stay on disk, indexed by the database (which stores paths relative to
the logs dir). Links in reports and pages go through `log_url`, so they follow
`report.logs_url` (an http URL on a real installation) and never leak a local path when
one is configured.
"""

from __future__ import annotations

import functools
import os
import re
from pathlib import Path

from pushgate.config import Loaded
from pushgate.git import Mirror

_UNSAFE = re.compile(r"[^A-Za-z0-9._+-]")


def launder(name: str) -> str:
    """A file-name-safe form of a name: osstest's `/` -> `--`, anything else odd -> `_`."""
    out = _UNSAFE.sub("_", name.replace("/", "--"))
    return out if out and not out.startswith(".") else "_" + out


@functools.lru_cache(maxsize=4096)
def _safe_testid(testid: str) -> str:
    return re.sub(r"[^A-Za-z0-9._+()-]", "_", testid)


# --- git mirrors and per-job dirs -------------------------------------------------------------


def mirror(loaded: Loaded, tree: str) -> Mirror:
    """The bare mirror of a configured tree."""
    return Mirror(loaded.git_dir / f"{tree}.git", loaded.git_url(tree))


def job_workdir(loaded: Loaded, flight: int, job: str, attempt: int | None = None) -> Path:
    """A job's work dir: one per attempt (`<job>@<attempt>`; `@` is not in job names),
    so a runner whose job was taken over never shares a dir with the new attempt."""
    return loaded.worktrees_dir / str(flight) / (job if attempt is None else f"{job}@{attempt}")


def job_artifacts(loaded: Loaded, flight: int, job: str) -> Path:
    """A finished job's artifacts (what later jobs and reports read)."""
    return loaded.artifacts_dir / str(flight) / job


def attempt_artifacts(loaded: Loaded, flight: int, job: str, attempt: int) -> Path:
    """Where one attempt's steps put artifacts: moved to job_artifacts by the fenced
    transaction that ends the attempt, so only the attempt that holds the job publishes."""
    return loaded.artifacts_dir / str(flight) / f".{job}@{attempt}"


def attempt_dirs(loaded: Loaded, flight: int, job: str) -> list[Path]:
    """The work and artifact dirs of every attempt of a job (to clear out older ones)."""
    out = []
    for root, prefix in ((loaded.worktrees_dir, f"{job}@"), (loaded.artifacts_dir, f".{job}@")):
        d = root / str(flight)
        try:
            out += [d / n for n in os.listdir(d) if n.startswith(prefix)]
        except FileNotFoundError:
            pass
    return out


def job_tmpdir(loaded: Loaded, flight: int, job: str, attempt: int | None = None) -> Path:
    """A job's temporary dir: its steps' HOME and TMPDIR, removed when the job ends.
    One per attempt, like the work dir."""
    name = job if attempt is None else f"{job}@{attempt}"
    return loaded.state_dir / "tmp" / str(flight) / name


# --- logs ------------------------------------------------------------------------------------


def job_log_dir(loaded: Loaded, flight: int, job: str) -> str:
    # A plain string: a Path per step cost more than the rest of the runner's step loop.
    return f"{loaded.logs_dir}/{flight}/{job}"


def log_relpath(flight: int, job: str, stepno: int, testid: str) -> str:
    """A step's log, relative to the logs dir (what the database stores)."""
    return f"{flight}/{job}/{stepno}.{_safe_testid(testid)}.log"


def log_path(loaded: Loaded, rel: str) -> Path:
    return loaded.logs_dir / rel


def bisect_graph_relpath(branch: str, job: str, testid: str) -> str:
    """A bisection's SVG graph, relative to the logs dir."""
    return f"bisect/{launder(branch)}/{launder(job)}.{launder(testid)}.svg"


# --- URLs ------------------------------------------------------------------------------------


def logs_url(loaded: Loaded) -> str:
    """The base URL of the logs, without a trailing slash (`report.logs_url`, whose
    `{logs}` is the logs dir; by default a file:// URL of it)."""
    return loaded.cfg.report.logs_url.replace("{logs}", str(loaded.logs_dir)).rstrip("/")


def log_url(loaded: Loaded, rel: str) -> str:
    """The URL of a file under the logs dir, given its relative path."""
    return f"{logs_url(loaded)}/{rel.lstrip('/')}"


def flight_logs_url(loaded: Loaded, flight: int) -> str:
    """The URL of a flight's log directory, with a trailing slash."""
    return f"{logs_url(loaded)}/{flight}/"


# --- retention: the per-flight dirs `pushgate gc` walks ---------------------------------------


def flight_roots(loaded: Loaded) -> dict[str, Path]:
    """The roots that hold one dir per flight, `<root>/<flight>/<job>` (job_workdir,
    job_artifacts and job_log_dir make the paths below them)."""
    return {
        "work": loaded.worktrees_dir,
        "artifacts": loaded.artifacts_dir,
        "logs": loaded.logs_dir,
    }


def flight_of_dir(name: str) -> int | None:
    """The flight a dir below a flight root is for; None for anything else (`bisect/`)."""
    if name.isascii() and name.isdigit() and str(int(name)) == name:
        return int(name)
    return None


def job_of_dir(name: str) -> str:
    """The job a dir below `<root>/<flight>/` is for: its name, without the `@<attempt>`
    of one attempt's work dir or the `.` and `@<attempt>` of one attempt's artifacts."""
    m = re.fullmatch(r"\.?([^@]+)@\d+", name)
    return m.group(1) if m else name


def plain_name(name: str) -> bool:
    """One plain path component, which cannot name anything outside its parent dir."""
    return bool(name) and name not in (".", "..") and "/" not in name and "\0" not in name


def gc_journal(loaded: Loaded) -> Path:
    """The record of what `pushgate gc` deleted: one line per dir, beside the database."""
    return loaded.state_dir / "gc.log"
