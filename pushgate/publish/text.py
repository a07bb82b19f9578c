"""The report mail in osstest's layout: subject, X-Pushgate-* headers and body.

Everything here is pure formatting of a `Classification` (the classifier's output) plus a
`ReportContext` (plain data the caller reads from the database and git: push-age flights,
people, push outcome, revision log). The layout, columns and blank lines are osstest's
(spec/osstest-semantics.md §5); the real reports in shared/osstest-reports are the reference.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime

from pushgate.git import Commit
from pushgate.judge.verdict import (
    SECTION_HEADINGS,
    AgeLine,
    Classification,
    Failure,
    PushAge,
)

HEADER_PREFIX = "X-Pushgate"
DASHES = "-" * 60
LINE_LIMIT = 79
PEOPLE_MAX_LINES = 300
NOT_FOUND = "(not found)"

# Texts of the push part (§5.9); `Pushing revision` names the revision (wart §9 #1).
PUSH_NOT_ALLOWED = "Not pushing."
PUSH_UP_TO_DATE = "Published tested tree is already up to date."
PUSH_NOT_APPLICABLE = "Push not applicable."


@dataclass
class ReportContext:
    """The parts of a report that do not come from the classifier."""

    logs_url: str
    """Base URL of the logs; the body links `<logs_url>/<flight>/`."""
    push_age: PushAge | None = None
    people: list[str] | None = None
    """`People who touched revisions under test` entries, already deduplicated and sorted
    (pushgate.git.people_from_log). None or empty: no block."""
    push_part: str | None = None
    """The push gate's text (see `push_part_text`); None: nothing after the trailer."""
    revision_log: str | None = None
    """`git log base..target` text, or the `(No revision log; ...)` line; None: none."""
    report_host: str = "localhost"
    logs_dir: str = ""
    images_dir: str = ""
    trailer_text: str | None = None
    """Configurable trailer after the host/logs lines; None: a line pointing at logs_url."""
    show_broken_lines: bool = True
    """Print the main flight's `broken...` mro lines before the push part, as osstest does
    (deliberately here, §9 #5)."""
    commits: list[Commit] = field(default_factory=list)
    """pushgate.git.Commit objects of baseline..target, for the JSON rendering."""
    header_prefix: str = HEADER_PREFIX


def pad_right(text: str, width: int) -> str:
    return text.ljust(width)


def pad_left(text: str, width: int) -> str:
    return text.rjust(width)


def shrink_to(line: str, limit: int = LINE_LIMIT) -> str:
    """The 79-column rule (§5.3): while too long, turn the last double space into one."""
    while len(line) > limit:
        i = line.rfind("  ")
        if i < 0:
            break
        line = line[:i] + line[i + 1 :]
    return line


def failure_line(job: str, stepno: int | None, testid: str, status: str, annotation: str) -> str:
    """One failure line with osstest's columns (§5.3). Padding never truncates."""
    step = "" if stepno is None else str(stepno)
    line = (
        f" {pad_right(job, 28)} {pad_left(step, 2)} {pad_right(testid, 28)} "
        f"{pad_right(status, 8)} {annotation}"
    )
    return shrink_to(line.rstrip())


def render_failure(f: Failure) -> str:
    return failure_line(f.job, f.stepno, f.testid, f.status, f.annotation)


def failure_section_lines(c: Classification) -> list[str]:
    """The failure sections as printed: each is a blank line, heading(s), failure lines."""
    out: list[str] = []
    for key, failures in c.sections():
        out.append("")
        out.extend(SECTION_HEADINGS[key])
        out.extend(render_failure(f) for f in failures)
    return out


def render_subject(c: Classification, push_state: str | None = None, *, kind: str = "test") -> str:
    """`[<branch> test] <flight>: <prefix><outcome>[ - PUSHED]`.

    push_state `pushed` appends ` - PUSHED`; anything else (None, `not-pushed`, ...) nothing.
    kind is `test`, `baseline test`, `baseline-only test`; `adhoc test` drops the branch.
    """
    tag = "[adhoc test]" if kind == "adhoc test" else f"[{c.branch} {kind}]"
    pushed = " - PUSHED" if push_state == "pushed" else ""
    return f"{tag} {c.flight}: {c.subject}{pushed}"


def failure_header_items(c: Classification) -> list[str]:
    """`<branch>:<job>:<testid>:<status>:<analysis>`, one per printed failure, body order."""
    return [
        f"{c.branch}:{f.job}:{f.testid}:{f.status}:{f.analysis}"
        for _key, failures in c.sections()
        for f in failures
    ]


def version_items(versions: Mapping[str, str]) -> list[str]:
    return [f"{tree}={versions[tree]}" for tree in sorted(versions)]


def render_headers(c: Classification, prefix: str = HEADER_PREFIX) -> dict[str, str]:
    """Extra mail headers (name -> items joined by newlines), as mail.message.build_message
    takes them; absent when empty (§5.1)."""
    out: dict[str, str] = {}
    items = failure_header_items(c)
    if items:
        out[f"{prefix}-Failures"] = "\n".join(items)
    if c.this:
        out[f"{prefix}-Versions-This"] = "\n".join(version_items(c.this))
    if c.that:
        out[f"{prefix}-Versions-That"] = "\n".join(version_items(c.that))
    return out


def render_header_lines(c: Classification, prefix: str = HEADER_PREFIX) -> list[str]:
    """The headers in osstest's unfolded text shape: name alone, 4-space-indented items."""
    lines: list[str] = []
    for name, value in render_headers(c, prefix).items():
        lines.append(f"{name}:")
        lines.extend(f"    {item}" for item in value.split("\n"))
    return lines


def version_lines(heading: str, versions: Mapping[str, str]) -> list[str]:
    """`heading`, then ` <tree padded to 20> <revision>` per tree by name (§5.4)."""
    return [heading] + [f" {pad_right(tree, 20)} {versions[tree]}" for tree in sorted(versions)]


def _utc(t: datetime) -> datetime:
    return t.replace(tzinfo=UTC) if t.tzinfo is None else t.astimezone(UTC)


def age_line(label: str, line: AgeLine | None, now: datetime) -> str:
    """One push-age line (§5.5)."""
    head = pad_right(label, 20)
    if line is None or line.flight is None or line.started is None:
        return f"{head} {pad_left(NOT_FOUND, 34)}     "
    started = _utc(line.started)
    days = max(0, int((_utc(now) - started).total_seconds() // 86400))
    text = (
        f"{head} {pad_left(str(line.flight), 6)}  "
        f"{started.strftime('%Y-%m-%d %H:%M:%S')} Z {pad_left(str(days), 4)} days"
    )
    if line.attempts is not None:
        text += f" {pad_left(str(line.attempts), 4)} attempts"
    return text


def push_age_lines(age: PushAge) -> list[str]:
    lines = [age_line("Last test of basis", age.basis, age.now)]
    fs = age.failing_since
    if fs is not None and fs.flight != age.same_since.flight:
        lines.append(age_line("Failing since", fs, age.now))
    lines.append(age_line("Testing same since", age.same_since, age.now))
    return lines


def people_lines(people: Sequence[str]) -> list[str]:
    """The people block (§5.6): heading and entries, or a count past 300 lines."""
    if len(people) + 1 > PEOPLE_MAX_LINES:
        return [f"{len(people)} people touched revisions under test,", "not listing them all"]
    return ["People who touched revisions under test:"] + [f"  {p}" for p in people]


def jobs_lines(c: Classification) -> list[str]:
    """`jobs:` and one line per job; trailing spaces kept, as osstest writes them (§5.7)."""
    return ["jobs:"] + [f" {pad_right(j.job, 60)} {pad_right(j.status, 8)}" for j in c.jobs]


def trailer_lines(ctx: ReportContext) -> list[str]:
    """The trailer (§5.8), ending with a blank line."""
    lines = [DASHES, f"pushgate report on {ctx.report_host}"]
    if ctx.logs_dir:
        lines.append(f"logs: {ctx.logs_dir}")
    if ctx.images_dir:
        lines.append(f"images: {ctx.images_dir}")
    lines.append("")
    if ctx.trailer_text is not None:
        lines.extend(ctx.trailer_text.rstrip("\n").split("\n"))
    else:
        lines += ["Logs, config files, etc. are available at", f"    {ctx.logs_url}"]
    lines.append("")
    return lines


def push_part_text(kind: str, *, revision: str | None = None, output: str = "") -> str:
    """The push gate's part (§5.9). kind: `pushed`, `not-pushed`, `up-to-date`,
    `not-applicable`. A push names its revision (osstest printed `Pushing revision :`)."""
    if kind == "pushed":
        if not revision:
            raise ValueError("a pushed report needs the revision pushed")
        body = output.rstrip("\n")
        return (
            f"Pushing revision {revision}:\n\n{body}\n"
            if body
            else f"Pushing revision {revision}:\n"
        )
    texts = {
        "not-pushed": PUSH_NOT_ALLOWED,
        "up-to-date": PUSH_UP_TO_DATE,
        "not-applicable": PUSH_NOT_APPLICABLE,
    }
    if kind not in texts:
        raise ValueError(f"unknown push part kind {kind!r}")
    return texts[kind] + "\n"


def revision_log_lines(log: str) -> list[str]:
    """60 dashes then the log; a `(No revision log; ...)` note alone (§5.10)."""
    lines = log.rstrip("\n").split("\n")
    if len(lines) == 1 and lines[0].startswith("(No revision log"):
        return lines
    return [DASHES] + lines


def flight_lines(c: Classification, logs_url: str) -> list[str]:
    """`flight N branch blessing [intended]` lines, then their log URLs (§5.2)."""
    refs = c.flights or []
    if not refs:
        return [
            f"flight {c.flight} {c.branch} {c.blessing} [{c.intended}]",
            f"{logs_url.rstrip('/')}/{c.flight}/",
        ]
    return [f"flight {r.flight} {r.branch} {r.blessing} [{r.intended}]" for r in refs] + [
        f"{logs_url.rstrip('/')}/{r.flight}/" for r in refs
    ]


def coverage_note(c: Classification) -> str | None:
    """Wart §9 #18: a tolerable flight whose jobs were blocked (a build they need failed
    like the baseline's) pushes with those tests never run; say so under the verdict."""
    blocked = sum(1 for j in c.jobs if j.status == "blocked")
    if not c.tolerable or not blocked:
        return None
    jobs = "job was" if blocked == 1 else "jobs were"
    return f"Not run: {blocked} {jobs} blocked (a build or job they need did not pass)."


def body_lines(c: Classification, ctx: ReportContext) -> list[str]:
    """The body up to the end of the jobs table (§5.2 items 2-10)."""
    lines = flight_lines(c, ctx.logs_url)
    lines += ["", c.verdict]
    note = coverage_note(c)
    if note:
        lines.append(note)
    sections = failure_section_lines(c)
    if sections:
        lines += sections
        lines.append("")
    else:
        lines.append("All tests in this flight passed as required")
    if c.this:
        lines += version_lines("version targeted for testing:", c.this)
    if c.that:
        lines += version_lines("baseline version:", c.that)
    if ctx.push_age is not None and c.that:
        lines += [""] + push_age_lines(ctx.push_age)
    if ctx.people and c.has_baseline:
        lines += ["", DASHES] + people_lines(ctx.people)
    lines += ["", *jobs_lines(c), ""]
    return lines


def broken_mro_lines(c: Classification) -> list[str]:
    return [m for m in c.mro if m.startswith("broken")]


def render_text(c: Classification, ctx: ReportContext) -> str:
    """The whole mail body, newline-terminated."""
    lines = body_lines(c, ctx)
    lines.append("")
    lines += trailer_lines(ctx)
    if ctx.push_part is not None:
        if ctx.show_broken_lines:
            broken = broken_mro_lines(c)
            if broken:
                lines += broken
        lines.append("")
        lines += ctx.push_part.rstrip("\n").split("\n")
        if ctx.revision_log is not None:
            lines.append("")
            lines += revision_log_lines(ctx.revision_log)
    elif ctx.revision_log is not None:
        lines.append("")
        lines += revision_log_lines(ctx.revision_log)
    return "\n".join(lines) + "\n"


def render_mail_text(c: Classification, ctx: ReportContext, push_state: str | None = None) -> str:
    """Subject and headers in osstest's shape, a blank line, then the body: what
    `pushgate report N` prints (and what the golden tests compare)."""
    head = [f"Subject: {render_subject(c, push_state)}"]
    head += render_header_lines(c, ctx.header_prefix)
    return "\n".join(head) + "\n\n" + render_text(c, ctx)
