"""Static HTML pages: grid, job pages, links, and escaping of hostile names."""

from __future__ import annotations

from html.parser import HTMLParser
from pathlib import Path

from pushgate.judge.verdict import CAT_REGRESSION, Classification, Failure
from pushgate.publish.html import (
    ArtifactData,
    FlightData,
    JobData,
    RunvarData,
    StepData,
    job_page_name,
    link,
    step_rows,
    write_html,
)

EVIL_JOB = "test-<script>alert(1)</script>&x"
EVIL_TESTID = "guest-<script>start</script>&y"
EVIL_LOG = '"><script>alert(2)</script>&.log'


class Page(HTMLParser):
    """Collects tags, attributes and text of a page, to assert on structure."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.tags: list[str] = []
        self.hrefs: list[str] = []
        self.text: list[str] = []
        self.classes: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append(tag)
        for k, v in attrs:
            if k == "href" and v is not None:
                self.hrefs.append(v)
            if k == "class" and v is not None:
                self.classes.append(v)

    def handle_data(self, data: str) -> None:
        if data.strip():
            self.text.append(data.strip())


def _flight() -> FlightData:
    t = 1_700_000_000.0
    build = JobData(
        "build-amd64",
        "pass",
        host="h1",
        started=t,
        finished=t + 30,
        steps=[
            StepData(1, "hosts-allocate", "pass", t, t + 5, "build-amd64/1.log"),
            StepData(2, "xen-build", "pass", t + 5, t + 30, "build-amd64/2.log"),
            StepData(3, "logs-capture", "pass", t + 30, t + 31, None),
        ],
        runvars=[
            RunvarData("tree_xen", "https://x/xen.git"),
            RunvarData("built_revision_xen", "a" * 40, synth=True),
        ],
        artifacts=[ArtifactData("dist & <tools>.tar.gz", "build-amd64/dist.tgz", 42)],
    )
    test = JobData(
        "test-amd64-amd64-xl",
        "fail",
        host="h2",
        started=t + 40,
        finished=t + 90,
        steps=[
            StepData(1, "hosts-allocate", "pass", t + 40, t + 41, "xl/1.log"),
            StepData(2, "xen-boot", "pass", t + 41, t + 50, "xl/2.log"),
            StepData(3, "guest-start", "fail", t + 50, t + 60, "xl/3.log"),
            StepData(4, "guest-start", "blocked", None, None, None),
            StepData(5, "logs-capture", "pass", t + 60, t + 61, "xl/5.log"),
        ],
        runvars=[RunvarData("buildjob", "build-amd64")],
    )
    evil = JobData(
        EVIL_JOB,
        "broken",
        host="<b>host</b>",
        steps=[
            StepData(1, EVIL_TESTID, "broken", t, t + 1, EVIL_LOG),
            StepData(2, "javascript", "fail", t, t + 1, "javascript:alert(3)"),
        ],
        runvars=[RunvarData("<script>", "</td><script>alert(4)</script>")],
        artifacts=[ArtifactData("<script>a</script>", "x/<y>.bin")],
        logs=["../../etc/<passwd>"],
    )
    return FlightData(
        7, "xen-unstable", "real", "real", t, t + 100, {"xen": "b" * 40}, [test, evil, build]
    )


def _classification() -> Classification:
    f = Failure(
        "test-amd64-amd64-xl",
        3,
        "guest-start",
        "fail",
        "REGR. vs. 6",
        7,
        blocker="regression",
        category=CAT_REGRESSION,
    )
    return Classification(
        flight=7,
        branch="xen-unstable",
        blessing="real",
        intended="real",
        outcome="FAIL",
        failures=[f],
        all_failures=[f],
        verdict="Regressions :-(",
        subject_prefix="regressions - ",
    )


def test_pages_written_and_grid(tmp_path: Path) -> None:
    out = tmp_path / "html"
    paths = write_html(out, _flight(), _classification(), logs_base="../logs/7/")
    assert paths[0] == out / "index.html"
    assert len(paths) == 4 and all(p.parent == out and p.is_file() for p in paths)
    index = Page((out / "index.html").read_text())
    # Columns in jobs-table order: build jobs first.
    assert index.hrefs.index("job-build-amd64.html") < index.hrefs.index(
        "job-test-amd64-amd64-xl.html"
    )
    assert "../logs/7/xl/3.log" in index.hrefs and "../logs/7/build-amd64/2.log" in index.hrefs
    assert "st-pass" in index.classes and "st-fail" in index.classes
    assert "st-other" in index.classes  # broken / blocked cells are yellow
    assert "Regressions :-(" in index.text
    assert any("guest-start" in x and "REGR. vs. 6" in x for x in index.text)
    assert "[xen-unstable test] 7: regressions - FAIL" in index.text
    assert "b" * 40 in index.text
    job = Page((out / "job-test-amd64-amd64-xl.html").read_text())
    assert "index.html" in job.hrefs and "../logs/7/xl/5.log" in job.hrefs
    assert "2023-11-14 22:14:00 Z" in job.text  # step start times, UTC
    assert "10 s" in job.text and "h2" in job.text and "definition" in job.text
    assert "fail REGR. vs. 6" in job.text
    build = Page((out / "job-build-amd64.html").read_text())
    assert "execution" in build.text and "a" * 40 in build.text
    assert "dist & <tools>.tar.gz" in build.text and "../logs/7/build-amd64/dist.tgz" in build.hrefs
    assert "(42 bytes)" in build.text


def test_rows_topological_with_repeats_and_logs_last() -> None:
    a = JobData(
        "a",
        "pass",
        steps=[
            StepData(1, "x", "pass"),
            StepData(2, "y", "pass"),
            StepData(3, "logs-capture", "pass"),
        ],
    )
    b = JobData(
        "b",
        "pass",
        steps=[
            StepData(1, "x", "pass"),
            StepData(2, "w", "pass"),
            StepData(3, "y", "pass"),
            StepData(4, "y", "pass"),
            StepData(5, "logs-capture", "pass"),
        ],
    )
    assert step_rows([a, b]) == ["x", "w", "y", "y [2]", "logs-capture"]
    # Disagreeing orders (a cycle) still give every row once.
    c = JobData("c", "pass", steps=[StepData(1, "y", "pass"), StepData(2, "x", "pass")])
    rows = step_rows([a, c])
    assert sorted(rows) == ["logs-capture", "x", "y"] and rows[-1] == "logs-capture"


def test_hostile_text_is_escaped_everywhere(tmp_path: Path) -> None:
    out = tmp_path / "html"
    paths = write_html(out, _flight(), _classification(), logs_base="http://logs.example/7/")
    for p in paths:
        raw = p.read_text()
        assert "<script" not in raw.lower(), p
        assert p.resolve().parent == out.resolve()
    evil_page = out / job_page_name(EVIL_JOB)
    assert evil_page in paths
    raw = evil_page.read_text()
    assert "&lt;script&gt;alert(1)&lt;/script&gt;&amp;x" in raw
    page = Page(raw)
    assert EVIL_JOB in page.text  # shown as text, exactly
    assert EVIL_TESTID in page.text
    assert "<b>host</b>" in page.text and "</td><script>alert(4)</script>" in page.text
    for href in page.hrefs:
        assert href == "index.html" or href.startswith("http://logs.example/7/"), href
    assert "http://logs.example/7/javascript%3Aalert%283%29" in page.hrefs
    index = Page((out / "index.html").read_text())
    assert EVIL_JOB in index.text
    assert not [h for h in index.hrefs if h.lower().startswith("javascript")]


def test_page_names_and_links_are_safe() -> None:
    assert job_page_name("build-amd64") == "job-build-amd64.html"
    odd = [job_page_name(x) for x in ("../../x", "a/b", "a_b", "..", ".hidden")]
    assert all("/" not in n and not n.startswith(".") for n in odd)
    assert len(set(odd)) == len(odd)
    assert job_page_name("a/b") != job_page_name("a_b")
    assert link("", None) is None
    assert link("L/", "/abs/x y.log") == "L/abs/x%20y.log"
    assert link("", "javascript:alert(1)") == "javascript%3Aalert%281%29"
