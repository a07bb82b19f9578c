"""The one base class of the errors a user can meet.

The CLI prints any `PushgateError` as one line on stderr and exits with status 2; anything
else reaching it is a bug (and is still printed as one line, with a hint to report it).
"""

from __future__ import annotations


class PushgateError(Exception):
    """Bad input or an unusable environment, said in one line."""


# Exit statuses of the commands that run flights and cycles (`flight run`, `branch run`,
# `daemon --once`), the same for each; the README's "Exit codes" lists them.
EXIT_OK = 0
"""Passed: every job passed or the verdict is tolerable (and pushed, where pushing)."""
EXIT_NOT_PASSED = 1
"""Regressions, or not pushed (the verdict blocks, the gate is blocked, the push refused)."""
EXIT_BAD_INPUT = 2
"""Bad input or an unusable environment: one line on stderr, nothing written."""
EXIT_BROKEN = 3
"""Broken or incomplete: infrastructure failures, a push that failed, pushgate's own bug."""
EXIT_INTERRUPTED = 130
"""Stopped by SIGINT or SIGTERM before the end; the work is resumable (128 + SIGINT)."""

_SEVERITY = (EXIT_OK, EXIT_NOT_PASSED, EXIT_BROKEN, EXIT_BAD_INPUT, EXIT_INTERRUPTED)


def worst_exit(codes: list[int | None]) -> int:
    """The most severe of several runs' exit statuses (130 > 2 > 3 > 1 > 0); a status
    outside the table (a crash, a signal) counts as 3, broken; None (not run) as 0."""
    worst = EXIT_OK
    for c in codes:
        c = EXIT_OK if c is None else c if c in _SEVERITY else EXIT_BROKEN
        if _SEVERITY.index(c) > _SEVERITY.index(worst):
            worst = c
    return worst
