"""Insert a flight history directly into the database, for classifier and report tests.

Usage::

    h = History(db)
    f = h.flight("xen-unstable", revs={"xen": "aaa"}, blessing="real")
    f.job("build-amd64", steps=[("xen-build", "pass")])
    f.job("test-x", deps={"buildjob": "build-amd64"},
          steps=[("build-check(1)", "pass"), ("guest-start", "fail")])
    h.finish(f)          # writes flight, jobs, runvars, job_deps, steps, then flight_built

Steps are `(testid, status)`, `(stepno, testid, status)` or either form with a trailing
`fatal` bool; unnumbered steps take the next number. A job's status defaults to the
roll-up of its steps (pushgate.model.job_rollup). Build jobs (name starting `build`) and
jobs without deps record `built_revision_<tree>` for the flight's revisions unless
`built=` says otherwise (`built={}` records none). Deps are `{"buildjob": "build-amd64"}`
(same flight), `"123.build-amd64"` or `(123, "build-amd64")` (another flight).
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field

from sqlalchemy import func, insert, select

from pushgate.db.engine import Database
from pushgate.db.history import compute_flight_built
from pushgate.db.schema import flight_revisions, flights, job_deps, jobs, runvars, steps
from pushgate.model import job_rollup

StepSpec = tuple[object, ...]
DepSpec = str | tuple[int, str]

T0 = 1_700_000_000.0
FLIGHT_SPACING_S = 3600.0
STEP_S = 10.0


@dataclass
class JobSpec:
    name: str
    status: str
    steps: list[tuple[int, str, str, bool]]
    deps: dict[str, tuple[int, str]]
    runvars: dict[str, str]
    synth: dict[str, str]
    step_s: float


@dataclass
class FlightSpec:
    """A flight being built; call job() then History.finish() (or save())."""

    flight: int
    branch: str
    revs: dict[str, str]
    blessing: str
    intended: str
    created: float
    parent_flight: int | None
    baseline: dict[str, str] = field(default_factory=dict)
    jobs: list[JobSpec] = field(default_factory=list)

    def job(
        self,
        name: str,
        steps: Sequence[StepSpec] = (),
        *,
        status: str | None = None,
        deps: Mapping[str, DepSpec] | None = None,
        built: Mapping[str, str] | None = None,
        runvars: Mapping[str, str] | None = None,
        host: str | None = None,
        duration: float | None = None,
    ) -> FlightSpec:
        """Add a job; returns the flight so calls chain. duration: total step time (s)."""
        parsed: list[tuple[int, str, str, bool]] = []
        nxt = 1
        for s in steps:
            items = list(s)
            fatal = True
            if isinstance(items[-1], bool):
                fatal = bool(items.pop())
            if isinstance(items[0], int):
                stepno, testid, st = int(items[0]), str(items[1]), str(items[2])
            else:
                stepno, testid, st = nxt, str(items[0]), str(items[1])
            nxt = stepno + 1
            parsed.append((stepno, testid, st, fatal))
        dep_refs: dict[str, tuple[int, str]] = {}
        for dname, ref in (deps or {}).items():
            if isinstance(ref, tuple):
                dep_refs[dname] = (int(ref[0]), str(ref[1]))
            elif "." in ref and ref.split(".", 1)[0].isdigit():
                fl, jb = ref.split(".", 1)
                dep_refs[dname] = (int(fl), jb)
            else:
                dep_refs[dname] = (self.flight, ref)
        if status is None:
            status = (
                str(job_rollup([(st, fatal) for _, _, st, fatal in parsed])) if parsed else ("pass")
            )
        inputs = {f"revision_{t}": r for t, r in self.revs.items()}
        inputs.update({f"tree_{t}": f"https://example.org/{t}.git" for t in self.revs})
        inputs.update(
            {d: f"{fl}.{jb}" if fl != self.flight else jb for d, (fl, jb) in dep_refs.items()}
        )
        inputs.update(runvars or {})
        synth: dict[str, str] = {}
        if built is None and (name.startswith("build") or not dep_refs):
            built = self.revs
        synth.update({f"built_revision_{t}": r for t, r in (built or {}).items()})
        if host is not None:
            synth["host"] = host
        step_s = duration / max(len(parsed), 1) if duration is not None else STEP_S
        self.jobs.append(JobSpec(name, status, parsed, dep_refs, inputs, synth, step_s))
        return self


class History:
    """Writes flights into a Database. Flight numbers increase; explicit ones are allowed."""

    def __init__(self, db: Database):
        self.db = db

    def _next_flight(self) -> int:
        with self.db.read() as conn:
            top = conn.execute(select(func.max(flights.c.flight))).scalar()
        return int(top or 0) + 1

    def flight(
        self,
        branch: str,
        revs: Mapping[str, str],
        *,
        blessing: str = "real",
        intended: str = "real",
        flight: int | None = None,
        parent_flight: int | None = None,
        created: float | None = None,
        baseline: Mapping[str, str] | None = None,
    ) -> FlightSpec:
        """Start a flight spec (nothing is written until finish()/save()).

        baseline: tree -> tested-ref tip recorded with the flight (the report's default that).
        """
        number = flight if flight is not None else self._next_flight()
        when = created if created is not None else T0 + number * FLIGHT_SPACING_S
        return FlightSpec(
            number,
            branch,
            dict(revs),
            blessing,
            intended,
            when,
            parent_flight,
            dict(baseline or {}),
        )

    def finish(self, f: FlightSpec) -> int:
        """Write the flight as finished with its final blessing, then its built tuple."""
        return self.save(f, finished=True)

    def save(self, f: FlightSpec, *, finished: bool = True) -> int:
        """Write the flight; unfinished flights keep blessing `running` and no built tuple."""
        blessing = f.blessing if finished else "running"
        started = f.created + 1
        ends: list[float] = []
        job_rows, rv_rows, dep_rows, step_rows = [], [], [], []
        for ordinal, j in enumerate(f.jobs):
            t = started
            for stepno, testid, st, fatal in j.steps:
                done = st not in ("running", "queued", "preparing")
                step_rows.append(
                    {
                        "flight": f.flight,
                        "job": j.name,
                        "stepno": stepno,
                        "testid": testid,
                        "status": st,
                        "fatal": fatal,
                        "started": t,
                        "finished": t + j.step_s if done else None,
                        "log": f"{j.name}/{stepno}.log",
                        "reason": None,
                    }
                )
                t += j.step_s
            ends.append(t)
            job_rows.append(
                {
                    "flight": f.flight,
                    "job": j.name,
                    "status": j.status,
                    "ordinal": ordinal,
                    "started": started,
                    "finished": t,
                    "attempts": 0,
                }
            )
            for name, value in j.runvars.items():
                rv_rows.append(
                    {
                        "flight": f.flight,
                        "job": j.name,
                        "name": name,
                        "value": value,
                        "synth": False,
                    }
                )
            for name, value in j.synth.items():
                rv_rows.append(
                    {"flight": f.flight, "job": j.name, "name": name, "value": value, "synth": True}
                )
            for name, (dfl, djob) in j.deps.items():
                dep_rows.append(
                    {
                        "flight": f.flight,
                        "job": j.name,
                        "name": name,
                        "dep_flight": dfl,
                        "dep_job": djob,
                    }
                )
        with self.db.write() as conn:
            conn.execute(
                insert(flights),
                [
                    {
                        "flight": f.flight,
                        "branch": f.branch,
                        "blessing": blessing,
                        "intended": f.intended,
                        "bless_as": f.blessing,
                        "created": f.created,
                        "started": started,
                        "finished": max(ends, default=started) if finished else None,
                        "parent_flight": f.parent_flight,
                    }
                ],
            )
            if f.revs:
                conn.execute(
                    insert(flight_revisions),
                    [
                        {
                            "flight": f.flight,
                            "tree": t,
                            "revision": r,
                            "url": f"https://example.org/{t}.git",
                            "baseline": f.baseline.get(t),
                        }
                        for t, r in f.revs.items()
                    ],
                )
            for table, rows in (
                (jobs, job_rows),
                (runvars, rv_rows),
                (job_deps, dep_rows),
                (steps, step_rows),
            ):
                if rows:
                    conn.execute(insert(table), rows)
            if finished:
                compute_flight_built(conn, f.flight)
        return f.flight

    def many(self, specs: Iterable[FlightSpec]) -> list[int]:
        return [self.finish(s) for s in specs]
