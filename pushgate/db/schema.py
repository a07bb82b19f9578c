"""The one place the tables live (SQLAlchemy Core).

Alembic migrations in db/migrations must produce exactly this schema; a test
compares them. Times are epoch seconds (float) so SQLite and PostgreSQL agree.
"""

from __future__ import annotations

from sqlalchemy import (
    Boolean,
    Column,
    Float,
    ForeignKeyConstraint,
    Index,
    Integer,
    MetaData,
    String,
    Table,
    Text,
)

metadata = MetaData(
    naming_convention={
        "ix": "ix_%(table_name)s_%(column_0_N_name)s",
        "uq": "uq_%(table_name)s_%(column_0_N_name)s",
        "fk": "fk_%(table_name)s_%(column_0_name)s_%(referred_table_name)s",
        "pk": "pk_%(table_name)s",
    }
)

flights = Table(
    "flights",
    metadata,
    Column("flight", Integer, primary_key=True, autoincrement=True),
    Column("branch", String(200), nullable=False),
    # constructing -> running -> the final blessing (real, real-retest, ...).
    Column("blessing", String(50), nullable=False),
    Column("intended", String(50), nullable=False),
    # The blessing the flight takes when it finishes (real, real-retest, play, ...).
    Column("bless_as", String(50), nullable=False),
    Column("created", Float, nullable=False),
    Column("started", Float),
    Column("finished", Float),
    # The flight this one retests or bisects for (reports and threading).
    Column("parent_flight", Integer),
    Index("ix_flights_branch_blessing", "branch", "blessing", "flight"),
)

# The targeted tuple: one revision per tree of the flight.
flight_revisions = Table(
    "flight_revisions",
    metadata,
    Column("flight", Integer, primary_key=True),
    Column("tree", String(200), primary_key=True),
    Column("revision", String(64), nullable=False),
    Column("url", Text, nullable=False),
    # The tested-ref tip of this tree when the flight was made (the report's "that").
    Column("baseline", String(64)),
    ForeignKeyConstraint(["flight"], ["flights.flight"], ondelete="CASCADE"),
)

# Built tuple over the transitive buildjob closure, computed when the flight
# finishes, so "flights that tested revision R of tree t" is one indexed lookup.
# revision is NULL when the flight's jobs built different revisions (mismatch).
flight_built = Table(
    "flight_built",
    metadata,
    Column("flight", Integer, primary_key=True),
    Column("tree", String(200), primary_key=True),
    Column("revision", String(64)),
    ForeignKeyConstraint(["flight"], ["flights.flight"], ondelete="CASCADE"),
    Index("ix_flight_built_tree_revision", "tree", "revision", "flight"),
)

jobs = Table(
    "jobs",
    metadata,
    Column("flight", Integer, primary_key=True),
    Column("job", String(200), primary_key=True),
    Column("status", String(20), nullable=False),
    # Order of the job in the flight (config order), for grids and reports.
    Column("ordinal", Integer, nullable=False, default=0),
    Column("started", Float),
    Column("finished", Float),
    # Who runs it and until when the claim holds without a heartbeat.
    Column("runner", String(200)),
    Column("lease_until", Float),
    # Attempts after a crash, so a job that kills its runner is not retried forever.
    Column("attempts", Integer, nullable=False, default=0),
    # The fencing token (invariant 8): bumped whenever the job changes hands (claim,
    # take-over, requeue, break); every write a runner makes for the job names it.
    Column("attempt", Integer, nullable=False, default=0, server_default="0"),
    ForeignKeyConstraint(["flight"], ["flights.flight"], ondelete="CASCADE"),
    Index("ix_jobs_job_flight", "job", "flight"),
    Index("ix_jobs_status", "status"),
)

runvars = Table(
    "runvars",
    metadata,
    Column("flight", Integer, primary_key=True),
    Column("job", String(200), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("value", Text, nullable=False),
    # False: input set at construction; True: written while the job ran.
    Column("synth", Boolean, nullable=False, default=False),
    ForeignKeyConstraint(["flight", "job"], ["jobs.flight", "jobs.job"], ondelete="CASCADE"),
)

# `*buildjob` runvars as real references, possibly into another flight.
job_deps = Table(
    "job_deps",
    metadata,
    Column("flight", Integer, primary_key=True),
    Column("job", String(200), primary_key=True),
    Column("name", String(200), primary_key=True),
    Column("dep_flight", Integer, nullable=False),
    Column("dep_job", String(200), nullable=False),
    ForeignKeyConstraint(["flight", "job"], ["jobs.flight", "jobs.job"], ondelete="CASCADE"),
    ForeignKeyConstraint(["dep_flight", "dep_job"], ["jobs.flight", "jobs.job"]),
    Index("ix_job_deps_dep", "dep_flight", "dep_job"),
)

steps = Table(
    "steps",
    metadata,
    Column("flight", Integer, primary_key=True),
    Column("job", String(200), primary_key=True),
    Column("stepno", Integer, primary_key=True),
    Column("testid", String(400), nullable=False),
    Column("status", String(20), nullable=False),
    Column("fatal", Boolean, nullable=False, default=True),
    Column("started", Float),
    Column("finished", Float),
    # Path of the step's log, relative to the logs dir.
    Column("log", Text),
    Column("reason", Text),
    ForeignKeyConstraint(["flight", "job"], ["jobs.flight", "jobs.job"], ondelete="CASCADE"),
    # History: "did (job, testid) ever pass / what was its status in flight C".
    Index("ix_steps_job_testid_status", "job", "testid", "status", "flight"),
)

hosts = Table(
    "hosts",
    metadata,
    Column("host", String(200), primary_key=True),
    Column("executor", String(50), nullable=False),
    Column("slots", Integer, nullable=False),
    Column("flags", Text, nullable=False, default=""),
    # idle / allocated is derived from host_slots; state is for the operator.
    Column("state", String(20), nullable=False, default="idle"),
    Column("health", String(20), nullable=False, default="unknown"),
    Column("updated", Float, nullable=False),
    # Who set the health, when and why (`hosts set-health`, the reaper).
    Column("health_why", Text),
    Column("health_by", String(200)),
    Column("health_changed", Float),
    # A person's hold (`hosts allocate`): no job gets a slot of the host until then.
    Column("held_by", String(200)),
    Column("held_until", Float),
    Column("held_why", Text),
    # A health check is wanted before the host takes jobs again (since then), and the
    # health-check flight queued for it: only that flight's job may use the host.
    Column("check_due", Float),
    Column("check_flight", Integer),
)

# A host's history besides its jobs: health changes, holds, releases by the reaper.
host_events = Table(
    "host_events",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(200), nullable=False),
    Column("at", Float, nullable=False),
    Column("kind", String(20), nullable=False),
    Column("value", String(200), nullable=False),
    Column("why", Text, nullable=False),
    Column("by", String(200), nullable=False),
    Index("ix_host_events_host_at", "host", "at"),
)

# One row per worker process (`pushgate worker`, and every flight run): its heartbeat.
workers = Table(
    "workers",
    metadata,
    Column("worker", String(200), primary_key=True),
    Column("machine", String(200), nullable=False),
    Column("pid", Integer, nullable=False),
    Column("started", Float, nullable=False),
    Column("heartbeat", Float, nullable=False),
    Column("lease_until", Float, nullable=False),
    Column("stopped", Float),
    Column("why", Text),
)

# One row per slot: a claim is an UPDATE of a free row, so no slot is ever
# held by two jobs (invariant 2). Expired leases are reclaimable.
host_slots = Table(
    "host_slots",
    metadata,
    Column("host", String(200), primary_key=True),
    Column("slot", Integer, primary_key=True),
    Column("flight", Integer),
    Column("job", String(200)),
    Column("runner", String(200)),
    Column("lease_until", Float),
    # The holding job's attempt: only that attempt may renew or release the slot.
    Column("attempt", Integer),
    ForeignKeyConstraint(["host"], ["hosts.host"], ondelete="CASCADE"),
    Index("ix_host_slots_flight_job", "flight", "job"),
)

host_allocations = Table(
    "host_allocations",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("host", String(200), nullable=False),
    Column("slot", Integer, nullable=False),
    Column("flight", Integer, nullable=False),
    Column("job", String(200), nullable=False),
    Column("allocated", Float, nullable=False),
    Column("released", Float),
    Column("attempt", Integer),
    Index("ix_host_allocations_flight_job", "flight", "job"),
    Index("ix_host_allocations_host_allocated", "host", "allocated"),
)

pushes = Table(
    "pushes",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("branch", String(200), nullable=False),
    Column("tree", String(200), nullable=False),
    # One push decision per flight: never twice for one decision (invariant 1).
    Column("flight", Integer, nullable=False, unique=True),
    Column("revision", String(64), nullable=False),
    Column("expected_old", String(64)),
    # pending -> pushed | refused | failed | uptodate; a decision that did not move the ref
    # (failed, or not-pushed by a block since lifted) may become pending again (gate.push).
    Column("status", String(20), nullable=False),
    Column("output", Text, nullable=False, default=""),
    Column("created", Float, nullable=False),
    Column("finished", Float),
    # Why the gate decided so (tolerable, blocked: ..., forced), and who gave a block or
    # force that decided it.
    Column("why", Text),
    Column("decided_by", String(200)),
)

gate_state = Table(
    "gate_state",
    metadata,
    Column("branch", String(200), primary_key=True),
    Column("blocked_why", Text),
    Column("force", Boolean, nullable=False, default=False),
    Column("force_revision", String(64)),
    Column("updated", Float, nullable=False),
    # Who gave the current block or force (`--by`, default the login name).
    Column("updated_by", String(200)),
)

mail_queue = Table(
    "mail_queue",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("message_id", String(400), nullable=False, unique=True),
    Column("kind", String(50), nullable=False),
    Column("flight", Integer),
    Column("recipients", Text, nullable=False),
    Column("message", Text, nullable=False),
    # queued -> sent | failed
    Column("status", String(20), nullable=False),
    Column("attempts", Integer, nullable=False, default=0),
    Column("next_attempt", Float, nullable=False),
    Column("last_error", Text),
    Column("created", Float, nullable=False),
    Column("sent", Float),
    Index("ix_mail_queue_status_next", "status", "next_attempt"),
)

# The push gate's per-flight cycle state (one row per main flight a cycle made), so a
# cycle killed at any point resumes from the database: which stage it reached, the mode
# the flight was made in, what the report compares against and the push's expected old.
gate_cycles = Table(
    "gate_cycles",
    metadata,
    Column("flight", Integer, primary_key=True),
    Column("branch", String(200), nullable=False),
    Column("tree", String(200), nullable=False),
    # normal | baseline-test | up-to-date (target == baseline, pushing disabled)
    Column("mode", String(20), nullable=False),
    Column("target", String(64), nullable=False),
    # The comparison baseline of the report ("that"); None: a report without a baseline.
    Column("that_revision", String(64)),
    # The tested-ref tip when the flight was made: the compare-and-swap's expected old value.
    Column("expected_old", String(64)),
    Column("reason", Text, nullable=False, default=""),
    Column("retest_flight", Integer),
    Column("retest_note", Text),
    # flight -> retest -> push -> report -> bisect -> done
    Column("stage", String(20), nullable=False),
    Column("created", Float, nullable=False),
    Column("updated", Float, nullable=False),
    ForeignKeyConstraint(["flight"], ["flights.flight"], ondelete="CASCADE"),
    Index("ix_gate_cycles_branch_flight", "branch", "flight"),
)

# One row per bisection of a (branch, job, testid) regression. All other state is flights:
# a rerun recomputes the search from their results. `active` holds "branch job testid" while
# the bisection runs and NULL after, so a unique constraint allows one running bisection per
# regression (both SQLite and PostgreSQL allow many NULLs).
bisections = Table(
    "bisections",
    metadata,
    Column("id", Integer, primary_key=True, autoincrement=True),
    Column("branch", String(200), nullable=False),
    Column("job", String(200), nullable=False),
    Column("testid", String(400), nullable=False),
    Column("active", String(800), unique=True),
    # Tuples as JSON objects tree -> revision.
    Column("basis", Text, nullable=False),
    Column("latest", Text, nullable=False),
    Column("basis_flight", Integer),
    Column("latest_flight", Integer),
    # h*: the host every probe is pinned to (strict mode).
    Column("host", String(200), nullable=False),
    # Probes are the real-bisect flights numbered above this one.
    Column("start_flight", Integer, nullable=False),
    # running | complete | flake | inconclusive | inconsistent | unreproducible | doubtful
    Column("status", String(20), nullable=False),
    Column("culprit_tree", String(200)),
    Column("culprit_commit", String(64)),
    Column("confidence", Float),
    Column("runs", Integer, nullable=False, default=0),
    Column("reason", Text),
    Column("created", Float, nullable=False),
    Column("finished", Float),
    Index("ix_bisections_branch_job_testid", "branch", "job", "testid"),
)

# A flight's verdict, stored once when the flight (with its retest) is judged; every report,
# page, gate decision and statistic reads it (invariant 9). `doc` is the whole
# classification with what the report needs beside it (push-age lines, people, commits),
# as JSON; the columns are what lists and filters need without parsing it.
verdicts = Table(
    "verdicts",
    metadata,
    Column("flight", Integer, primary_key=True),
    Column("branch", String(200), nullable=False),
    Column("created", Float, nullable=False),
    Column("outcome", String(100), nullable=False),
    Column("subject_prefix", String(50), nullable=False),
    Column("verdict", String(100), nullable=False),
    Column("blocking", Boolean, nullable=False),
    Column("mode", String(20), nullable=False),
    Column("retest_flight", Integer),
    Column("doc", Text, nullable=False),
    ForeignKeyConstraint(["flight"], ["flights.flight"], ondelete="CASCADE"),
    Index("ix_verdicts_branch_flight", "branch", "flight"),
)

# Every step (or whole job) of a verdict that did not pass, with its class: the rows
# flakiness statistics and history grids read, indexed by (job, testid).
verdict_failures = Table(
    "verdict_failures",
    metadata,
    Column("flight", Integer, primary_key=True),
    Column("seq", Integer, primary_key=True),
    Column("job", String(200), nullable=False),
    Column("stepno", Integer),
    Column("testid", String(400), nullable=False),
    Column("status", String(20), nullable=False),
    # regression | like | never-pass | heisenbug | blocked | allowed | baseline-untested
    # | broken | unfinished | failed
    Column("kind", String(30), nullable=False),
    # The flight it was seen in, when not the judged flight (a heisen flight).
    Column("in_flight", Integer),
    Column("reference_flight", Integer),
    Column("passed_in", Integer),
    Column("blocks", Boolean, nullable=False),
    Column("annotation", Text, nullable=False),
    ForeignKeyConstraint(["flight"], ["verdicts.flight"], ondelete="CASCADE"),
    Index("ix_verdict_failures_job_testid", "job", "testid"),
)
