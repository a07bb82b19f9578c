"""What a bisection found, as the runner returns it and the report renders it."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from pushgate.bisect.graph import Node


@dataclass(frozen=True)
class TraceRow:
    """One flight's result at a node of the graph (osstest's `Searching for test results`)."""

    flight: int
    result: str  # pass | fail | broken
    node: Node
    host: str
    kind: str  # trigger | history | probe


@dataclass
class BisectResult:
    id: int
    branch: str
    job: str
    testid: str
    outcome: str
    exit_code: int
    culprit: dict[str, str] | None
    culprit_tree: str | None
    culprit_commit: str | None
    not_present: list[str]
    confidence: float
    runs: int
    probe_flights: list[int]
    rounds: int
    subject: str = ""
    body: str = ""
    svg_path: Path | None = None
    reason: str = ""
    trace: list[TraceRow] = field(default_factory=list)
    shared_with: list[int] = field(default_factory=list)
    """Other bisections whose jobs also ran in this one's probe flights (same range)."""
