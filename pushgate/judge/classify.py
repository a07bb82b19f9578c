"""Justify every failure of a flight against history (spec/osstest-semantics.md §4).

For each non-pass step (and whole-job entry) the decision table of §4.4 picks a
summary and a blocker; failures that reach the history comparison are compared
with every baseline flight (§4.5), a blocking one is looked for among flights of
the same target versions (heisenbug, §4.6, recursing into those flights), and
the allow list may clear it (§4.7). Categories, dedup and order follow §4.8, the
verdict §4.9. All SQL is in pushgate.db.history; each examined flight costs a
fixed handful of indexed queries whatever the history's length.

Deliberate differences from osstest (spec §9): the allowed mark is set only when a
pattern cleared a blocker (wart 2); an entry carrying a blocker is never hidden by
the dedup (wart 9); a broken job in a heisen flight is intermittent infrastructure
trouble, not a blocker, unless `osstest_heisen_broken=True` (wart 10); revisions
compare by exact equality (wart 12); the processing order is total (wart 16);
allow patterns that do not compile are rejected (wart 17).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from sqlalchemy import Connection

from pushgate.allow import AllowPatternError as AllowPatternError  # re-exported
from pushgate.allow import parse_allow
from pushgate.db import history
from pushgate.db.engine import Database
from pushgate.judge.verdict import (
    BLOCKER_BROKEN,
    BLOCKER_REGRESSION,
    BLOCKER_UNFINISHED,
    CAT_ALLOWABLE,
    CAT_FAIL,
    CAT_HEISENBUG,
    CAT_NONBLOCKING,
    CAT_REGRESSION,
    Classification,
    Failure,
    FlightRef,
    JobLine,
    flight_label,
    job_sort_key,
)
from pushgate.model import flight_outcome

WHOLE_JOB_TESTID = "<job status>"
# Winning priority at or above which no heisenbug search is made (build regressions).
_HEISEN_CEILING = 500


@dataclass
class _Entry:
    """A failure being processed (mutable until it becomes a Failure)."""

    job: str
    stepno: int | None
    testid: str
    status: str
    flight: int
    estimate: float
    summary: str = ""
    blocker: str | None = None
    heisen: bool = False
    allowed: bool = False
    priority: int = 0
    reference: int | None = None
    reference_label: str | None = None
    regression_vs: int | None = None
    passed_in: int | None = None
    needs_history: bool = False

    @property
    def pair(self) -> tuple[str, str]:
        return (self.job, self.testid)


class _Classifier:
    def __init__(
        self,
        conn: Connection,
        main: history.FlightRow,
        this: Mapping[str, str],
        that: Mapping[str, str],
        that_flight: int | None,
        blessings: Sequence[str],
        branches: Sequence[str],
        allow: list[re.Pattern[str]],
        estimates: Mapping[str, float] | None,
        osstest_heisen_broken: bool,
    ):
        self.conn = conn
        self.main = main
        self.this = dict(this)
        self.that = dict(that)
        self.that_flight = that_flight
        self.blessings = list(dict.fromkeys(blessings))
        self.never_blessings = list(dict.fromkeys([*blessings, "real"]))
        self.branches = list(branches)
        self.allow = allow
        self.estimates = estimates
        self.osstest_heisen_broken = osstest_heisen_broken
        self.has_baseline = bool(self.that) or that_flight is not None
        self.mro: list[str] = []
        self.comparison: set[int] = set()

    # -- one flight ----------------------------------------------------------------------------

    def _entries(self, flight: int, statuses: dict[str, str]) -> list[_Entry]:
        """Failures of a flight in processing order (§4.2, §4.3)."""
        if self.estimates is not None:
            est = dict(self.estimates)
        else:
            row = history.flight_row(self.conn, flight) or self.main
            est = history.duration_estimates(self.conn, row, sorted(statuses), self.blessings)
        by_job: dict[str, list[history.StepRow]] = {}
        for s in history.failing_steps(self.conn, flight):
            by_job.setdefault(s.job, []).append(s)
        out: list[_Entry] = []
        for job, jst in statuses.items():
            e = est.get(job, history.UNKNOWN_ESTIMATE_S)
            failing = by_job.get(job, [])
            if jst == "broken" or (jst != "pass" and not failing):
                out.append(_Entry(job, None, WHOLE_JOB_TESTID, jst, flight, e))
            out.extend(_Entry(job, s.stepno, s.testid, s.status, flight, e) for s in failing)
        out.sort(key=lambda x: (x.estimate, x.job, -1 if x.stepno is None else x.stepno))
        return out

    def examine(
        self, flight: int, heisen_mode: bool, done: set[int]
    ) -> tuple[list[_Entry], list[int]]:
        """Classify one flight's failures; returns them and the heisen flights found."""
        self.mro.append(f"flight {flight}")
        statuses = history.job_statuses(self.conn, flight)
        entries = self._entries(flight, statuses)
        for e in entries:
            self._decide_direct(e, heisen_mode)
        pending = [e for e in entries if e.needs_history]
        never = history.never_passed(
            self.conn, [e.pair for e in pending], self.branches, self.never_blessings
        )
        compare: list[_Entry] = []
        for e in pending:
            if e.pair in never:
                e.summary = "never pass"
                self.mro.append(f"never-passed {e.job} {e.testid} {e.status}")
            else:
                compare.append(e)
        self._compare_baseline(flight, compare)
        found = self._heisen_search(flight, [e for e in compare if self._wants_heisen(e)])
        for e in compare:
            if e.blocker is not None and any(p.match(f"{e.job} {e.testid}") for p in self.allow):
                e.blocker = None
                e.allowed = True
            if e.blocker == BLOCKER_REGRESSION:
                self.mro.append(f"regression {e.job} {e.testid} {e.regression_vs}")
        queued = [m for m in found if m not in done]
        return entries, list(dict.fromkeys(queued))

    def _decide_direct(self, e: _Entry, heisen_mode: bool) -> None:
        """Rows 0-4 of the decision table; anything else needs history (rows 5-6)."""
        if e.status == "broken" and not heisen_mode and e.stepno is not None:
            self.mro.append(f"broken-step {e.job} {e.testid}")
        if e.stepno is None:
            self.mro.append(f"broken-job {e.job} {e.status}")
            if heisen_mode and not self.osstest_heisen_broken:
                # Wart 10: another flight's broken job is intermittent trouble, not ours.
                e.heisen = True
            else:
                e.blocker = BLOCKER_BROKEN
        elif e.status in ("blocked", "starved"):
            e.summary = "n/a"
            self.mro.append(f"blocked {e.job} {e.testid}")
        elif e.status == "running":
            e.blocker = BLOCKER_UNFINISHED
            self.mro.append(f"running {e.job} {e.testid}")
        elif e.status not in ("fail", "broken"):
            e.summary = f"[st={e.status}!]"
            e.blocker = BLOCKER_BROKEN
            self.mro.append(f"broken {e.job} {e.testid} {e.status}")
        else:
            e.needs_history = True

    def _candidates(self, revisions: dict[str, str], exclude: set[int]) -> list[history.Candidate]:
        return history.flights_with_built(
            self.conn, revisions, self.branches, self.blessings, exclude=sorted(exclude)
        )

    def _compare_baseline(self, flight: int, entries: list[_Entry]) -> None:
        """Row 6: the priority tuples over every baseline flight (§4.4, §4.5)."""
        for e in entries:
            e.priority, e.summary = 10, "baseline untested"
        if not entries:
            return
        if self.that_flight is not None:
            cands = [
                c
                for c in history.flight_candidates(self.conn, self.that_flight)
                if c.flight not in (flight, self.main.flight)
            ]
        else:
            cands = self._candidates(self.that, {flight, self.main.flight})
        if not cands:
            return
        ids = [c.flight for c in cands]
        present = history.jobs_present(self.conn, ids, [e.job for e in entries])
        status = history.step_statuses(self.conn, ids, [e.pair for e in entries])
        for e in entries:
            for c in cands:
                if (c.flight, e.job) not in present:
                    continue
                self.comparison.add(c.flight)
                cst = status.get((c.flight, e.job, e.testid))
                blocker: str | None = None
                if cst is None:
                    prio, text = 50, "blocked in"
                elif cst == e.status:
                    prio, text = 190, "like"
                elif cst == "fail":
                    prio, text = 180, "failed in"
                elif cst == "pass":
                    prio = 600 if e.job.startswith("build") else 100
                    text = "REGR. vs."
                    blocker = BLOCKER_REGRESSION if e.status == "fail" else e.status
                else:
                    prio, text = 170, f"{cst} in"
                if prio > e.priority:  # ties: the first visited wins
                    label = flight_label(c.flight, c.blessing)
                    e.priority, e.summary, e.blocker = prio, f"{text} {label}", blocker
                    e.reference, e.reference_label = c.flight, label
                    e.regression_vs = c.flight if blocker == BLOCKER_REGRESSION else None

    def _wants_heisen(self, e: _Entry) -> bool:
        return e.blocker is not None and e.priority < _HEISEN_CEILING and bool(self.this)

    def _heisen_search(self, flight: int, entries: list[_Entry]) -> list[int]:
        """§4.6: a flight of the same target versions where the step passed clears it."""
        if not entries:
            return []
        cands = self._candidates(self.this, {flight})
        if not cands:
            return []
        ids = [c.flight for c in cands]
        present = history.jobs_present(self.conn, ids, [e.job for e in entries])
        status = history.step_statuses(self.conn, ids, [e.pair for e in entries])
        found: list[int] = []
        for e in entries:
            for c in cands:
                if (c.flight, e.job) in present and status.get((c.flight, *e.pair)) == "pass":
                    label = flight_label(c.flight, c.blessing)
                    e.priority, e.summary, e.blocker = 20, f"pass in {label}", None
                    e.reference, e.reference_label, e.regression_vs = c.flight, label, None
                    e.heisen, e.passed_in = True, c.flight
                    if c.flight != self.main.flight:
                        found.append(c.flight)
                    break
        return found

    # -- the whole report ----------------------------------------------------------------------

    def category(self, e: _Entry) -> str:
        if not self.has_baseline:
            return CAT_FAIL
        if e.blocker is not None:
            return CAT_REGRESSION
        if e.heisen:
            return CAT_HEISENBUG
        if e.allowed:
            return CAT_ALLOWABLE
        return CAT_NONBLOCKING

    def run(self) -> tuple[list[Failure], list[int], dict[str, str]]:
        main_statuses = history.job_statuses(self.conn, self.main.flight)
        done = {self.main.flight}
        entries, queue = self.examine(self.main.flight, False, done)
        examined: list[int] = []
        while queue:
            m = queue.pop(0)
            if m in done:
                continue
            done.add(m)
            examined.append(m)
            more, found = self.examine(m, True, done)
            entries.extend(more)
            queue.extend(f for f in found if f not in done and f not in queue)
        failures = [
            Failure(
                job=e.job,
                stepno=e.stepno,
                testid=e.testid,
                status=e.status,
                summary=e.summary,
                flight=e.flight,
                in_flight=None if e.flight == self.main.flight else e.flight,
                blocker=e.blocker,
                heisen=e.heisen,
                allowed=e.allowed,
                category=self.category(e),
                reference_flight=e.reference,
                reference_label=e.reference_label,
                regression_vs=e.regression_vs,
                passed_in=e.passed_in,
                order=i,
            )
            for i, e in enumerate(entries)
        ]
        return failures, examined, main_statuses


def dedup_and_order(failures: Sequence[Failure]) -> list[Failure]:
    """§4.8: a later entry for the same job and testid is printed only if its category sorts
    strictly after the one printed before, or if it carries a blocker and no blocking line
    for that job and testid is printed yet (wart 9: a blocker is never hidden). Then order
    by (category, "<status> <annotation>", processing order)."""
    printed: list[Failure] = []
    seen: dict[tuple[str, str], str] = {}
    blocking_shown: set[tuple[str, str]] = set()
    for f in failures:
        key = (f.job, f.testid)
        before = seen.get(key)
        hidden_blocker = f.blocker is not None and key not in blocking_shown
        if before is None or f.category > before or hidden_blocker:
            printed.append(f)
            seen[key] = f.category
            if f.blocker is not None:
                blocking_shown.add(key)
    printed.sort(key=lambda f: (f.category, f.sort_text(), f.order))
    return printed


def verdict(failures: Sequence[Failure]) -> tuple[str, str]:
    """(verdict line, subject prefix) over all failures, main and heisen flights (§4.9)."""
    if not failures:
        return "Perfect :-)", ""
    blockers = {f.blocker for f in failures if f.blocker is not None}
    if BLOCKER_REGRESSION in blockers:
        return "Regressions :-(", "regressions - "
    if not blockers:
        return "Failures :-/ but no regressions.", "tolerable "
    return "Failures and problems with tests :-(", ""


def default_versions(
    conn: Connection, flight: int, tree: str | None
) -> tuple[dict[str, str], dict[str, str]]:
    """this/that from the flight's recorded tuple: the tree under test (given, or the trees
    whose baseline differs from the target, or every tree with a baseline)."""
    rows = [(t, r, b) for t, r, b in history.flight_tuples(conn, flight) if b is not None]
    if tree is not None:
        rows = [x for x in rows if x[0] == tree]
    else:
        moved = [x for x in rows if x[1] != x[2]]
        rows = moved or rows
    return {t: r for t, r, _ in rows}, {t: b for t, _, b in rows if b is not None}


def classify(
    db: Database,
    flight: int,
    *,
    this: Mapping[str, str] | None = None,
    that: Mapping[str, str] | None = None,
    that_flight: int | None = None,
    blessings: Sequence[str] = ("real", "real-retest"),
    branches_also: Sequence[str] = (),
    allow: Sequence[str] = (),
    refer_to_flights: Sequence[int] = (),
    tree: str | None = None,
    estimates: Mapping[str, float] | None = None,
    osstest_heisen_broken: bool = False,
) -> Classification:
    """Classify `flight` against history.

    this/that: tree -> revision; when both are None (and no that_flight), they default to
    the flight's recorded target and baseline of the tree under test (`tree`, else the
    trees that moved). Pass `that={}` for a report without a baseline. `allow`: allow-list
    lines (allow.all then allow.<branch>). `estimates`: job -> duration for the processing
    order, instead of the history's (§8.7). `osstest_heisen_broken`: let a broken job in a
    heisen flight block, as osstest does (wart 10).
    """
    patterns = parse_allow(allow)
    with db.read() as conn:
        main = history.flight_row(conn, flight)
        if main is None:
            raise LookupError(f"no flight {flight}")
        if this is None or (that is None and that_flight is None):
            d_this, d_that = default_versions(conn, flight, tree)
            this = d_this if this is None else this
            if that is None and that_flight is None:
                that = d_that
        that = that or {}
        c = _Classifier(
            conn,
            main,
            this,
            that,
            that_flight,
            blessings,
            [main.branch, *branches_also],
            patterns,
            estimates,
            osstest_heisen_broken,
        )
        failures, examined, statuses = c.run()
        refs = [FlightRef(main.flight, main.branch, main.blessing, main.intended)]
        for r in refer_to_flights:
            row = history.flight_row(conn, r)
            if row is not None:
                refs.append(FlightRef(row.flight, row.branch, row.blessing, row.intended))
    line, prefix = verdict(failures)
    blocking = [f for f in failures if f.blocker is not None]
    main_failures = [f for f in failures if f.in_flight is None]
    mro = list(c.mro)
    if not blocking:
        mro.append("tolerable")
    if not main_failures:
        mro.append("perfect")
    mro += [f"version this {t} {r}" for t, r in sorted(c.this.items())]
    mro += [f"version that {t} {r}" for t, r in sorted(c.that.items())]
    mro += [f"nblockers {len(blocking)}", f"njobs {len(statuses)}"]
    return Classification(
        flight=main.flight,
        branch=main.branch,
        blessing=main.blessing,
        intended=main.intended,
        outcome=flight_outcome(list(statuses.values())),
        failures=dedup_and_order(failures),
        all_failures=failures,
        verdict=line,
        subject_prefix=prefix,
        blocking=bool(blocking),
        reasons=[
            f"{f.blocker}: {f.job} {f.testid} {f.status} {f.annotation}".rstrip() for f in blocking
        ],
        tolerable=not blocking,
        perfect=not failures,
        this=dict(c.this),
        that=dict(c.that),
        that_flight=that_flight,
        heisen_flights=examined,
        mro=mro,
        jobs=[JobLine(j, statuses[j]) for j in sorted(statuses, key=job_sort_key)],
        comparison_flights=sorted(c.comparison),
        flights=refs,
    )
