"""The mail text renderer against lines copied from real osstest reports."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from pushgate.judge.verdict import (
    CAT_FAIL,
    CAT_HEISENBUG,
    CAT_NONBLOCKING,
    CAT_REGRESSION,
    Classification,
    Failure,
    FlightRef,
    JobLine,
)
from pushgate.publish.text import (
    AgeLine,
    PushAge,
    ReportContext,
    failure_line,
    people_lines,
    push_age_lines,
    push_part_text,
    render_header_lines,
    render_headers,
    render_subject,
    render_text,
    shrink_to,
    version_lines,
)

LOGS = "http://logs.example.org/pushgate/logs"


@pytest.mark.parametrize(
    ("args", "expected"),
    [
        (
            ("test-amd64-i386-libvirt-raw", 7, "xen-install", "fail", "like 181621"),
            " test-amd64-i386-libvirt-raw   7 xen-install                  fail  like 181621",
        ),
        (
            ("test-amd64-i386-libvirt-xsm", 15, "migrate-support-check", "fail", "never pass"),
            " test-amd64-i386-libvirt-xsm  15 migrate-support-check        fail   never pass",
        ),
        (
            (
                "test-amd64-i386-libvirt-qemuu-debianhvm-amd64-xsm",
                13,
                "migrate-support-check",
                "fail",
                "never pass",
            ),
            " test-amd64-i386-libvirt-qemuu-debianhvm-amd64-xsm 13 migrate-support-check fail"
            " never pass",
        ),
        (
            (
                "test-armhf-armhf-libvirt-qcow2",
                15,
                "saverestore-support-check",
                "fail",
                "like 181621",
            ),
            " test-armhf-armhf-libvirt-qcow2 15 saverestore-support-check   fail like 181621",
        ),
        (
            ("test-amd64-amd64-xl-qemuu-ovmf-amd64", 1, "build-check(1)", "blocked", "n/a"),
            " test-amd64-amd64-xl-qemuu-ovmf-amd64  1 build-check(1)             blocked n/a",
        ),
        (
            ("test-amd64-amd64-xl-rtds", None, "<job status>", "broken", "in 170891 "),
            " test-amd64-amd64-xl-rtds        <job status>                 broken  in 170891",
        ),
        (
            ("build-amd64", 6, "xen-build", "fail", "REGR. vs. 167239"),
            " build-amd64                   6 xen-build                fail REGR. vs. 167239",
        ),
        (
            ("test-armhf-armhf-xl-credit1", 8, "xen-boot", "fail", "pass in 183976-retest"),
            " test-armhf-armhf-xl-credit1   8 xen-boot            fail pass in 183976-retest",
        ),
        (
            ("build-amd64-libvirt", 1, "build-check(1)", "blocked", "n/a"),
            " build-amd64-libvirt           1 build-check(1)               blocked  n/a",
        ),
        (
            ("test-amd64-amd64-qemuu-freebsd12-amd64", 2, "hosts-allocate", "starved", "n/a"),
            " test-amd64-amd64-qemuu-freebsd12-amd64  2 hosts-allocate           starved n/a",
        ),
        (
            (
                "test-amd64-amd64-xl-rtds",
                5,
                "host-install(5)",
                "broken",
                "in 170891 pass in 170902",
            ),
            " test-amd64-amd64-xl-rtds     5 host-install(5) broken in 170891 pass in 170902",
        ),
        (
            ("build-amd64-libvirt", 6, "libvirt-build", "fail", "baseline untested"),
            " build-amd64-libvirt           6 libvirt-build           fail baseline untested",
        ),
    ],
)
def test_failure_line_matches_real_reports(args: tuple, expected: str) -> None:
    assert failure_line(*args) == expected


def test_shrink_stops_when_no_double_space() -> None:
    long = "x" * 90
    assert shrink_to(long) == long
    assert shrink_to("a  b" + "c" * 80) == "a b" + "c" * 80
    assert shrink_to("a   b", limit=3) == "a b"


def _c(**kw: object) -> Classification:
    base: dict[str, object] = dict(
        flight=164996,
        branch="xen-unstable",
        blessing="real",
        intended="real",
        outcome="FAIL",
        this={"xen": "487975df53b5298316b594550c79934d646701bd"},
        that={"xen": "c76cfada1cfad05aaf64ce3ad305c5467650e782"},
    )
    base.update(kw)
    return Classification(**base)  # type: ignore[arg-type]


def _failures() -> list[Failure]:
    return [
        Failure(
            "test-arm64-arm64-libvirt-raw",
            17,
            "guest-start/debian.repeat",
            "fail",
            "REGR. vs. 164945",
            164996,
            blocker="regression",
            category=CAT_REGRESSION,
        ),
        Failure(
            "test-amd64-i386-xl-qemut-debianhvm-i386-xsm",
            12,
            "debian-hvm-install",
            "fail",
            "pass in 165002-retest",
            164996,
            heisen=True,
            category=CAT_HEISENBUG,
        ),
        Failure(
            "test-amd64-i386-xl-pvshim",
            14,
            "guest-start",
            "fail",
            "never pass",
            164996,
            category=CAT_NONBLOCKING,
        ),
    ]


def test_subject_and_headers() -> None:
    c = _c(failures=_failures(), subject_prefix="regressions - ")
    assert render_subject(c, None) == "[xen-unstable test] 164996: regressions - FAIL"
    assert render_subject(c, "pushed").endswith("regressions - FAIL - PUSHED")
    assert render_subject(c, "not-pushed").endswith(": regressions - FAIL")
    assert render_header_lines(c, "X-Osstest") == [
        "X-Osstest-Failures:",
        "    xen-unstable:test-arm64-arm64-libvirt-raw:guest-start/debian.repeat:fail:regression",
        "    xen-unstable:test-amd64-i386-xl-qemut-debianhvm-i386-xsm:debian-hvm-install:"
        "fail:heisenbug",
        "    xen-unstable:test-amd64-i386-xl-pvshim:guest-start:fail:nonblocking",
        "X-Osstest-Versions-This:",
        "    xen=487975df53b5298316b594550c79934d646701bd",
        "X-Osstest-Versions-That:",
        "    xen=c76cfada1cfad05aaf64ce3ad305c5467650e782",
    ]
    # No failures, no baseline: no such headers at all.
    assert render_headers(_c(that={}, this={})) == {}


def test_whole_job_header_item() -> None:
    f = Failure(
        "test-amd64-amd64-xl-rtds",
        None,
        "<job status>",
        "broken",
        "",
        170891,
        in_flight=170891,
        blocker="broken",
        category=CAT_REGRESSION,
    )
    c = _c(branch="qemu-mainline", failures=[f])
    assert render_headers(c)["X-Pushgate-Failures"] == (
        "qemu-mainline:test-amd64-amd64-xl-rtds:<job status>:broken:regression"
    )


def test_version_lines_sorted_by_tree() -> None:
    assert version_lines("baseline version:", {"xen": "b" * 40, "linux": "a" * 40}) == [
        "baseline version:",
        " linux                " + "a" * 40,
        " xen                  " + "b" * 40,
    ]


def test_push_age_block() -> None:
    now = datetime(2021, 9, 16, 4, 6, 4, tzinfo=UTC)
    age = PushAge(
        basis=AgeLine(164945, datetime(2021, 9, 10, 21, 23, 48, tzinfo=UTC)),
        failing_since=AgeLine(164951, datetime(2021, 9, 12, 0, 14, 36), 8),
        same_since=AgeLine(164996, datetime(2021, 9, 15, 11, 47, 8, tzinfo=UTC), 1),
        now=now,
    )
    assert push_age_lines(age) == [
        "Last test of basis   164945  2021-09-10 21:23:48 Z    5 days",
        "Failing since        164951  2021-09-12 00:14:36 Z    4 days    8 attempts",
        "Testing same since   164996  2021-09-15 11:47:08 Z    0 days    1 attempts",
    ]
    same = PushAge(age.basis, AgeLine(164996, age.same_since.started, 1), age.same_since, now)
    assert len(push_age_lines(same)) == 2  # Failing since == Testing same since: omitted
    missing = PushAge(AgeLine(None), None, age.same_since, now)
    line = push_age_lines(missing)[0]
    assert line == "Last test of basis   " + " " * 23 + "(not found)     "
    # "(not found)" takes exactly the width of a found basis line.
    assert len(line) == len(push_age_lines(age)[0])


def test_people_block_and_limit() -> None:
    assert people_lines(["A <a@x>", "b <b@x>"]) == [
        "People who touched revisions under test:",
        "  A <a@x>",
        "  b <b@x>",
    ]
    many = [f"P{i} <p{i}@x>" for i in range(300)]
    assert people_lines(many) == [
        "300 people touched revisions under test,",
        "not listing them all",
    ]
    assert len(people_lines(many[:299])) == 300


def test_push_part_names_the_revision() -> None:
    text = push_part_text("pushed", revision="f" * 40, output="To repo\n   a..b  b -> smoke\n")
    assert text.startswith(f"Pushing revision {'f' * 40}:\n\nTo repo\n")
    assert push_part_text("not-pushed") == "Not pushing.\n"
    with pytest.raises(ValueError):
        push_part_text("pushed")
    with pytest.raises(ValueError):
        push_part_text("maybe")


def _jobs() -> list[JobLine]:
    return [JobLine("build-amd64", "pass"), JobLine("test-amd64-amd64-xl", "fail")]


def test_whole_body_layout_with_failures() -> None:
    c = _c(
        flight=159709,
        branch="xen-unstable-smoke",
        failures=_failures()[:1],
        verdict="Regressions :-(",
        subject_prefix="regressions - ",
        jobs=_jobs(),
        flights=[
            FlightRef(159709, "xen-unstable-smoke", "real", "real"),
            FlightRef(159713, "xen-unstable-smoke", "real-retest", "real"),
        ],
        mro=["flight 159709", "regression test-arm64-arm64-libvirt-raw x 1"],
    )
    now = datetime(2021, 2, 26, 16, 0, tzinfo=UTC)
    ctx = ReportContext(
        logs_url=LOGS + "/",
        push_age=PushAge(
            AgeLine(159704, datetime(2021, 2, 26, 10, 1, 26)),
            None,
            AgeLine(159709, datetime(2021, 2, 26, 13, 0, 30), 1),
            now,
        ),
        people=["Andrew Cooper <andrew.cooper3@citrix.com>"],
        push_part=push_part_text("not-pushed"),
        revision_log="commit abc\nAuthor: A <a@x>\n\n    msg\n",
        report_host="gate.example.org",
        logs_dir="/srv/logs",
    )
    text = render_text(c, ctx)
    expected = f"""\
flight 159709 xen-unstable-smoke real [real]
flight 159713 xen-unstable-smoke real-retest [real]
{LOGS}/159709/
{LOGS}/159713/

Regressions :-(

Tests which did not succeed and are blocking,
including tests which could not be run:
 test-arm64-arm64-libvirt-raw 17 guest-start/debian.repeat fail REGR. vs. 164945

version targeted for testing:
 xen                  487975df53b5298316b594550c79934d646701bd
baseline version:
 xen                  c76cfada1cfad05aaf64ce3ad305c5467650e782

Last test of basis   159704  2021-02-26 10:01:26 Z    0 days
Testing same since   159709  2021-02-26 13:00:30 Z    0 days    1 attempts

{"-" * 60}
People who touched revisions under test:
  Andrew Cooper <andrew.cooper3@citrix.com>

jobs:
 build-amd64                                                  {"pass":<8}
 test-amd64-amd64-xl                                          {"fail":<8}


{"-" * 60}
pushgate report on gate.example.org
logs: /srv/logs

Logs, config files, etc. are available at
    {LOGS}/


Not pushing.

{"-" * 60}
commit abc
Author: A <a@x>

    msg
"""
    assert text == expected


def test_perfect_report_and_broken_lines() -> None:
    c = _c(
        jobs=_jobs(),
        outcome="all pass",
        mro=["flight 164996", "broken-job test-x broken", "tolerable"],
    )
    ctx = ReportContext(
        logs_url=LOGS, push_part=push_part_text("not-applicable"), trailer_text="Custom trailer\n"
    )
    text = render_text(c, ctx)
    assert "Perfect :-)\nAll tests in this flight passed as required\nversion targeted" in text
    assert "\nCustom trailer\n\nbroken-job test-x broken\n\nPush not applicable.\n" in text
    assert "People who touched" not in text  # no people given
    quiet = render_text(
        c, ReportContext(logs_url=LOGS, push_part="Not pushing.", show_broken_lines=False)
    )
    assert "broken-job" not in quiet


def test_report_without_baseline() -> None:
    f = Failure(
        "build-amd64-libvirt",
        6,
        "libvirt-build",
        "fail",
        "baseline untested",
        171909,
        blocker="regression",
        category=CAT_FAIL,
    )
    c = _c(
        flight=171909,
        branch="xen-unstable-smoke",
        blessing="real-bisect",
        this={},
        that={},
        failures=[f],
        verdict="Failures :-/ but no regressions.",
        outcome="ALL FAIL",
        jobs=[JobLine("build-amd64-libvirt", "fail")],
    )
    text = render_text(c, ReportContext(logs_url="http://l/logs", people=["X <x@y>"]))
    assert text.startswith(
        "flight 171909 xen-unstable-smoke real-bisect [real]\nhttp://l/logs/171909/\n\n"
        "Failures :-/ but no regressions.\n\nTests which did not succeed,\n"
        "including tests which could not be run:\n"
        " build-amd64-libvirt           6 libvirt-build           fail baseline untested\n"
        "\n\njobs:\n build-amd64-libvirt" + " " * 42 + "fail    \n"
    )
    assert "People" not in text and "version" not in text


def test_long_revision_log_note_has_no_dashes() -> None:
    c = _c(jobs=_jobs())
    ctx = ReportContext(
        logs_url=LOGS,
        push_part="Not pushing.",
        revision_log="(No revision log; it would be 1042 lines long.)\n",
    )
    assert render_text(c, ctx).endswith(
        "\nNot pushing.\n\n(No revision log; it would be 1042 lines long.)\n"
    )


def test_tolerable_flight_says_how_many_jobs_were_not_run() -> None:
    f = Failure("build-amd64", 6, "xen-build", "fail", "like 5", 6, category=CAT_NONBLOCKING)
    blocked = Failure(
        "test-amd64-amd64-xl", 1, "build-check(1)", "blocked", "n/a", 6, category=CAT_NONBLOCKING
    )
    jobs = [
        JobLine("build-amd64", "fail"),
        JobLine("test-amd64-amd64-xl", "blocked"),
        JobLine("test-amd64-amd64-pv", "blocked"),
    ]
    c = _c(
        failures=[f, blocked],
        jobs=jobs,
        verdict="Failures :-/ but no regressions.",
        subject_prefix="tolerable ",
    )
    text = render_text(c, ReportContext(logs_url=LOGS))
    assert (
        "\nFailures :-/ but no regressions.\nNot run: 2 jobs were blocked (a build or job "
        "they need did not pass).\n\nTests which did not succeed, but are not blocking:\n"
    ) in text
    # With a blocker the push is refused anyway: osstest's layout, no note.
    c.tolerable = False
    assert "Not run:" not in render_text(c, ReportContext(logs_url=LOGS))


def test_headers_survive_a_real_mail_round_trip() -> None:
    """render_headers feeds mail.message.build_message; the serialized mail carries the
    items in osstest's shape (name alone, 4-space items), a whole-job item included."""
    from pushgate.publish.mail.message import build_message, parse, serialize
    from pushgate.publish.text import render_mail_text

    whole = Failure(
        "test-amd64-amd64-xl-rtds",
        None,
        "<job status>",
        "broken",
        "",
        5,
        in_flight=5,
        blocker="broken",
        category=CAT_REGRESSION,
    )
    c = _c(failures=[whole, *_failures()], subject_prefix="regressions - ")
    msg = build_message(
        subject=render_subject(c),
        body=render_text(c, ReportContext(LOGS)),
        from_addr="gate@example.org",
        to=["list@example.org"],
        cc=[],
        message_id="<pushgate-164996-mainreport@example.org>",
        in_reply_to=None,
        references=[],
        extra_headers=render_headers(c),
    )
    head = serialize(msg).decode().split("\n\n", 1)[0].split("\n")
    items: dict[str, list[str]] = {}
    name = ""
    for line in head:  # either shape: items on continuation lines, or inline
        if line.startswith(" "):
            items[name].append(line.strip())
        else:
            name, _, value = line.partition(":")
            items[name] = [value.strip()] if value.strip() else []
    for hname, value in render_headers(c).items():
        assert items[hname] == value.split("\n")
    assert items["X-Pushgate-Failures"][0] == (
        "xen-unstable:test-amd64-amd64-xl-rtds:<job status>:broken:regression"
    )
    back = parse(serialize(msg))
    assert str(back["Subject"]) == "[xen-unstable test] 164996: regressions - FAIL"
    assert back.get_content() == render_text(c, ReportContext(LOGS))
    printed = render_mail_text(c, ReportContext(LOGS))
    assert printed.startswith(
        "Subject: [xen-unstable test] 164996: regressions - FAIL\n"
        "X-Pushgate-Failures:\n    xen-unstable:test-amd64-amd64-xl-rtds:"
        "<job status>:broken:regression\n"
    )
    assert printed.endswith("\n\n" + render_text(c, ReportContext(LOGS)))
