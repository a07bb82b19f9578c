"""Allow-list patterns (osstest §4.7): `<job> <testid>` with `@@` (anything but a space)
and `@` (a run with nothing in the range space..'/').

Ground floor: the config compiles them when it is loaded (so `pushgate check` refuses a
pattern that does not compile), and the classifier matches with them.
"""

from __future__ import annotations

import re
from collections.abc import Iterable


class AllowPatternError(ValueError):
    """An allow-list line that is not a valid pattern."""


def _allow_field(pat: str) -> str:
    # `@@`: anything but a space; `@`: a run with nothing in the range space..'/' (§4.7).
    return re.sub(r"@@|@", lambda m: "[^ ]*" if m.group(0) == "@@" else "[^ -/]*", pat)


def parse_allow(lines: Iterable[str]) -> list[re.Pattern[str]]:
    """Compile allow-list lines (allow.all then allow.<branch>, concatenated), §4.7."""
    out: list[re.Pattern[str]] = []
    for raw in lines:
        line = " ".join(raw.split())
        if not line or line.startswith("#"):
            continue
        remove = line.startswith("!")
        if remove:
            line = line[1:].strip()
        fields = line.split(" ")
        if len(fields) > 2:
            raise AllowPatternError(f"allow line has more than two fields: {raw.strip()!r}")
        job_pat = fields[0]
        test_pat = fields[1] if len(fields) == 2 else "@@"
        source = f"^(?:{_allow_field(job_pat)} {_allow_field(test_pat)})$"
        try:
            compiled = re.compile(source)
        except re.error as e:
            raise AllowPatternError(f"allow line {raw.strip()!r} does not compile: {e}") from None
        if remove:
            out = [p for p in out if p.pattern != source]
        else:
            out.append(compiled)
    return out
