"""What a step may reach (invariant 7): its sandbox, its environment, and the checks
made before a flight runs any step.

`runner.isolation = "bwrap"` (the default): each job's steps run in a bubblewrap
sandbox (executors/sandbox.py) that hides pushgate's state, config and credentials
and lets them write only their own dirs. `"none"`: steps run as pushgate's own
processes, and each job records the runvar `isolation=none` so that its flight's
reports can say `steps not isolated`.

The environment is an allow-list in every mode (step_env_base and the runner).
"""

from __future__ import annotations

import functools
import os
import sys

from pushgate.config import Loaded
from pushgate.errors import PushgateError
from pushgate.run.executors.base import Sandbox
from pushgate.run.executors.sandbox import bwrap_path, probe

# The runvar a job records when its steps ran without isolation (synthetic, like `host`).
NOT_ISOLATED_RUNVAR = "isolation"
NOT_ISOLATED_VALUE = "none"


class IsolationError(PushgateError):
    """Steps cannot be isolated here: pushgate runs none (one line, exit 2)."""


def isolated(loaded: Loaded) -> bool:
    return loaded.cfg.runner.isolation != "none"


def hidden_paths(loaded: Loaded) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """(dirs, files) a step must not see: pushgate's state, config and credentials."""
    cfg = loaded.cfg
    dirs = [
        str(loaded.state_dir),
        str(loaded.logs_dir),
        str(loaded.artifacts_dir),
        str(loaded.git_dir),
        str(loaded.worktrees_dir),
        str(loaded.path.resolve().parent),
        os.path.expanduser("~"),
    ]
    files = [str(loaded.path.resolve())]
    if loaded.database_url.startswith("sqlite:///"):
        db = os.path.realpath(loaded.database_url[len("sqlite:///") :])
        dirs.append(os.path.dirname(db))
    for f in (cfg.mail.mbox, cfg.mail.password_file):
        if f:
            path = os.path.realpath(loaded.path.parent / os.path.expanduser(f))
            files.append(path)
            if f == cfg.mail.mbox:
                dirs.append(os.path.dirname(path))
    dirs += [os.path.realpath(loaded.path.parent / os.path.expanduser(h)) for h in cfg.runner.hide]
    return tuple(dict.fromkeys(dirs)), tuple(dict.fromkeys(files))


def shared_dirs(loaded: Loaded) -> tuple[str, ...]:
    return tuple(
        os.path.realpath(loaded.path.parent / os.path.expanduser(d))
        for d in loaded.cfg.runner.shared
    )


def job_sandbox(
    loaded: Loaded,
    key: str,
    writable: list[str],
    readonly: list[str],
    network: bool,
) -> Sandbox:
    dirs, files = _hidden(loaded)
    return Sandbox(
        key=key,
        writable=(*writable, *shared_dirs(loaded)),
        readonly=tuple(readonly),
        hidden=dirs,
        hidden_files=files,
        network=network,
    )


def _hidden(loaded: Loaded) -> tuple[tuple[str, ...], tuple[str, ...]]:
    key = id(loaded)
    cached = _hidden_cache.get(key)
    if cached is None or cached[0] is not loaded:
        cached = _hidden_cache[key] = (loaded, hidden_paths(loaded))
    return cached[1]


_hidden_cache: dict[int, tuple[Loaded, tuple[tuple[str, ...], tuple[str, ...]]]] = {}


# --- the environment ---------------------------------------------------------------------------


@functools.lru_cache(maxsize=8)
def clean_path(path: str) -> str:
    """PATH without pushgate's own virtualenv: a build must not run pushgate's Python.

    Only a virtualenv's bin dir goes (sys.prefix/bin, and $VIRTUAL_ENV/bin); an
    interpreter installed in /usr/bin leaves /usr/bin alone.
    """
    drop = set()
    if sys.prefix != sys.base_prefix:
        drop.add(os.path.realpath(os.path.join(sys.prefix, "bin")))
    venv = os.environ.get("VIRTUAL_ENV")
    if venv:
        drop.add(os.path.realpath(os.path.join(venv, "bin")))
    kept = [d for d in path.split(os.pathsep) if d and os.path.realpath(d) not in drop]
    return os.pathsep.join(kept) or os.defpath


def step_env_base(runner_env: dict[str, str]) -> dict[str, str]:
    """What a step inherits from pushgate's own environment: PATH (cleaned), LANG,
    LC_* and TZ. Nothing else: no password, database URL, agent socket or token."""
    env = {k: v for k, v in runner_env.items() if k in ("LANG", "TZ") or k.startswith("LC_")}
    env["PATH"] = clean_path(runner_env.get("PATH", os.defpath))
    return env


# --- before a flight runs ---------------------------------------------------------------------

_probed: dict[tuple[str, bool], str | None] = {}


def check(loaded: Loaded, database_url: str, network: bool) -> None:
    """Refuse to run steps (IsolationError) when they could not be isolated as configured.

    network: whether some job to run asks for the network; its steps then share the
    host's, and a PostgreSQL database must not let them in without a password.
    """
    if not isolated(loaded):
        return
    off = 'or set runner.isolation = "none" to run steps unisolated'
    if bwrap_path() is None:
        raise IsolationError(
            f"steps are isolated with bubblewrap, and bwrap is not installed: install "
            f"bubblewrap, {off}"
        )
    key = (str(loaded.path), network)
    if key not in _probed:
        sb = job_sandbox(loaded, "probe", [], [], network)
        _probed[key] = probe(sb)
    why = _probed[key]
    if why:
        raise IsolationError(f"steps are isolated with bubblewrap, and {why}: {off}")
    if network and database_url.startswith("postgresql"):
        if _postgres_lets_in_without_password(database_url):
            raise IsolationError(
                "a job has network = true, so its steps share this host's network, and "
                "the PostgreSQL database accepts connections without a password (trust "
                "authentication): configure password authentication for pushgate's "
                "database (pg_hba.conf), or set network = false on every job"
            )


def _postgres_lets_in_without_password(url: str) -> bool:
    """Whether a step could connect to pushgate's PostgreSQL database over TCP with no
    password (the URL's own password and any password file left out)."""
    import psycopg
    from sqlalchemy.engine import make_url

    u = make_url(url)
    host = u.host or "127.0.0.1"
    try:
        conn = psycopg.connect(
            host=host,
            port=u.port or 5432,
            user=u.username or "postgres",
            dbname=u.database or "postgres",
            password="",
            passfile="/dev/null",
            connect_timeout=5,
        )
    except psycopg.OperationalError:
        return False
    conn.close()
    return True
