"""Helpers to write a pushgate.toml around a real git repository and run flights."""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pushgate import config as cfgmod
from pushgate.config import Loaded
from pushgate.db.engine import Database
from tests.gitrepo import Repo, make_repo


def toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, str):
        return json.dumps(v)
    if isinstance(v, list):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{ " + ", ".join(f"{json.dumps(k)} = {toml_value(x)}" for k, x in v.items()) + " }"
    raise TypeError(v)


def render_toml(data: dict[str, Any]) -> str:
    """A small TOML writer: top-level tables of tables, enough for pushgate.toml."""
    out: list[str] = []
    for section, body in data.items():
        if section in ("trees", "branches", "jobs", "hosts"):
            for name, fields in body.items():
                out.append(f"[{section}.{json.dumps(name)}]")
                out += [f"{k} = {toml_value(v)}" for k, v in fields.items()]
                out.append("")
        else:
            out.append(f"[{section}]")
            out += [f"{k} = {toml_value(v)}" for k, v in body.items()]
            out.append("")
    return "\n".join(out)


@dataclass
class Project:
    dir: Path
    repo: Repo
    db_url: str

    @property
    def ctl(self) -> Path:
        """A dir the project's steps may write (runner.shared), for the test's marker files."""
        d = self.dir / "ctl"
        d.mkdir(exist_ok=True)
        return d

    def config(
        self,
        jobs: dict[str, Any],
        *,
        branch_jobs: list[str] | None = None,
        slots: int = 4,
        extra: dict[str, Any] | None = None,
    ) -> Path:
        data: dict[str, Any] = {
            "state": {"dir": "state", "database": self.db_url},
            # Steps are sandboxed: ctl/ is where a test and its steps leave each other files.
            "runner": {"heartbeat_s": 0.5, "lease_s": 3, "shared": [str(self.ctl)]},
            "trees": {
                "src": {"url": str(self.repo.path), "input_ref": "main", "tested_ref": "tested"}
            },
            "branches": {"b": {"tree": "src", "jobs": branch_jobs or list(jobs)}},
            "hosts": {"localhost": {"slots": slots, "flags": ["arch-amd64"]}},
            "jobs": jobs,
        }
        if extra:
            data.update(extra)
        path = self.dir / "pushgate.toml"
        path.write_text(render_toml(data))
        return path

    def load(self, jobs: dict[str, Any], **kw: Any) -> tuple[Loaded, Database]:
        loaded = cfgmod.load(self.config(jobs, **kw))
        db = Database(loaded.database_url)
        db.upgrade()
        return loaded, db


def make_project(tmp: Path, db_url: str) -> Project:
    repo = make_repo(tmp / "src")
    repo.commit("initial", files={"hello.sh": "echo hello\n", "data.txt": "42\n"})
    return Project(tmp, repo, db_url)
