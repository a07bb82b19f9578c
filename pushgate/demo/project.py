"""The demo project: a small real C program (an RPN calculator) with a real test suite.

`VERSIONS` are successive states of the tree; the gate demo commits them one
after the other (a good baseline, a commit with a real bug, the fix).
"""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

RPN_C = r"""/* rpn: evaluate a reverse-Polish expression given as arguments. */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static double stack[64];
static int depth;

static int push(double v)
{
    if (depth >= 64) {
        fprintf(stderr, "rpn: stack overflow\n");
        return -1;
    }
    stack[depth++] = v;
    return 0;
}

static int pop(double *v)
{
    if (depth <= 0) {
        fprintf(stderr, "rpn: stack underflow\n");
        return -1;
    }
    *v = stack[--depth];
    return 0;
}

int main(int argc, char **argv)
{
    for (int i = 1; i < argc; i++) {
        const char *t = argv[i];
        double a, b;
        if (strlen(t) == 1 && strchr("+-*/", t[0])) {
            if (pop(&b) || pop(&a))
                return 2;
            switch (t[0]) {
            case '+': push(a + b); break;
            case '-': push(a - b); break;
            case '*': push(a * b); break;
            case '/':
                if (b == 0) {
                    fprintf(stderr, "rpn: division by zero\n");
                    return 2;
                }
                push(a / b);
                break;
            }
        } else {
            char *end;
            double v = strtod(t, &end);
            if (*end != '\0') {
                fprintf(stderr, "rpn: bad token '%s'\n", t);
                return 2;
            }
            if (push(v))
                return 2;
        }
    }
    if (depth != 1) {
        fprintf(stderr, "rpn: %d values left on the stack\n", depth);
        return 2;
    }
    printf("%g\n", stack[0]);
    return 0;
}
"""

MAKEFILE = """CC ?= cc
CFLAGS ?= -O2 -Wall

rpn: rpn.c
\t$(CC) $(CFLAGS) -o rpn rpn.c

check: rpn
\tRPN=./rpn sh tests/unit.sh

clean:
\trm -f rpn
"""

UNIT_SH = r"""#!/bin/sh
# Unit tests of rpn: each case is "expected <- arguments".
RPN=${RPN:-./rpn}
fails=0
check() {
    want=$1; shift
    got=$("$RPN" "$@" 2>&1)
    if [ "$got" = "$want" ]; then
        echo "ok   $* = $got"
    else
        echo "FAIL $*: want '$want', got '$got'"
        fails=$((fails + 1))
    fi
}
check 3 1 2 +
check -1 1 2 -
check 6 2 3 '*'
check 2.5 5 2 /
check 14 5 1 2 + 4 '*' + 3 -
check "rpn: division by zero" 1 0 /
check "rpn: stack underflow" 1 +
echo "$fails failures"
[ "$fails" -eq 0 ]
"""

CLI_SH = r"""#!/bin/sh
# Command-line behaviour of rpn, one check per step (the step's testid picks it).
RPN=${RPN:?}
case "$1" in
smoke)
    [ "$("$RPN" 40 2 +)" = 42 ] ;;
errors)
    ! "$RPN" 1 x + 2>/dev/null && ! "$RPN" 2>/dev/null ;;
precision)
    [ "$("$RPN" 1 3 /)" = 0.333333 ] ;;
deep)
    set -- 1; i=0
    while [ $i -lt 40 ]; do set -- "$@" 1 +; i=$((i + 1)); done
    [ "$("$RPN" "$@")" = 41 ] ;;
*)
    echo "unknown check $1"; exit 2 ;;
esac
"""

README = """# rpn

A tiny reverse-Polish calculator: `rpn 1 2 +` prints `3`.
`make check` runs the unit tests.
"""

VERSIONS: list[tuple[str, dict[str, str]]] = [
    (
        "rpn: a reverse-Polish calculator",
        {
            "rpn.c": RPN_C.replace("    case '*': push(a * b); break;\n", "").replace(
                'strchr("+-*/"', 'strchr("+-/"'
            ),
            "Makefile": MAKEFILE,
            "README.md": README,
        },
    ),
    ("rpn: multiplication\n\nSigned-off-by: Alice Example <alice@example.org>", {"rpn.c": RPN_C}),
    (
        "tests: unit and command-line tests\n\nSigned-off-by: Bob Example <bob@example.org>\n"
        "Acked-by: Alice Example <alice@example.org>",
        {"tests/unit.sh": UNIT_SH, "tests/cli.sh": CLI_SH},
    ),
]

# A patch series lands on staging: harmless commits around one with a real bug, so
# the bisector has a range to search.
SERIES_BEFORE: list[tuple[str, dict[str, str]]] = [
    (
        "README: usage examples\n\nSigned-off-by: Dan Example <dan@example.org>",
        {"README.md": README + "\nExamples: `rpn 2 3 '*'` prints 6; `rpn 7 2 -` prints 5.\n"},
    ),
    (
        "Makefile: an install target\n\nSigned-off-by: Erin Example <erin@example.org>\n"
        "Reviewed-by: Alice Example <alice@example.org>",
        {"Makefile": MAKEFILE + "\ninstall: rpn\n\tinstall -m 755 rpn $(DESTDIR)/usr/bin/rpn\n"},
    ),
]
SERIES_AFTER: list[tuple[str, dict[str, str]]] = [
    (
        "README: how to run the tests\n\nSigned-off-by: Dan Example <dan@example.org>",
        {
            "README.md": README + "\nExamples: `rpn 2 3 '*'` prints 6; `rpn 7 2 -` prints 5.\n"
            "\nRun `make check` before sending patches.\n"
        },
    ),
]

# A commit with a real bug: subtraction swaps its operands.
BUGGY = (
    "rpn: tidy the operator switch\n\nSigned-off-by: Carol Example <carol@example.org>",
    {"rpn.c": RPN_C.replace("case '-': push(a - b);", "case '-': push(b - a);")},
)
FIX = (
    "rpn: fix operand order of subtraction\n\n"
    "Reported-by: pushgate\nSigned-off-by: Alice Example <alice@example.org>",
    {"rpn.c": RPN_C},
)

CONFIG = """# pushgate.toml for the demo project (made by `pushgate demo`).

[state]
dir = "state"

[report]
logs_url = "file://{{logs}}"

[trees.rpn]
url = "{repo}"
input_ref = "staging"
tested_ref = "master"

[branches.rpn]
tree = "rpn"
jobs = ["build-*", "test-*"]
mail_to = ["rpn-devel@example.org"]

[hosts.localhost]
slots = 4
flags = ["arch-amd64"]

# Two builds from one template: `build-release` and `build-debug`.
[jobs."build-{{variant}}"]
matrix = {{ variant = ["release", "debug"] }}
hostflags = ["arch-amd64"]
artifacts = ["rpn/rpn"]
steps = [
  {{ testid = "build", command = "make -C rpn CFLAGS=\\"$CFLAGS_{{variant}}\\"", timeout = 120 }},
]
runvars = {{ CFLAGS_release = "-O2 -Wall", CFLAGS_debug = "-O0 -g -Wall" }}

[jobs."test-{{variant}}-unit"]
matrix = {{ variant = ["release", "debug"] }}
buildjob = "build-{{variant}}"
steps = [
  {{ testid = "unit", command = "RPN=$PUSHGATE_BUILD_ARTIFACTS/rpn/rpn sh rpn/tests/unit.sh" }},
]

[jobs.test-release-cli]
buildjob = "build-release"
steps = [
  {{ testid = "cli-smoke", command = "RPN=$PUSHGATE_BUILD_ARTIFACTS/rpn/rpn sh rpn/tests/cli.sh smoke" }},
  {{ testid = "cli-errors", command = "RPN=$PUSHGATE_BUILD_ARTIFACTS/rpn/rpn sh rpn/tests/cli.sh errors" }},
  {{ testid = "cli-precision", command = "RPN=$PUSHGATE_BUILD_ARTIFACTS/rpn/rpn sh rpn/tests/cli.sh precision" }},
  {{ testid = "cli-deep", command = "RPN=$PUSHGATE_BUILD_ARTIFACTS/rpn/rpn sh rpn/tests/cli.sh deep" }},
  {{ testid = "capture-logs", always = true, command = "ls -l $PUSHGATE_BUILD_ARTIFACTS/rpn; uname -a" }},
]
"""


def _git(repo: Path, *args: str) -> str:
    env = {k: v for k, v in os.environ.items() if not k.startswith("GIT_")}
    env.update(
        GIT_CONFIG_GLOBAL=os.devnull,
        GIT_CONFIG_NOSYSTEM="1",
        GIT_AUTHOR_NAME="Alice Example",
        GIT_AUTHOR_EMAIL="alice@example.org",
        GIT_COMMITTER_NAME="Alice Example",
        GIT_COMMITTER_EMAIL="alice@example.org",
    )
    return subprocess.run(
        ["git", "-c", "init.defaultBranch=staging", *args],
        cwd=repo,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    ).stdout.strip()


def commit(repo: Path, message: str, files: dict[str, str], author: str | None = None) -> str:
    for name, text in files.items():
        p = repo / name
        p.parent.mkdir(parents=True, exist_ok=True)
        p.write_text(text)
    _git(repo, "add", "--", *files)
    args = ["commit", "-q", "-m", message]
    if author:
        args += ["--author", author]
    _git(repo, *args)
    return _git(repo, "rev-parse", "HEAD")


def make_project(repo: Path) -> list[str]:
    """A fresh repository with the good history on `staging`; returns the commits."""
    repo.mkdir(parents=True, exist_ok=True)
    _git(repo, "init", "-q")
    return [commit(repo, msg, files) for msg, files in VERSIONS]


def write_config(dest: Path, repo: Path) -> Path:
    path = dest / "pushgate.toml"
    path.write_text(CONFIG.format(repo=repo))
    return path
