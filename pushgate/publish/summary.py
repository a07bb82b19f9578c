"""`pushgate check`: a readable summary of a validated config."""

from __future__ import annotations

from pushgate.config import Loaded


def config_summary(loaded: Loaded) -> str:
    cfg = loaded.cfg
    lines = [
        f"{loaded.path}: OK",
        f"database: {_safe(loaded.database_url)}",
        f"state: {loaded.state_dir}",
        "trees:",
    ]
    for name, t in cfg.trees.items():
        lines.append(f"  {name}: {t.url} ({t.input_ref} -> {t.tested_ref})")
    lines.append("branches:")
    for name, b in cfg.branches.items():
        jobs = loaded.branch_jobs(name)
        others = f" + {', '.join(b.other_trees)}" if b.other_trees else ""
        lines.append(
            f"  {name}: tree {b.tree}{others}; {len(jobs)} jobs; push {'on' if b.push else 'off'}"
        )
    lines.append(f"jobs: {len(loaded.jobs)}")
    for name, j in loaded.jobs.items():
        deps = ", ".join(f"{k}={v}" for k, v in j.all_buildjobs().items())
        lines.append(f"  {name}: {len(j.steps)} steps" + (f" ({deps})" if deps else ""))
    lines.append("hosts:")
    for name, h in cfg.hosts.items():
        flags = ",".join(h.flags) or "-"
        lines.append(f"  {name}: {h.executor}, {h.slots} slots, flags {flags}")
    return "\n".join(lines)


def _safe(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)
