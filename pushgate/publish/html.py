"""Static HTML pages of a flight (`pushgate report N --html DIR`, spec §5.13).

`index.html`: flight information, the classification (if given) and a grid of steps
(rows: testids in a topological order of every job's step sequence; columns: jobs in
jobs-table order), each cell coloured by status and linking to the step's log. One page
per job: steps with times and logs, runvars with their source, host, artifacts.

Input is plain data (`FlightData`, filled by the caller from the database). Every text is
escaped by Jinja2's autoescape; links are percent-encoded relative paths under `logs_base`,
and page file names are derived from job names so that no name can leave `out_dir`.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import quote

from jinja2 import Environment, FileSystemLoader, StrictUndefined

from pushgate.judge.verdict import SECTION_HEADINGS, Classification, job_sort_key
from pushgate.publish.text import render_failure, render_subject
from pushgate.redact import redact_url

TEMPLATES = Path(__file__).parent / "templates"
CSS = """
body { font-family: sans-serif; font-size: 13px; }
table { border-collapse: collapse; }
td, th { border: 1px solid #ccc; padding: 2px 4px; text-align: left; vertical-align: top; }
th.job { writing-mode: vertical-rl; transform: rotate(180deg); white-space: nowrap; }
.st-pass { background: #8f8; }
.st-fail { background: #f88; }
.st-other { background: #ff8; }
pre { margin: 0; }
"""
_SAFE_NAME = re.compile(r"[^A-Za-z0-9._-]")


@dataclass(frozen=True)
class StepData:
    stepno: int
    testid: str
    status: str
    started: float | None = None
    finished: float | None = None
    log: str | None = None
    """Log path relative to the flight's logs directory."""


@dataclass(frozen=True)
class RunvarData:
    name: str
    value: str
    synth: bool = False
    """Written during execution (`built_revision_*`, `host`), not by the flight definition."""


@dataclass(frozen=True)
class ArtifactData:
    name: str
    path: str | None = None
    """Path relative to the flight's logs directory, if it can be linked."""
    size: int | None = None


@dataclass
class JobData:
    job: str
    status: str
    steps: list[StepData] = field(default_factory=list)
    runvars: list[RunvarData] = field(default_factory=list)
    host: str | None = None
    started: float | None = None
    finished: float | None = None
    artifacts: list[ArtifactData] = field(default_factory=list)
    logs: list[str] = field(default_factory=list)
    """Other job-level logs (relative paths)."""


@dataclass
class FlightData:
    flight: int
    branch: str
    blessing: str
    intended: str
    started: float | None = None
    finished: float | None = None
    revisions: dict[str, str] = field(default_factory=dict)
    jobs: list[JobData] = field(default_factory=list)
    links: list[tuple[str, str]] = field(default_factory=list)
    """(label, URL) of related pages, e.g. the bisections' revision graphs."""


def status_class(status: str) -> str:
    return status if status in ("pass", "fail") else "other"


def job_page_name(job: str) -> str:
    """A file name for the job's page: the name when it is plain, else a sanitised name
    plus a hash (distinct jobs never share a page, and nothing escapes the directory)."""
    safe = _SAFE_NAME.sub("_", job)
    if safe != job or safe.startswith("."):
        safe = safe.lstrip(".") + "-" + hashlib.sha256(job.encode()).hexdigest()[:10]
    return f"job-{safe}.html"


def link(base: str, path: str | None) -> str | None:
    """`base` + the percent-encoded path: a scheme in `path` becomes inert (`%3A`)."""
    if not path:
        return None
    return base + quote(path.lstrip("/"), safe="/-._~")


def _when(t: float | None) -> str:
    if t is None:
        return ""
    return datetime.fromtimestamp(t, UTC).strftime("%Y-%m-%d %H:%M:%S Z")


def _duration(s: StepData) -> str:
    if s.started is None or s.finished is None:
        return ""
    return f"{s.finished - s.started:.0f} s"


def step_rows(jobs: list[JobData]) -> list[str]:
    """Row labels: a topological order of the jobs' step sequences (first seen first on
    ties, the earliest remaining row when sequences disagree); repeated testids within a
    job are numbered `[2]`, `[3]`; `logs-capture` rows last."""
    order: dict[str, int] = {}
    after: dict[str, list[str]] = {}
    for j in jobs:
        seen: dict[str, int] = {}
        prev: str | None = None
        for s in sorted(j.steps, key=lambda s: s.stepno):
            seen[s.testid] = seen.get(s.testid, 0) + 1
            label = s.testid if seen[s.testid] == 1 else f"{s.testid} [{seen[s.testid]}]"
            order.setdefault(label, len(order))
            after.setdefault(label, [])
            if prev is not None and label not in after[prev]:
                after[prev].append(label)
            prev = label
    indeg = {x: 0 for x in order}
    for x in after:
        for y in after[x]:
            indeg[y] += 1
    out: list[str] = []
    left = set(order)
    while left:
        ready = [x for x in left if indeg[x] == 0] or list(left)  # a cycle: take the earliest
        x = min(ready, key=lambda r: order[r])
        left.discard(x)
        out.append(x)
        for y in after[x]:
            indeg[y] -= 1
    return [x for x in out if not x.startswith("logs-capture")] + [
        x for x in out if x.startswith("logs-capture")
    ]


def _labelled_steps(j: JobData) -> dict[str, StepData]:
    seen: dict[str, int] = {}
    out: dict[str, StepData] = {}
    for s in sorted(j.steps, key=lambda s: s.stepno):
        seen[s.testid] = seen.get(s.testid, 0) + 1
        out[s.testid if seen[s.testid] == 1 else f"{s.testid} [{seen[s.testid]}]"] = s
    return out


def _env() -> Environment:
    env = Environment(
        loader=FileSystemLoader(TEMPLATES),
        autoescape=True,
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )
    env.filters["when"] = _when
    return env


def _report(c: Classification) -> dict[str, Any]:
    return {
        "verdict": c.verdict,
        "subject": render_subject(c),
        "sections": [
            (" ".join(SECTION_HEADINGS[k]), [render_failure(f) for f in fs])
            for k, fs in c.sections()
        ],
    }


def write_html(
    out_dir: Path,
    flight: FlightData,
    classification: Classification | None = None,
    *,
    logs_base: str = "",
) -> list[Path]:
    """Write index.html and one page per job into out_dir; return the paths written.

    logs_base: prefix of log and artifact links (a URL ending in `/`, or a relative path
    from out_dir such as `../logs/123/`); empty means the logs sit beside the pages."""
    out_dir.mkdir(parents=True, exist_ok=True)
    env = _env()
    notes: dict[tuple[str, str], str] = {}
    if classification is not None:
        for f in classification.failures:
            if f.in_flight is None:
                notes[(f.job, f.testid)] = f"{f.status} {f.annotation}".strip()
    jobs = sorted(flight.jobs, key=lambda j: job_sort_key(j.job))
    views = []
    for j in jobs:
        steps = [
            {
                "stepno": s.stepno,
                "testid": s.testid,
                "status": s.status,
                "status_class": status_class(s.status),
                "started": s.started,
                "duration": _duration(s),
                "href": link(logs_base, s.log),
                "note": notes.get((j.job, s.testid), ""),
            }
            for s in sorted(j.steps, key=lambda s: s.stepno)
        ]
        views.append(
            {
                "job": j.job,
                "status": j.status,
                "status_class": status_class(j.status),
                "page": job_page_name(j.job),
                "host": j.host,
                "started": j.started,
                "finished": j.finished,
                "steps": steps,
                # Redacted again: flights made before tree URLs were redacted at
                # construction kept their credentials in tree_* runvars.
                "runvars": [
                    RunvarData(r.name, redact_url(r.value), r.synth)
                    for r in sorted(j.runvars, key=lambda r: (r.synth, r.name))
                ],
                "artifacts": [
                    {"name": a.name, "href": link(logs_base, a.path), "size": a.size}
                    for a in j.artifacts
                ],
                "logs": [{"name": x, "href": link(logs_base, x)} for x in j.logs],
            }
        )
    labelled = [_labelled_steps(j) for j in jobs]
    rows = []
    for label in step_rows(jobs):
        cells: list[dict[str, Any] | None] = []
        for j, by_label in zip(jobs, labelled, strict=True):
            s = by_label.get(label)
            cells.append(
                None
                if s is None
                else {
                    "text": s.status,
                    "status_class": status_class(s.status),
                    "href": link(logs_base, s.log),
                    "note": notes.get((j.job, s.testid), ""),
                }
            )
        rows.append({"label": label, "cells": cells})
    unfinished = sum(
        1 for j in flight.jobs for s in j.steps if s.status in ("running", "queued", "preparing")
    )
    written = []
    index = out_dir / "index.html"
    index.write_text(
        env.get_template("flight.html").render(
            flight=flight,
            jobs=views,
            rows=rows,
            css=CSS,
            unfinished=unfinished,
            report=_report(classification) if classification is not None else None,
        ),
        encoding="utf-8",
    )
    written.append(index)
    job_tpl = env.get_template("job.html")
    for v in views:
        page = out_dir / str(v["page"])
        page.write_text(job_tpl.render(flight=flight, job=v, css=CSS), encoding="utf-8")
        written.append(page)
    return written
