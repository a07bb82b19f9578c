"""Statuses, blessings and the plain records that flow between stages.

The vocabulary is osstest's (see DESIGN.md): a flight holds jobs, a job holds
numbered steps with stable testids, and statuses roll up from steps to jobs to
the flight's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import StrEnum


class Status(StrEnum):
    """Status of a step or a job."""

    QUEUED = "queued"
    PREPARING = "preparing"
    RUNNING = "running"
    PASS = "pass"
    FAIL = "fail"
    BROKEN = "broken"
    BLOCKED = "blocked"
    STARVED = "starved"
    ABORTED = "aborted"
    SKIP = "skip"


FINAL_JOB_STATUSES = frozenset(
    {Status.PASS, Status.FAIL, Status.BROKEN, Status.BLOCKED, Status.STARVED, Status.ABORTED}
)
ACTIVE_JOB_STATUSES = frozenset({Status.QUEUED, Status.PREPARING, Status.RUNNING})
# A job status that a later change may never overwrite (osstest §1.3).
STICKY_JOB_STATUSES = frozenset({Status.BROKEN, Status.ABORTED})


class Blessing(StrEnum):
    CONSTRUCTING = "constructing"
    RUNNING = "running"
    REAL = "real"
    REAL_RETEST = "real-retest"
    REAL_BISECT = "real-bisect"
    PLAY = "play"
    ADHOC = "adhoc"
    BROKEN = "broken"


def job_rollup(step_statuses: list[tuple[str, bool]]) -> Status:
    """Job status from its finished steps, in step order (osstest §3.4).

    Each item is (status, fatal). The first fatal non-pass step decides; probe
    (non-fatal) failures do not change the job status; a `starved` or
    `blocked` step makes the job so.
    """
    for status, fatal in step_statuses:
        if status in (Status.PASS, Status.SKIP):
            continue
        if status in (Status.BLOCKED, Status.STARVED, Status.BROKEN):
            return Status(status)
        if fatal:
            return Status(status)
    return Status.PASS


def flight_outcome(job_statuses: list[str]) -> str:
    """The outcome word from the set of job statuses (osstest §4.2)."""
    import re

    statuses = sorted(set(job_statuses))
    joined = "/".join(statuses)
    if statuses == ["pass"]:
        return "all pass"
    if statuses == ["fail"]:
        return "ALL FAIL"
    if re.fullmatch(r"(blocked/)?(fail/)?pass", joined):
        return "FAIL"
    return f"trouble: {joined}"


@dataclass(frozen=True)
class FlightInfo:
    flight: int
    branch: str
    blessing: str
    intended: str
    created: float
    started: float | None
    finished: float | None
    revisions: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class JobInfo:
    flight: int
    job: str
    status: str
    started: float | None
    finished: float | None
    host: str | None
    runvars: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class StepInfo:
    flight: int
    job: str
    stepno: int
    testid: str
    status: str
    started: float | None
    finished: float | None
    log: str | None
    fatal: bool = True
