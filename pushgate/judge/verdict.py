"""The classification of one flight: what the classifier hands to the renderers.

Plain dataclasses with a JSON-friendly shape (`to_json()`), filled in by
`pushgate.judge.classify.classify` and consumed by the text, HTML and JSON
renderers. Vocabulary and rules: spec/osstest-semantics.md §4.
"""

from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime
from typing import Any

from pushgate.git import Commit

# Category keys in section order (§4.8).
CAT_FAIL = "A fail"
CAT_REGRESSION = "A regression"
CAT_HEISENBUG = "K heisenbug"
CAT_ALLOWABLE = "M allowable"
CAT_NONBLOCKING = "P nonblocking"

# Verbatim section headings, one list item per printed line (§4.8).
SECTION_HEADINGS: dict[str, tuple[str, ...]] = {
    CAT_FAIL: ("Tests which did not succeed,", "including tests which could not be run:"),
    CAT_REGRESSION: (
        "Tests which did not succeed and are blocking,",
        "including tests which could not be run:",
    ),
    CAT_HEISENBUG: ("Tests which are failing intermittently (not blocking):",),
    CAT_ALLOWABLE: ("Regressions which are regarded as allowable (not blocking):",),
    CAT_NONBLOCKING: ("Tests which did not succeed, but are not blocking:",),
}

# Blocker kinds (§4.4): a regression, infrastructure trouble, or a step still running.
BLOCKER_REGRESSION = "regression"
BLOCKER_BROKEN = "broken"
BLOCKER_UNFINISHED = "unfinished"


def analysis_word(category: str) -> str:
    """The word of X-...-Failures headers: the category key without its letter."""
    return category.split(" ", 1)[1]


def flight_label(flight: int, blessing: str) -> str:
    """A flight number as summaries print it: with the blessing suffix when it has a dash."""
    if "-" in blessing:
        return f"{flight}-{blessing.split('-', 1)[1]}"
    return str(flight)


_X_WORD = re.compile(r"x\w*")


def job_sort_key(job: str) -> str:
    """The jobs-table sort key of §5.7 (also the HTML grid column order)."""
    parts = job.split("-")
    if _X_WORD.fullmatch(parts[-1]):
        parts[-1] = "_" + parts[-1]
    name = "-".join(parts)
    return f"{parts[0]} {'-'.join(reversed(parts[1:]))} {name}"


@dataclass
class Failure:
    """One printed failure line: a non-pass step, or a whole-job entry."""

    job: str
    """Job name."""
    stepno: int | None
    """Step number; None for a whole-job entry."""
    testid: str
    """Step testid; `<job status>` for a whole-job entry."""
    status: str
    """The step's (or, for whole-job entries, the job's) status."""
    summary: str
    """Annotation without the `in M ` prefix: `REGR. vs. 123`, `like 120`, `never pass`, `n/a`,
    `pass in 124-retest`, `baseline untested`, `blocked in 120`, `[st=aborted!]`, `` ..."""
    flight: int
    """The flight in which this failure was seen (the main flight or a heisen flight)."""
    in_flight: int | None = None
    """Set for failures of heisen flights: printed as `in M ` before the summary."""
    blocker: str | None = None
    """`regression`, `broken`, `unfinished` or None (not blocking)."""
    heisen: bool = False
    """Passed in another flight of the same target versions (`pass in M`)."""
    allowed: bool = False
    """An allow pattern cleared its blocker."""
    category: str = CAT_NONBLOCKING
    """Section key: `A fail`, `A regression`, `K heisenbug`, `M allowable`, `P nonblocking`."""
    reference_flight: int | None = None
    """The flight named by the summary (REGR. vs./like/failed in/blocked in/pass in), if any."""
    reference_label: str | None = None
    """reference_flight as printed (`165002-retest`)."""
    regression_vs: int | None = None
    """For blocker `regression`: the baseline flight where it passed (mro `regression` line)."""
    passed_in: int | None = None
    """For heisenbugs: the flight of the same target versions where the step passed."""
    order: int = 0
    """Processing order (§4.3) over the whole report; ties in a section keep this order."""

    @property
    def whole_job(self) -> bool:
        """A whole-job entry (empty step number)."""
        return self.stepno is None

    @property
    def annotation(self) -> str:
        """`in M ` prefix (heisen flights) plus the summary, without trailing space."""
        prefix = f"in {self.in_flight} " if self.in_flight is not None else ""
        return (prefix + self.summary).rstrip()

    @property
    def analysis(self) -> str:
        """The category word (`regression`, `heisenbug`, ...) for X-...-Failures."""
        return analysis_word(self.category)

    @property
    def blocking(self) -> bool:
        return self.blocker is not None

    def sort_text(self) -> str:
        """Order within a section: `"<status> <annotation>"` (ties: processing order)."""
        return f"{self.status} {self.annotation}"

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["annotation"] = self.annotation
        d["analysis"] = self.analysis
        d["blocking"] = self.blocking
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Failure:
        return cls(**{k: d[k] for k in cls.__dataclass_fields__ if k in d})


@dataclass
class FlightRef:
    """A flight named in the report's `flight N branch blessing [intended]` lines."""

    flight: int
    branch: str
    blessing: str
    intended: str


@dataclass
class JobLine:
    """One line of the jobs table (main flight, jobs-table order)."""

    job: str
    status: str


@dataclass
class Classification:
    """The whole classification of one flight against history."""

    flight: int
    """The flight reported."""
    branch: str
    blessing: str
    """The flight's blessing (constructing/running while unfinished)."""
    intended: str
    outcome: str
    """Outcome word from the job statuses: `all pass`, `ALL FAIL`, `FAIL`, `trouble: a/b`."""
    failures: list[Failure] = field(default_factory=list)
    """Printed failures: deduplicated, ordered by section key then sort_text then order."""
    all_failures: list[Failure] = field(default_factory=list)
    """Every failure examined (main flight, then heisen flights), in processing order,
    before dedup. The verdict is computed over these."""
    verdict: str = "Perfect :-)"
    """`Perfect :-)`, `Regressions :-(`, `Failures :-/ but no regressions.`,
    `Failures and problems with tests :-(`."""
    subject_prefix: str = ""
    """`regressions - `, `tolerable ` or ``; the subject is prefix + outcome."""
    blocking: bool = False
    """True when something blocks the push."""
    reasons: list[str] = field(default_factory=list)
    """Why it blocks, one line per blocking failure (`regression test-x guest-start vs 12`)."""
    tolerable: bool = True
    """No blockers (mro `tolerable`)."""
    perfect: bool = True
    """No failures at all (mro `perfect`)."""
    this: dict[str, str] = field(default_factory=dict)
    """Targeted versions, tree -> revision."""
    that: dict[str, str] = field(default_factory=dict)
    """Baseline versions, tree -> revision (empty: no baseline)."""
    that_flight: int | None = None
    """The single comparison flight, when one was imposed."""
    heisen_flights: list[int] = field(default_factory=list)
    """Flights examined in heisen mode, in the order examined."""
    mro: list[str] = field(default_factory=list)
    """mro-compatible lines (§5.11), including `version this/that` lines."""
    jobs: list[JobLine] = field(default_factory=list)
    """Jobs of the main flight with their statuses, in jobs-table order."""
    comparison_flights: list[int] = field(default_factory=list)
    """Every baseline flight that contributed to some failure's comparison, ascending."""
    flights: list[FlightRef] = field(default_factory=list)
    """The main flight then the refer-to flights, for the `flight ...` header lines."""

    @property
    def has_baseline(self) -> bool:
        """A baseline was given (versions or a comparison flight)."""
        return bool(self.that) or self.that_flight is not None

    @property
    def subject(self) -> str:
        """`<prefix><outcome>` without the branch/flight part or ` - PUSHED`."""
        return self.subject_prefix + self.outcome

    def sections(self) -> list[tuple[str, list[Failure]]]:
        """Non-empty sections in key order: (category key, printed failures)."""
        out: dict[str, list[Failure]] = {}
        for f in self.failures:
            out.setdefault(f.category, []).append(f)
        return [(k, out[k]) for k in sorted(out)]

    def to_json(self) -> dict[str, Any]:
        d = asdict(self)
        d["failures"] = [f.to_json() for f in self.failures]
        d["all_failures"] = [f.to_json() for f in self.all_failures]
        d["subject"] = self.subject
        d["has_baseline"] = self.has_baseline
        return d

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Classification:
        """Inverse of `to_json` (derived keys ignored)."""
        fields = {k: d[k] for k in cls.__dataclass_fields__ if k in d}
        fields["failures"] = [Failure.from_json(f) for f in d["failures"]]
        fields["all_failures"] = [Failure.from_json(f) for f in d["all_failures"]]
        fields["jobs"] = [JobLine(**j) for j in d["jobs"]]
        fields["flights"] = [FlightRef(**r) for r in d["flights"]]
        return cls(**fields)


@dataclass(frozen=True)
class AgeLine:
    """One flight of the push-age block. `flight` None prints `(not found)`."""

    flight: int | None
    started: datetime | None = None
    """Start of the flight (aware, or naive meaning UTC)."""
    attempts: int | None = None
    """Flights counted (Failing since / Testing same since); None for the basis line."""


@dataclass(frozen=True)
class PushAge:
    """`Last test of basis` / `Failing since` / `Testing same since` (§5.5)."""

    basis: AgeLine
    failing_since: AgeLine | None
    """Omitted when None or when it is the same flight as `same_since`."""
    same_since: AgeLine
    now: datetime
    """The time of reporting, for the day counts."""


# What a stored failure is, in one word (verdict_failures.kind): for statistics and pages.
def failure_kind(f: Failure) -> str:
    if f.allowed:
        return "allowed"
    if f.heisen:
        return "heisenbug"
    if f.blocker is not None:
        return f.blocker  # regression | broken | unfinished
    s = f.summary
    for prefix, kind in (
        ("like ", "like"),
        ("never pass", "never-pass"),
        ("n/a", "blocked"),
        ("blocked", "blocked"),
        ("baseline untested", "baseline-untested"),
    ):
        if s.startswith(prefix):
            return kind
    return "failed"


def _dt(s: str | None) -> datetime | None:
    return datetime.fromisoformat(s) if s else None


def _age_json(a: AgeLine | None) -> dict[str, Any] | None:
    if a is None:
        return None
    return {
        "flight": a.flight,
        "started": a.started.isoformat() if a.started else None,
        "attempts": a.attempts,
    }


def _age_from(d: dict[str, Any] | None) -> AgeLine | None:
    return None if d is None else AgeLine(d["flight"], _dt(d["started"]), d["attempts"])


def _commit_json(c: Commit) -> dict[str, Any]:
    d = asdict(c)
    d["author_date"] = c.author_date.isoformat()
    d["committer_date"] = c.committer_date.isoformat()
    return d


def _commit_from(d: dict[str, Any]) -> Commit:
    d = dict(d)
    d["parents"] = tuple(d["parents"])
    d["trailers"] = tuple(tuple(t) for t in d["trailers"])
    d["author_date"] = datetime.fromisoformat(d["author_date"])
    d["committer_date"] = datetime.fromisoformat(d["committer_date"])
    return Commit(**d)


@dataclass
class Verdict:
    """What was decided about one flight, stored once (invariant 9)."""

    classification: Classification
    tree: str
    """The tree under test ('' when the flight has no revisions)."""
    mode: str = "normal"
    """The gate cycle's mode (normal, baseline-test, up-to-date); `normal` outside a cycle."""
    retest_flight: int | None = None
    complete: bool = True
    """The flight had finished; an incomplete verdict is never stored (nor reported as one)."""
    decided: float = 0.0
    """When it was judged (epoch seconds); the report's day counts are taken at this time."""
    push_age: PushAge | None = None
    people: list[str] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)
    revision_log: str | None = None
    """`git log` of baseline..target, shown when the revision was not pushed."""
    isolated: bool = True
    """Its steps ran isolated from the harness (`runner.isolation` was on)."""
    jobs_total: int = 0
    jobs_finished: int = 0

    @property
    def flight(self) -> int:
        return self.classification.flight

    def to_json(self) -> dict[str, Any]:
        age = self.push_age
        return {
            "classification": self.classification.to_json(),
            "tree": self.tree,
            "mode": self.mode,
            "retest_flight": self.retest_flight,
            "complete": self.complete,
            "decided": self.decided,
            "push_age": None
            if age is None
            else {
                "basis": _age_json(age.basis),
                "failing_since": _age_json(age.failing_since),
                "same_since": _age_json(age.same_since),
                "now": age.now.isoformat(),
            },
            "people": list(self.people),
            "commits": [_commit_json(c) for c in self.commits],
            "revision_log": self.revision_log,
            "isolated": self.isolated,
            "jobs_total": self.jobs_total,
            "jobs_finished": self.jobs_finished,
        }

    @classmethod
    def from_json(cls, d: dict[str, Any]) -> Verdict:
        a = d.get("push_age")
        age = None
        if a is not None:
            basis = _age_from(a["basis"])
            same = _age_from(a["same_since"])
            assert basis is not None and same is not None
            now = datetime.fromisoformat(a["now"])
            age = PushAge(basis, _age_from(a["failing_since"]), same, now)
        return cls(
            classification=Classification.from_json(d["classification"]),
            tree=d["tree"],
            mode=d["mode"],
            retest_flight=d["retest_flight"],
            complete=d["complete"],
            decided=d["decided"],
            push_age=age,
            people=list(d["people"]),
            commits=[_commit_from(c) for c in d["commits"]],
            revision_log=d["revision_log"],
            isolated=d.get("isolated", True),
            jobs_total=d.get("jobs_total", 0),
            jobs_finished=d.get("jobs_finished", 0),
        )

    def decided_at(self) -> datetime:
        return datetime.fromtimestamp(self.decided, UTC)
