"""Golden tests: real osstest reports, reproduced by the classifier and the text renderer.

For each real flight report in shared/osstest-reports, the test parses the report, builds a
history of flights whose step results imply every failure annotation in it (the baseline
flight, an older flight where the non-never-pass steps passed, the retest and heisen
flights), runs `pushgate.judge.classify.classify` and `pushgate.publish.text`, and compares line by
line: the subject, the X-...-Failures items, the flight lines, the verdict and failure
sections, and the jobs table. Flight and job names are the real ones.

The processing order (osstest's duration estimates, §4.3) decides the order of tied lines;
it is recovered from the report itself (tied lines give before/after constraints between
jobs) and handed to the classifier as `estimates`.
"""

from __future__ import annotations

import email.utils
import re
from collections import defaultdict
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import pytest

from pushgate.db.engine import Database
from pushgate.judge.classify import classify
from pushgate.judge.verdict import (
    CAT_ALLOWABLE,
    CAT_FAIL,
    CAT_HEISENBUG,
    CAT_NONBLOCKING,
    CAT_REGRESSION,
    SECTION_HEADINGS,
    Classification,
)
from pushgate.publish.text import (
    AgeLine,
    PushAge,
    ReportContext,
    body_lines,
    failure_header_items,
    render_subject,
)
from tests.historybuilder import History
from tests.shared import osstest_reports


def _shared_dir() -> Path:
    return osstest_reports()


# The ten flight reports (the other two are bisection mails). Allow-list lines are the ones
# each report's branch must have had for its allowable lines (spec §4.7).
CASES: dict[str, list[str]] = {
    "libvirt-181635.txt": [],
    "linux-linus-183973.txt": [],
    "ovmf-167324.txt": [],
    "ovmf-185015.txt": [],
    "qemu-mainline-170902.txt": [],
    "xen-4.14-testing-152124.txt": ["test-@@-rtds@@"],
    "xen-unstable-164996.txt": [],
    "xen-unstable-smoke-158429.txt": ["test-@@-qemuu-@@ guest-localmigrate"],
    "xen-unstable-smoke-159709.txt": [],
    "xen-unstable-smoke-180276.txt": [],
}

# Reports whose tied lines interleave the steps of several jobs (see processing_order):
# within such a run of tied lines only the set of lines is compared.
INTERLEAVED = {"linux-linus-183973.txt"}

HEADING_TO_CAT = {lines[0]: key for key, lines in SECTION_HEADINGS.items() if key != CAT_FAIL}
HEADING_TO_CAT[SECTION_HEADINGS[CAT_FAIL][0]] = CAT_FAIL
FLIGHT_RE = re.compile(r"^flight (\d+) (\S+) (\S+) \[(\S+)\]$")
LINE_RE = re.compile(r"^ (\S+) +(?:(\d+) +(\S+)|(<job status>)) +(\S+)(?: +(.*))?$")
IN_RE = re.compile(r"^in (\d+)(?: (.*))?$")
REF_RE = re.compile(r"^(?:like|REGR\. vs\.) (\d+)$")
AGE_RE = re.compile(
    r"^(Last test of basis|Failing since|Testing same since) +(\d+)  "
    r"(\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) Z +(\d+) days(?: +(\d+) attempts)?$"
)
PASS_IN_RE = re.compile(r"^pass in (\d+)(-retest)?$")


@dataclass
class Line:
    category: str
    job: str
    stepno: int | None
    testid: str
    status: str
    in_flight: int | None
    summary: str
    text: str


@dataclass
class RealReport:
    subject: str
    failure_items: list[str]
    flight_lines: list[str]
    flights: list[tuple[int, str, str, str]]
    verdict_and_sections: list[str]
    lines: list[Line]
    this: dict[str, str]
    that: dict[str, str]
    basis: int
    jobs: list[tuple[str, str]]
    jobs_lines: list[str]
    body: list[str] = field(default_factory=list)
    push_age: PushAge | None = None
    people: list[str] = field(default_factory=list)


def _headers(head: list[str]) -> dict[str, list[str]]:
    """Header name -> its physical lines' values (first line's value, then continuations)."""
    out: dict[str, list[str]] = {}
    name = ""
    for line in head:
        if line[:1] in (" ", "\t") and name:
            out[name].append(line.strip())
        else:
            name, _, value = line.partition(":")
            out[name] = [value.strip()] if value.strip() else []
    return out


def _versions(body: list[str], heading: str) -> dict[str, str]:
    if heading not in body:
        return {}
    out = {}
    for line in body[body.index(heading) + 1 :]:
        if not line.startswith(" "):
            break
        tree, rev = line.split()
        out[tree] = rev
    return out


def parse_report(path: Path) -> RealReport:
    text = path.read_text(encoding="utf-8").split("\n")
    start = next(i for i, x in enumerate(text) if x.startswith("-" * 70)) + 1
    blank = text.index("", start)
    hdr = _headers(text[start:blank])
    body = text[blank + 1 :]
    subject = " ".join(hdr["Subject"])  # unfold a refolded subject
    flines = [x for x in body[: body.index("")] if x.startswith("flight ")]
    flights = [m.groups() for m in map(FLIGHT_RE.match, flines) if m]
    urls_end = body.index("")
    end = (
        body.index("version targeted for testing:")
        if "version targeted for testing:" in body
        else body.index("jobs:")
    )
    region = body[urls_end + 1 : end]
    while region and region[-1] == "":
        region.pop()
    lines: list[Line] = []
    cat = ""
    for x in region:
        if x in HEADING_TO_CAT:
            cat = HEADING_TO_CAT[x]
            continue
        if not x.startswith(" "):
            continue
        m = LINE_RE.match(x)
        assert m, f"unparsed failure line {x!r}"
        job, step, testid, whole, status, ann = m.groups()
        ann = ann or ""
        im = IN_RE.match(ann)
        lines.append(
            Line(
                cat,
                job,
                int(step) if step else None,
                testid or whole,
                status,
                int(im[1]) if im else None,
                (im[2] or "") if im else ann,
                x,
            )
        )
    basis_line = next(x for x in body if x.startswith("Last test of basis"))
    jstart = body.index("jobs:") + 1
    jlines = body[jstart : body.index("", jstart)]
    return RealReport(
        subject=subject,
        failure_items=hdr.get("X-Osstest-Failures", []),
        flight_lines=flines,
        flights=[(int(a), b, c, d) for a, b, c, d in flights],
        verdict_and_sections=region,
        lines=lines,
        this=_versions(body, "version targeted for testing:"),
        that=_versions(body, "baseline version:"),
        basis=int(basis_line.split()[4]),
        jobs=[(x.split()[0], x.split()[1]) for x in jlines],
        jobs_lines=jlines,
        body=body,
        push_age=_push_age(body, email.utils.parsedate_to_datetime(hdr["Date"][0])),
        people=_people(body),
    )


def _push_age(body: list[str], now: datetime) -> PushAge | None:
    """The real block as input data, `now` being the mail's Date (the day counts, computed
    again by the renderer, must come out as osstest printed them)."""
    found: dict[str, AgeLine] = {}
    for x in body:
        m = AGE_RE.match(x)
        if m:
            started = datetime.strptime(m[3], "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
            found[m[1]] = AgeLine(int(m[2]), started, int(m[5]) if m[5] else None)
    if not found:
        return None
    return PushAge(
        found["Last test of basis"], found.get("Failing since"), found["Testing same since"], now
    )


def _people(body: list[str]) -> list[str]:
    if "People who touched revisions under test:" not in body:
        return []
    i = body.index("People who touched revisions under test:") + 1
    return [x[2:] for x in body[i : body.index("", i)]]


# --- building the history ---------------------------------------------------------------------


Steps = dict[int, tuple[str, str]]  # stepno -> (testid, status)


@dataclass
class FlightPlan:
    number: int
    revs: dict[str, str]
    blessing: str = "real"
    jobs: dict[str, Steps] = field(default_factory=dict)
    job_status: dict[str, str] = field(default_factory=dict)


def _tie_key(ln: Line) -> tuple[object, ...]:
    return (ln.category, ln.status, ln.in_flight, ln.summary)


def _reaches(after: dict[str, set[str]], a: str, b: str) -> bool:
    seen, todo = set(), [a]
    while todo:
        x = todo.pop()
        if x == b:
            return True
        if x not in seen:
            seen.add(x)
            todo.extend(after[x])
    return False


def processing_order(r: RealReport) -> tuple[dict[str, float], bool]:
    """Job estimates consistent with the report: tied lines (same section and sort text,
    same examined flight) keep processing order, which is by estimate then job then step.

    Returns the estimates and whether every tie could be honoured: osstest sometimes
    interleaved the steps of jobs with equal estimates (thunderx 15, xl 15, thunderx 16,
    xl 16), which pushgate's total order (estimate, job, step) cannot express."""
    after: dict[str, set[str]] = defaultdict(set)
    jobs = [j for j, _ in r.jobs]
    exact = True
    for a, b in zip(r.lines, r.lines[1:], strict=False):
        if _tie_key(a) == _tie_key(b) and a.job != b.job:
            if _reaches(after, b.job, a.job):
                exact = False
            else:
                after[a.job].add(b.job)
    order: list[str] = []
    indeg = {j: 0 for j in jobs}
    for a in list(after):
        for b in after[a]:
            indeg[b] += 1
    ready = sorted(j for j in jobs if indeg[j] == 0)
    while ready:
        j = ready.pop(0)
        order.append(j)
        for b in sorted(after[j]):
            indeg[b] -= 1
            if indeg[b] == 0:
                ready.append(b)
                ready.sort()
    assert len(order) == len(jobs)
    return {j: 1000.0 + 10 * i for i, j in enumerate(order)}, exact


def plan_history(r: RealReport) -> list[FlightPlan]:
    """Flights whose results imply every annotation of the report."""
    (tree,) = r.this
    target, base = r.this[tree], r.that[tree]
    main_no = r.flights[0][0]
    main = FlightPlan(main_no, {tree: target})
    main.job_status = dict(r.jobs)
    main.jobs = {j: {} for j, _ in r.jobs}
    others: dict[int, FlightPlan] = {}
    retests = {n for n, _b, bl, _i in r.flights[1:] if bl == "real-retest"}

    def other(n: int) -> FlightPlan:
        if n not in others:
            others[n] = FlightPlan(n, {tree: target}, "real-retest" if n in retests else "real")
        return others[n]

    refs = {int(m[1]) for ln in r.lines if (m := REF_RE.match(ln.summary))}
    assert refs <= {r.basis}, f"reference flights {refs} other than the basis {r.basis}"
    governing: dict[tuple[str, int], Line] = {}
    for ln in r.lines:
        if ln.in_flight is None and ln.stepno is not None:
            main.jobs[ln.job][ln.stepno] = (ln.testid, ln.status)
            governing[(ln.job, ln.stepno)] = ln
    for ln in r.lines:
        m = PASS_IN_RE.match(ln.summary)
        if ln.in_flight is None and m and ln.stepno is not None:
            other(int(m[1])).jobs.setdefault(ln.job, {})[ln.stepno] = (ln.testid, "pass")
    for ln in r.lines:
        if ln.in_flight is None:
            continue
        fl = other(ln.in_flight)
        steps = fl.jobs.setdefault(ln.job, {})
        if ln.stepno is None:
            fl.job_status[ln.job] = ln.status
            continue
        steps[ln.stepno] = (ln.testid, ln.status)
        governing.setdefault((ln.job, ln.stepno), ln)
        if ln.summary != "never pass":
            main.jobs[ln.job].setdefault(ln.stepno, (ln.testid, "pass"))
    # A retest flight reruns every job with a blocking failure; there it fails the same way.
    for n in retests:
        for ln in r.lines:
            if ln.in_flight is None and ln.category == CAT_REGRESSION:
                other(n).jobs.setdefault(ln.job, {})
    # Jobs in other flights of the same target fail the main flight's other steps alike.
    for fl in others.values():
        for job, steps in fl.jobs.items():
            for s, (t, st) in main.jobs[job].items():
                if st != "pass":
                    steps.setdefault(s, (t, st))
            fl.job_status.setdefault(
                job, "fail" if any(st != "pass" for _t, st in steps.values()) else "pass"
            )
    basis = FlightPlan(r.basis, {tree: base})
    old = FlightPlan(min([main_no, r.basis, *others]) - 1, {tree: "0" * 40})
    for job, _ in r.jobs:
        known: Steps = {}
        for fl in (main, *others.values()):
            for s, (t, _st) in fl.jobs.get(job, {}).items():
                known.setdefault(s, (t, "pass"))
        basis.jobs[job] = {}
        old.jobs[job] = {}
        for s, (t, _p) in known.items():
            ln = governing.get((job, s))
            summary = ln.summary if ln else ""
            if ln and (
                summary == "never pass" or REF_RE.match(summary) and summary.startswith("like")
            ):
                basis.jobs[job][s] = (t, ln.status)
            else:
                basis.jobs[job][s] = (t, "pass")
            if not (ln and summary == "never pass"):
                old.jobs[job][s] = (t, "pass")
    for fl in (basis, old):
        fl.job_status = {
            j: "fail" if any(st != "pass" for _t, st in s.values()) else "pass"
            for j, s in fl.jobs.items()
        }
    return [old, basis, *sorted(others.values(), key=lambda f: f.number), main]


def write_history(db: Database, branch: str, plans: list[FlightPlan]) -> None:
    h = History(db)
    for p in sorted(plans, key=lambda f: f.number):
        spec = h.flight(branch, p.revs, blessing=p.blessing, flight=p.number)
        for job, steps in p.jobs.items():
            rows = [(s, t, st, False) for s, (t, st) in sorted(steps.items())]
            if not rows:
                rows = [(1, "pushgate-ran", "pass", False)]
            spec.job(job, rows, status=p.job_status.get(job, "pass"))
        h.finish(spec)


def run_case(db: Database, name: str) -> tuple[RealReport, Classification]:
    real = parse_report(_shared_dir() / name)
    branch = real.flights[0][1]
    write_history(db, branch, plan_history(real))
    estimates, exact = processing_order(real)
    assert exact == (name not in INTERLEAVED), f"{name}: tie order exact={exact}"
    c = classify(
        db,
        real.flights[0][0],
        this=real.this,
        that=real.that,
        allow=CASES[name],
        refer_to_flights=[n for n, *_ in real.flights[1:]],
        estimates=estimates,
        osstest_heisen_broken=True,
    )
    return real, c


def normalise_ties(region: list[str]) -> list[str]:
    """Sort each run of consecutive failure lines of one section with the same sort text."""
    out: list[str] = []
    run: list[str] = []
    key: tuple[object, ...] | None = None
    cat = ""

    def flush() -> None:
        out.extend(sorted(run))
        run.clear()

    for x in region:
        m = LINE_RE.match(x) if x.startswith(" ") else None
        if m is None:
            flush()
            key = None
            cat = HEADING_TO_CAT.get(x, cat)
            out.append(x)
            continue
        k = (cat, m[5], m[6])
        if k != key:
            flush()
            key = k
        run.append(x)
    flush()
    return out


def _compare(name: str, real: RealReport, c: Classification) -> None:
    """Subject, X-...-Failures items, and the whole body from the flight lines to the end
    of the jobs table (push-age data and people fed from the real report)."""
    ctx = ReportContext(
        logs_url="http://logs.test-lab.xenproject.org/osstest/logs",
        push_age=real.push_age,
        people=real.people,
    )
    pushed = "pushed" if real.subject.endswith(" - PUSHED") else None
    assert "Subject: " + render_subject(c, pushed) == "Subject: " + real.subject
    mine = body_lines(c, ctx)
    expected = real.body[: len(mine)]
    items = failure_header_items(c)
    if name in INTERLEAVED:
        mine, expected = normalise_ties(mine), normalise_ties(expected)
        items, real_items = sorted(items), sorted(real.failure_items)
    else:
        real_items = real.failure_items
    assert items == real_items
    for i, (a, b) in enumerate(zip(mine, expected, strict=True)):
        assert a == b, f"{name}: body line {i + 1} differs"
    assert mine == expected


@pytest.mark.parametrize("name", sorted(CASES))
def test_golden_report(db: Database, name: str) -> None:
    real, c = run_case(db, name)
    _compare(name, real, c)


def test_qemu_mainline_broken_heisen_job_does_not_block_by_default(db: Database) -> None:
    """Wart 10: without the osstest option, the broken job of heisen flight 170891 (which
    passed in the main flight) is intermittent trouble, not a blocker."""
    real = parse_report(_shared_dir() / "qemu-mainline-170902.txt")
    write_history(db, real.flights[0][1], plan_history(real))
    estimates, _ = processing_order(real)
    c = classify(db, 170902, this=real.this, that=real.that, estimates=estimates)
    assert not c.blocking
    assert render_subject(c) == "[qemu-mainline test] 170902: tolerable FAIL"
    assert c.verdict == "Failures :-/ but no regressions."
    assert not [f for f in c.failures if f.category == CAT_REGRESSION]


def test_parser_reads_refolded_headers() -> None:
    real = parse_report(_shared_dir() / "xen-4.14-testing-152124.txt")
    assert real.subject == (
        "[xen-4.14-testing test] 152124: regressions - trouble: fail/pass/starved"
    )
    assert real.failure_items[0] == (
        "xen-4.14-testing:test-amd64-amd64-dom0pvh-xl-amd:guest-localmigrate:fail:regression"
    )
    assert len(real.failure_items) == len(real.lines) == 55
    cats = {ln.category for ln in real.lines}
    assert cats == {CAT_REGRESSION, CAT_ALLOWABLE, CAT_NONBLOCKING}
    q = parse_report(_shared_dir() / "qemu-mainline-170902.txt")
    whole = q.lines[0]
    assert (whole.stepno, whole.testid, whole.status, whole.in_flight, whole.summary) == (
        None,
        "<job status>",
        "broken",
        170891,
        "",
    )
    assert any(ln.category == CAT_HEISENBUG for ln in q.lines)


# The two bisection mails end with the report of their last bisection flight: a report
# without a baseline (spec §5.12), printed with `<flight>: <subject>` in place of a Subject.
BISECTION_TAILS = [
    "xen-unstable-smoke-bisection-build-amd64-libvirt-171909.txt",
    "xen-unstable-bisection-test-amd64-i386-libvirt-pair-176054.txt",
]


@pytest.mark.parametrize("name", BISECTION_TAILS)
def test_golden_report_without_baseline(db: Database, name: str) -> None:
    text = (_shared_dir() / name).read_text(encoding="utf-8").split("\n")
    start = max(i for i, x in enumerate(text) if re.match(r"^\d+: ", x))
    first = text[start]
    jobs_at = text.index("jobs:", start)
    expected = text[start + 2 : text.index("", jobs_at) + 1]
    fm = FLIGHT_RE.match(expected[0])
    assert fm, expected[0]
    flight_no, branch, blessing, intended = fm.groups()
    jobs = [(x.split()[0], x.split()[1]) for x in text[jobs_at + 1 : text.index("", jobs_at)]]
    lines = [LINE_RE.match(x) for x in text[start:jobs_at] if x.startswith(" ")]
    failing = {(m[1], int(m[2]), m[3], m[5]) for m in lines if m}
    assert failing, "no failure line parsed"
    h = History(db)
    old = h.flight(branch, {"xen": "0" * 40}, flight=int(flight_no) - 10)
    main = h.flight(
        branch, {"xen": "1" * 40}, blessing=blessing, intended=intended, flight=int(flight_no)
    )
    for job, status in jobs:
        steps = [(s, t, st, False) for j, s, t, st in sorted(failing) if j == job]
        main.job(job, steps or [(1, "pushgate-ran", "pass", False)], status=status)
        # The step passed once, long ago: not `never pass` but `baseline untested`.
        old.job(
            job,
            [(s, t, "pass", False) for s, t, _st, _f in steps]
            or [(1, "pushgate-ran", "pass", False)],
        )
    h.finish(old)
    h.finish(main)
    c = classify(db, int(flight_no), this={}, that={})
    assert f"{c.flight}: {c.subject}" == first
    assert (
        body_lines(c, ReportContext(logs_url="http://logs.test-lab.xenproject.org/osstest/logs"))
        == expected
    )
