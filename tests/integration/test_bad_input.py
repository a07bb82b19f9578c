"""Every bad input is one line on stderr naming what and where, exit status 2, and nothing
written: a table of config keys and values, file encodings, database URLs and command-line
arguments, each on SQLite and PostgreSQL (the project's database is the `db_url` fixture's).

Config cases run `pushgate check` and `pushgate flight new b`: both must refuse the config
before anything is created (no state dir, no table in the PostgreSQL schema). Command-line
cases run on a valid config and compare every table's row count before and after. All run
in process (click's CliRunner), so the table takes seconds.
"""

from __future__ import annotations

import re
import signal
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from click.testing import CliRunner, Result
from sqlalchemy import create_engine, func, inspect, select, table

from pushgate.cli.main import main
from tests.flightkit import Project, make_project

JOBS = {
    "build-x": {
        "artifacts": ["out"],
        "steps": [{"testid": "build", "command": "mkdir out && echo built > out/x"}],
    },
    "test-x": {
        "buildjob": "build-x",
        "runvars": {"mode": "quick"},
        "steps": [
            {"testid": "run", "command": ["test", "-n", "out/x"], "timeout": 60},
            {"testid": "capture-logs", "always": True, "command": "true"},
        ],
    },
}
MAIL = '[mail]\nfrom_addr = "gate@example.org"\ndomain = "example.org"\n'
BRANCH = '[branches."b"]'


def invoke(*args: str) -> Result:
    return CliRunner().invoke(main, list(args), catch_exceptions=False)


def row_counts(url: str) -> dict[str, int]:
    """Rows per table (alembic's own excepted); {} when there is no database yet."""
    m = re.match(r"sqlite:///(.*)", url)
    if m and not Path(m.group(1)).exists():
        return {}
    engine = create_engine(url)
    try:
        with engine.connect() as conn:
            names = [t for t in inspect(conn).get_table_names() if t != "alembic_version"]
            return {
                t: conn.execute(select(func.count()).select_from(table(t))).scalar_one()
                for t in names
            }
    finally:
        engine.dispose()


def assert_one_line(r: Result, *expect: str) -> str:
    assert r.exit_code == 2, (r.exit_code, r.stdout, r.stderr)
    lines = r.stderr.strip().splitlines()
    assert len(lines) == 1, r.stderr
    for e in expect:
        assert e in lines[0], (e, lines[0])
    assert "Traceback" not in r.stderr and "internal error" not in r.stderr
    return lines[0]


# --- the config: keys, values, encodings, database URLs ----------------------------------

Mutate = Callable[[str], str]


def sub(old: str, new: str) -> Mutate:
    def f(text: str) -> str:
        assert old in text, old
        return text.replace(old, new, 1)

    return f


def add(section_header: str, lines: str) -> Mutate:
    """Add key lines right under a table header (which must exist)."""
    return sub(section_header + "\n", section_header + "\n" + lines + "\n")


def append(text_: str) -> Mutate:
    return lambda t: t + "\n" + text_ + "\n"


LONG = "j" * 1000


@dataclass(frozen=True)
class ConfigCase:
    id: str
    mutate: Mutate
    key: str
    """The dotted key the line must name ('' for file-level errors)."""
    what: str
    """Words of the message."""


CONFIG_CASES = [
    # NUL characters: exec, the environment and PostgreSQL refuse them.
    ConfigCase("nul-command", sub('"true"', '"tr\\u0000ue"'), "steps.1.command", "NUL"),
    ConfigCase("nul-argv", sub('"out/x"', '"out\\u0000x"'), "command.2", "NUL"),
    ConfigCase("nul-runvar", sub('"quick"', '"qu\\u0000ick"'), "runvars.mode", "NUL"),
    ConfigCase("nul-runvar-name", sub('"mode" =', '"mo\\u0000de" ='), "runvars.mo", "NUL"),
    ConfigCase("nul-mail-to", add(BRANCH, 'mail_to = ["a\\u0000@example.org"]'), "mail_to", "NUL"),
    # Database URLs.
    ConfigCase(
        "mysql-url",
        lambda t: re.sub(r'database = ".*"', 'database = "mysql://u@h/db"', t),
        "state.database",
        "'mysql' is not supported",
    ),
    ConfigCase(
        "garbage-url",
        lambda t: re.sub(r'database = ".*"', 'database = "::garbage::"', t),
        "state.database",
        "not a database URL",
    ),
    ConfigCase(
        "sqlite-two-slashes",
        lambda t: re.sub(r'database = ".*"', 'database = "sqlite://x.db"', t),
        "state.database",
        "sqlite:///PATH",
    ),
    ConfigCase(
        "mysql-driver",
        lambda t: re.sub(r'database = ".*"', 'database = "mysql+pymysql://h/d"', t),
        "state.database",
        "not supported",
    ),
    # Lengths of the names pushgate stores.
    ConfigCase("job-name-1000", lambda t: t.replace("test-x", LONG), "", "at most 100"),
    ConfigCase(
        "branch-name-101", sub('[branches."b"]', f'[branches."{"b" * 101}"]'), "", "at most 100"
    ),
    ConfigCase("testid-1000", sub('"capture-logs"', f'"{"t" * 1000}"'), "testid", "at most 200"),
    ConfigCase("runvar-name-1000", sub('"mode" =', f'"{"m" * 1000}" ='), "runvars", "at most 100"),
    ConfigCase("host-name-1000", sub('[hosts."localhost"]', f'[hosts."{"h" * 1000}"]'), "", "100"),
    # Mail addresses, domain, password sources.
    ConfigCase(
        "newline-mail-to",
        add(BRANCH, 'mail_to = ["list@example.org\\nBcc: victim@example.org"]'),
        "branches.b.mail_to",
        "control characters",
    ),
    ConfigCase(
        "mail-cc-no-at", add(BRANCH, 'mail_cc = ["nobody"]'), "branches.b.mail_cc", "invalid mail"
    ),
    ConfigCase(
        "mail-bcc-two-in-one",
        add(BRANCH, 'mail_bcc = ["a@example.org, b@example.org"]'),
        "mail_bcc",
        "one address",
    ),
    ConfigCase(
        "bisect-mail-to-bad", add(BRANCH, 'bisect_mail_to = ["a@"]'), "bisect_mail_to", "invalid"
    ),
    ConfigCase(
        "from-addr-no-at", sub('"gate@example.org"', '"pushgate"'), "mail.from_addr", "mail"
    ),
    ConfigCase(
        "from-addr-newline",
        sub('"gate@example.org"', '"g@example.org\\r\\nX: y"'),
        "mail.from_addr",
        "control",
    ),
    ConfigCase(
        "mail-domain", sub('domain = "example.org"', 'domain = "exa mple"'), "mail.domain", "domain"
    ),
    ConfigCase(
        "both-passwords",
        add("[mail]", 'password_env = "PW"\npassword_file = "/etc/pw"'),
        "mail.password_file",
        "only one of",
    ),
    ConfigCase("mail-port-0", add("[mail]", "port = 0"), "mail.port", "greater than or equal to 1"),
    ConfigCase("mail-port-70000", add("[mail]", "port = 70000"), "mail.port", "65535"),
    ConfigCase("mail-host-empty", add("[mail]", 'host = ""'), "mail.host", "at least 1"),
    # Allow-list patterns: checked by `check`, not at the push stage of every cycle.
    ConfigCase(
        "allow-no-compile", add(BRANCH, 'allow = ["test-( x"]'), "branches.b.allow", "compile"
    ),
    ConfigCase(
        "allow-three-fields", add(BRANCH, 'allow = ["a b c"]'), "branches.b.allow", "two fields"
    ),
    # Timeouts and other numbers.
    ConfigCase("timeout-zero", sub('"timeout" = 60', '"timeout" = 0'), "timeout", "greater than 0"),
    ConfigCase("timeout-negative", sub('"timeout" = 60', '"timeout" = -5'), "timeout", "greater"),
    ConfigCase("timeout-nan", sub('"timeout" = 60', '"timeout" = nan'), "timeout", "finite"),
    ConfigCase("timeout-inf", sub('"timeout" = 60', '"timeout" = inf'), "timeout", "finite"),
    ConfigCase("heartbeat-zero", sub("heartbeat_s = 0.5", "heartbeat_s = 0"), "heartbeat_s", "0.1"),
    ConfigCase(
        "heartbeat-ge-lease", sub("heartbeat_s = 0.5", "heartbeat_s = 3"), "runner.lease_s", "twice"
    ),
    ConfigCase("lease-nan", sub("lease_s = 3", "lease_s = nan"), "runner.lease_s", "finite"),
    ConfigCase("broken-exit-0", add("[runner]", "broken_exit_code = 0"), "broken_exit_code", "1"),
    ConfigCase(
        "broken-exit-256", add("[runner]", "broken_exit_code = 256"), "broken_exit_code", "255"
    ),
    ConfigCase("slots-zero", sub("slots = 4", "slots = 0"), "hosts.localhost.slots", "1"),
    ConfigCase(
        "retest-fraction-2", add(BRANCH, "retest_max_fraction = 2"), "retest_max_fraction", "1"
    ),
    ConfigCase(
        "retest-fraction-nan",
        add(BRANCH, "retest_max_fraction = nan"),
        "retest_max_fraction",
        "finite",
    ),
    ConfigCase("repeat-pause-neg", add(BRANCH, "repeat_pause_s = -1"), "repeat_pause_s", "0"),
    # Ref names and URL schemes.
    ConfigCase(
        "tested-ref-dotdot",
        sub('tested_ref = "tested"', 'tested_ref = "a..b"'),
        "trees.src.tested_ref",
        "invalid ref name",
    ),
    ConfigCase(
        "tested-ref-lock",
        sub('tested_ref = "tested"', 'tested_ref = "x.lock"'),
        "tested_ref",
        "ref name",
    ),
    ConfigCase(
        "input-ref-option", sub('input_ref = "main"', 'input_ref = "-main"'), "input_ref", "ref"
    ),
    ConfigCase(
        "input-ref-space", sub('input_ref = "main"', 'input_ref = "ma in"'), "input_ref", "ref"
    ),
    ConfigCase(
        "url-ext-transport",
        lambda t: re.sub(r'url = ".*"', 'url = "ext::sh -c touch% /tmp/x"', t),
        "trees.src.url",
        "'ext' not supported",
    ),
    ConfigCase(
        "url-ftp",
        lambda t: re.sub(r'url = ".*"', 'url = "ftp://h/r.git"', t),
        "trees.src.url",
        "'ftp'",
    ),
    ConfigCase(
        "push-url-option",
        add('[trees."src"]', 'push_url = "-oProxyCommand=x"'),
        "push_url",
        "invalid url",
    ),
    ConfigCase(
        "logs-url-scheme",
        append('[report]\nlogs_url = "javascript:alert(1)"'),
        "report.logs_url",
        "http://",
    ),
    # Names and lists.
    ConfigCase("blessing-space", add(BRANCH, 'blessing = "re al"'), "branches.b.blessing", "name"),
    ConfigCase("command-empty-list", sub('["test", "-n", "out/x"]', "[]"), "command", "at least 1"),
    ConfigCase("unknown-key", add("[runner]", "heartbeat = 1"), "runner.heartbeat", "unknown key"),
]


def _config_text(project: Project) -> Path:
    path = project.config(JOBS)
    path.write_text(path.read_text() + "\n" + MAIL)
    return path


@pytest.fixture
def project(tmp_path: Path, db_url: str) -> Project:
    return make_project(tmp_path, db_url)


@pytest.fixture(autouse=True)
def _keep_signal_handlers() -> Iterator[None]:
    """`branch run` and `bisect` install SIGINT/SIGTERM handlers: give pytest its own back."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for s, h in saved.items():
        signal.signal(s, h)


def test_the_valid_config_passes(project: Project) -> None:
    """The table's base config is good: each case breaks exactly one thing."""
    r = invoke("-c", str(_config_text(project)), "check")
    assert r.exit_code == 0, r.stderr


@pytest.mark.parametrize("case", CONFIG_CASES, ids=[c.id for c in CONFIG_CASES])
def test_bad_config(project: Project, case: ConfigCase) -> None:
    path = _config_text(project)
    path.write_text(case.mutate(path.read_text()))
    for args in (["check"], ["flight", "new", "b"]):
        line = assert_one_line(invoke("-c", str(path), *args), str(path), case.what)
        assert f": {case.key}" in line or not case.key or f".{case.key}" in line, line
    assert not (project.dir / "state").exists()
    assert row_counts(project.db_url) == {}


def test_bad_config_encodings(project: Project) -> None:
    """Not UTF-8: a Latin-1 byte on line 3, and UTF-16; the line is named."""
    path = _config_text(project)
    good = path.read_bytes()
    for data, expect in (
        (b"# r\xe9sum\xe9\n\n# caf\xe9\n" + good, ":1: not UTF-8 (byte 0xe9"),
        (b"\n\n" + "# café\n".encode("latin-1") + good, ":3: not UTF-8"),
        (good.decode().encode("utf-16"), ":1: not UTF-8 (byte 0xff"),
    ):
        path.write_bytes(data)
        for args in (["check"], ["flight", "new", "b"]):
            assert_one_line(invoke("-c", str(path), *args), str(path) + expect)
    assert not (project.dir / "state").exists()
    assert row_counts(project.db_url) == {}


# --- command-line arguments --------------------------------------------------------------


@dataclass(frozen=True)
class CliCase:
    id: str
    args: tuple[str, ...]
    what: tuple[str, ...]


HTML_UNDER_FILE = "{tmp}/afile/html"
CLI_CASES = [
    CliCase("flight-run-missing", ("flight", "run", "999999"), ("flight 999999 does not exist",)),
    CliCase("flight-show-missing", ("flight", "show", "99"), ("flight 99 does not exist",)),
    CliCase("flight-show-json-missing", ("flight", "show", "99", "--json"), ("flight 99",)),
    CliCase("report-missing", ("report", "99"), ("flight 99 does not exist",)),
    CliCase("report-json-missing", ("report", "99", "--json"), ("flight 99 does not exist",)),
    CliCase("report-html-unwritable", ("report", "1", "--html", HTML_UNDER_FILE), ("--html",)),
    CliCase("flight-run-not-int", ("flight", "run", "x1"), ("'x1' is not a valid integer",)),
    CliCase("daemon-poll-zero", ("daemon", "--once", "--poll", "0"), ("--poll", "positive")),
    CliCase("daemon-poll-negative", ("daemon", "--once", "--poll", "-5"), ("--poll",)),
    CliCase("daemon-poll-nan", ("daemon", "--once", "--poll", "nan"), ("--poll", "nan")),
    CliCase("flight-list-limit-0", ("flight", "list", "--limit", "0"), ("--limit",)),
    CliCase("flight-list-limit-neg", ("flight", "list", "--limit", "-1"), ("--limit",)),
    CliCase("blessing-space", ("flight", "new", "b", "--blessing", "a b"), ("--blessing",)),
    CliCase("blessing-1000", ("flight", "new", "b", "--blessing", LONG), ("--blessing", "100")),
    CliCase("rev-no-equals", ("flight", "new", "b", "--rev", "nonsense"), ("--rev", "TREE=REV")),
    CliCase("rev-unknown", ("flight", "new", "b", "--rev", "src=no-such-ref"), ("no-such-ref",)),
    CliCase("rev-option", ("flight", "new", "b", "--rev", "src=--upload-pack=x"), ("--upload",)),
    CliCase("branch-unknown", ("flight", "new", "nobranch"), ("branches.nobranch", "no such")),
    CliCase("branch-run-unknown", ("branch", "run", "nobranch"), ("no such branch",)),
    CliCase("gate-show-unknown", ("gate", "show", "nobranch"), ("no such branch",)),
    CliCase("block-why-newline", ("gate", "block", "b", "--why", "a\nb"), ("--why", "one line")),
    CliCase("block-by-1000", ("gate", "block", "b", "--why", "x", "--by", LONG), ("--by", "100")),
    CliCase("force-by-newline", ("gate", "force", "b", "--by", "x\ny"), ("--by",)),
    CliCase("bisect-run-not-id", ("bisect", "run", "abc"), ("bisection id", "abc")),
    CliCase("bisect-hosts-0", ("bisect", "b", "test-x", "run", "--hosts", "0"), ("--hosts",)),
    CliCase("bisect-good-form", ("bisect", "b", "test-x", "run", "--good", "x"), ("--good",)),
    CliCase("unknown-command", ("nosuch",), ("No such command 'nosuch'",)),
    CliCase("unknown-option", ("flight", "list", "--bogus"), ("--bogus",)),
    CliCase("missing-config", ("-c", "{tmp}/none.toml", "check"), ("none.toml", "not found")),
]


@pytest.fixture
def made(project: Project) -> Path:
    """A valid config whose database holds flight 1 (not run)."""
    cfg = _config_text(project)
    r = invoke("-c", str(cfg), "flight", "new", "b")
    assert r.exit_code == 0 and r.stdout.strip() == "1", r.stderr
    (project.dir / "afile").write_text("a file, not a directory\n")
    return cfg


@pytest.fixture
def finished(made: Path) -> Path:
    """Flight 1 finished and never reported."""
    r = invoke("-c", str(made), "flight", "run", "1", "-q")
    assert r.exit_code == 0, r.stdout + r.stderr
    return made


@pytest.mark.parametrize("case", CLI_CASES, ids=[c.id for c in CLI_CASES])
def test_bad_argument(project: Project, made: Path, case: CliCase) -> None:
    before = row_counts(project.db_url)
    args = [a.replace("{tmp}", str(project.dir)) for a in case.args]
    if "-c" not in args:
        args = ["-c", str(made), *args]
    assert_one_line(invoke(*args), *case.what)
    assert row_counts(project.db_url) == before
    assert not (project.dir / "afile.html").exists()


def test_report_html_unwritable_stores_no_verdict(project: Project, finished: Path) -> None:
    """The dir is checked before the first report of flight 1 would store its verdict."""
    r = invoke("-c", str(finished), "report", "1", "--html", str(project.dir / "afile" / "h"))
    assert_one_line(r, "--html", "afile")
    assert row_counts(project.db_url)["verdicts"] == 0
    r = invoke("-c", str(finished), "report", "1", "--html", str(project.dir / "html"))
    assert r.exit_code == 0, r.stderr
    assert row_counts(project.db_url)["verdicts"] == 1
