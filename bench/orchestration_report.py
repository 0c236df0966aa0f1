"""The numbers of bench/orchestration.py: runs, toolkit's phases, the RESULTS.md table.

Why a module of its own: measuring (SSH hosts, subprocesses) and reporting (medians, ratios,
phase split from toolkit's timestamped output, Markdown) change for different reasons, and
the report can be rebuilt from recorded runs without a cluster.
"""

from __future__ import annotations

import datetime
import os
import platform
import re
import statistics
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path

TOOLS = ("toolkit up", "toolkit check", "toolkit down", "ansible up", "ansible down", "floor")
NOISY_SPREAD = 1.25  # max/min of one cell's runs above this: flagged as noisy

# Where each toolkit phase ends: (phase, pattern of the line that ends it, first|last match).
# Phases are the executor's (toolkit/executor/up.py); their results print when a phase ends.
UP_PHASES = (
    ("start-up", r"toolkit up .* · run ", "first"),
    ("connect + prepare", r"\] (active run|ports free|nic) ", "last"),
    ("tune", r"\] (cpu governor|sysctl) ", "last"),
    ("launch", r"waiting for \d+ nodes", "first"),
    ("wait /health", r"^\s+\S+\s+ready\s+[\d.]+ s", "last"),
    ("smoke + recap", r"READY — ", "first"),
)
DOWN_PHASES = (
    ("start-up", r"toolkit down · run ", "first"),
    ("connect + stop", r"\] stop ", "last"),
    ("restore + remove", r"\] remove", "last"),
)
PHASES = {"toolkit up": UP_PHASES, "toolkit check": UP_PHASES[:3], "toolkit down": DOWN_PHASES}


@dataclass(frozen=True)
class Run:
    """One timed command: wall seconds from spawn to exit, exit code, timestamped output."""

    seconds: float
    rc: int
    lines: tuple[tuple[float, str], ...]
    log: Path
    tool: str = ""
    hosts: int = 0
    rep: int = 0

    def named(self, tool: str, hosts: int, rep: int) -> Run:
        return replace(self, tool=tool, hosts=hosts, rep=rep)

    def failed(self, why: str) -> Run:
        """This run marked failed (exit 1 unless it failed already), `why` as its last line."""
        return replace(self, rc=self.rc or 1, lines=(*self.lines, (self.seconds, why)))

    @property
    def ok(self) -> bool:
        return self.rc == 0


def phases(run: Run) -> dict[str, float]:
    """Seconds per phase of a toolkit run, from when each phase's results were printed.

    A phase whose marker is missing is folded into the next one; "exit" is the rest.
    """
    out: dict[str, float] = {}
    last = 0.0
    for name, pattern, which in PHASES.get(run.tool, ()):
        hits = [t for t, line in run.lines if re.search(pattern, line)]
        if hits:
            at = hits[0] if which == "first" else hits[-1]
            out[name] = at - last
            last = at
    out["exit"] = run.seconds - last
    return out


# ----------------------------------------------------------------------------- machine


def _first_line(argv: Sequence[str]) -> str:
    try:
        proc = subprocess.run(list(argv), capture_output=True, text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return f"unknown ({exc})"
    text = (proc.stdout or proc.stderr).strip()
    return text.splitlines()[0] if text else ""


def _meminfo_gib() -> str:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemTotal:"):
            return f"{int(line.split()[1]) / 2**20:.0f} GiB"
    return "unknown"


def _cpu_model() -> str:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("model name"):
            return line.split(":", 1)[1].strip()
    return platform.processor() or "unknown"


@dataclass
class MachineNotes:
    """What the numbers depend on, collected at the start and the end of a run."""

    started: str
    machine: str
    versions: list[str]
    load_start: tuple[float, ...]
    load_end: tuple[float, ...] = ()
    leftovers: list[str] = field(default_factory=list)
    logs: Path | None = None
    observations: list[str] = field(default_factory=list)

    def finish(self, leftovers: list[str], logs: Path, observations: list[str]) -> None:
        self.load_end = os.getloadavg()
        self.leftovers = leftovers
        self.logs = logs
        self.observations = observations


def machine_notes(playbook: Path, python: Path) -> MachineNotes:
    now = datetime.datetime.now(datetime.timezone.utc).astimezone()
    cores = os.cpu_count()
    machine = f"{cores} cores ({_cpu_model()}), {_meminfo_gib()}, Linux {platform.release()}"
    versions = [
        _first_line([str(playbook), "--version"]),
        _first_line(["ssh", "-V"]),
        "toolkit's Python: " + _first_line([str(python), "-V"]),
        "hosts' Python for Ansible and the floor: " + _first_line(["/usr/bin/python3", "-V"]),
    ]
    return MachineNotes(now.isoformat(timespec="seconds"), machine, versions, os.getloadavg())


# ----------------------------------------------------------------------------- tables


def _secs(runs: Sequence[Run]) -> list[float]:
    return [r.seconds for r in runs if r.ok]


def _median(runs: Sequence[Run]) -> float | None:
    secs = _secs(runs)
    return statistics.median(secs) if secs else None


def _cell(runs: Sequence[Run]) -> str:
    each = ", ".join(f"{r.seconds:.2f}" if r.ok else f"failed (rc {r.rc})" for r in runs)
    med = _median(runs)
    return f"{each} · **{med:.2f}**" if med is not None else each or "–"


def _ratio(a: float | None, b: float | None) -> str:
    return f"{a / b:.1f}×" if a is not None and b else "–"


def _select(runs: Sequence[Run], tool: str, hosts: int) -> list[Run]:
    return sorted((r for r in runs if r.tool == tool and r.hosts == hosts), key=lambda r: r.rep)


def main_table(runs: Sequence[Run]) -> list[str]:
    head = ["hosts", "toolkit up", "toolkit up --check", "toolkit down", "ansible up"]
    head += ["ansible down", "floor", "ansible/toolkit up", "toolkit/floor up"]
    head += ["ansible/toolkit down"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted({r.hosts for r in runs}):
        sel = {tool: _select(runs, tool, n) for tool in TOOLS}
        med = {tool: _median(sel[tool]) for tool in TOOLS}
        cells = [str(n)] + [_cell(sel[t]) for t in TOOLS]
        cells += [_ratio(med["ansible up"], med["toolkit up"])]
        cells += [_ratio(med["toolkit up"], med["floor"])]
        cells += [_ratio(med["ansible down"], med["toolkit down"])]
        rows.append("| " + " | ".join(cells) + " |")
    return rows


def baseline_table(runs: Sequence[Run]) -> list[str]:
    """With --baseline: an earlier toolkit timed in the same run, and this one against it."""
    if not any(r.tool.startswith("baseline") for r in runs):
        return []
    head = ["hosts", "baseline up", "toolkit up", "toolkit/baseline up"]
    head += ["baseline down", "toolkit down", "toolkit/baseline down"]
    rows = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for n in sorted({r.hosts for r in runs}):
        cells = [str(n)]
        for what in ("up", "down"):
            base, now = _select(runs, f"baseline {what}", n), _select(runs, f"toolkit {what}", n)
            cells += [_cell(base), _cell(now), _ratio(_median(now), _median(base))]
        rows.append("| " + " | ".join(cells) + " |")
    return ["## This toolkit against the baseline checkout (same run)", "", *rows, ""]


def phase_table(runs: Sequence[Run], tool: str) -> list[str]:
    """Median seconds per phase of `tool`, per host count."""
    names = [p[0] for p in PHASES[tool]] + ["exit", "total"]
    rows = ["| hosts | " + " | ".join(names) + " |", "|" + "---|" * (len(names) + 1)]
    for n in sorted({r.hosts for r in runs}):
        ok = [r for r in _select(runs, tool, n) if r.ok]
        if not ok:
            continue
        split = [phases(r) for r in ok]
        cells = [f"{statistics.median(s.get(p, 0.0) for s in split):.2f}" for p in names[:-1]]
        cells.append(f"{statistics.median(r.seconds for r in ok):.2f}")
        rows.append(f"| {n} | " + " | ".join(cells) + " |")
    return rows


def noisy_cells(runs: Sequence[Run]) -> list[str]:
    """Cells whose runs differ by more than NOISY_SPREAD (max/min)."""
    out = []
    for n in sorted({r.hosts for r in runs}):
        for tool in TOOLS:
            secs = _secs(_select(runs, tool, n))
            if len(secs) > 1 and max(secs) / min(secs) > NOISY_SPREAD:
                out.append(f"{tool} at {n} hosts ({min(secs):.2f}–{max(secs):.2f} s)")
    return out


def failures(runs: Sequence[Run]) -> list[str]:
    out = []
    for r in (r for r in runs if not r.ok):
        tail = "\n".join(line for _, line in r.lines[-15:])
        out += [f"- {r.tool}, {r.hosts} hosts, rep {r.rep}: exit {r.rc}", "", "```", tail, "```"]
    return out


# ----------------------------------------------------------------------------- document


def _notes_section(runs: Sequence[Run], notes: MachineNotes) -> list[str]:
    load = ", ".join(f"{x:.2f}" for x in notes.load_start)
    load_end = ", ".join(f"{x:.2f}" for x in notes.load_end)
    lines = [
        f"- date: {notes.started}",
        f"- machine: {notes.machine}",
        *(f"- {v}" for v in notes.versions),
        f"- load average (1, 5, 15 min): {load} at the start, {load_end} at the end",
        *(f"- {o}" for o in notes.observations),
        "- left behind by this run (namespaces, processes): "
        + (", ".join(notes.leftovers) or "nothing"),
    ]
    if notes.logs:
        lines.append(f"- timestamped output of every run: `{notes.logs}` (not kept in the repo)")
    return lines


def _noise_section(runs: Sequence[Run], notes: MachineNotes) -> list[str]:
    noisy = noisy_cells(runs)
    cores = os.cpu_count() or 1
    busy = max(notes.load_start + notes.load_end, default=0.0) > cores
    if not noisy and not busy:
        return []
    spread = f"runs that differ by more than {NOISY_SPREAD:.2f}×: {', '.join(noisy) or 'none'}"
    return [
        f"**Noisy.** The load average went above the {cores} cores during the run (this "
        "benchmark's own hosts and, on a shared machine, other engineers' tests); "
        f"{spread}. Compare ratios within a row rather than seconds across runs.",
        "",
    ]


READING = """All hosts are namespaces of one machine: each host's share of the work (its sshd, the
remote Python, the engine) runs on the same cores as every other host's and as the
controller, so per-host costs add up here where a real cluster would run them in parallel.
The reference runs in the shared perf folder's README (same kind of machine): Ansible 19.1 and
22.1 s at 4 hosts, 59.5 and 56.6 s at 16; floor 1.7 and 1.0 s at 4, 4.0 and 3.5 s at 16.
`toolkit up` does more than Ansible and the floor (it uploads the engine and launch scripts,
waits for HTTP `/health` rather than an open port, and sends a generation request)."""


def render(runs: Sequence[Run], notes: MachineNotes, command: str) -> str:
    parts = [
        "# Orchestration timings: toolkit vs Ansible vs the SSH floor",
        "",
        "Wall seconds from spawning the command to its exit; each run, then the "
        "**median**. Ratios are of medians. What each column does: `bench/README.md`.",
        "",
        *main_table(runs),
        "",
        *baseline_table(runs),
        *_noise_section(runs, notes),
        READING,
        "",
        "## Where `toolkit up` spends its time (median seconds per phase)",
        "",
        "Each phase ends when its per-host results are printed (toolkit prints a phase's "
        "results once every host has finished it); start-up is Python, imports and planning.",
        "",
        *phase_table(runs, "toolkit up"),
        "",
        "`toolkit up --check`:",
        "",
        *phase_table(runs, "toolkit check"),
        "",
        "`toolkit down`:",
        "",
        *phase_table(runs, "toolkit down"),
        "",
        "## How it was made",
        "",
        f"```\n{command}\n```",
        "",
        *_notes_section(runs, notes),
    ]
    failed = failures(runs)
    if failed:
        parts += ["", "## Failed runs", "", *failed]
    return "\n".join(parts) + "\n"


def write_results(path: Path, runs: Sequence[Run], notes: MachineNotes, command: str) -> None:
    path.write_text(render(runs, notes, command))
