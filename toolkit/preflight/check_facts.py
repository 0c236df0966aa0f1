"""The values `toolkit check` works with: facts per host in, findings and a report out.

`HostFacts` is what one host told the check (filled over SSH by `check.py`); `Finding`
is one cell of the host × check table; `CheckReport` is the whole answer, serializable.
The judging (`check_rules.py`, `check_cluster.py`) is pure and tested from these values.
"""

from __future__ import annotations

from collections import Counter
from dataclasses import asdict, dataclass, field
from typing import Any, Literal

from toolkit.plan import Plan
from toolkit.preflight.check_plan import version_key

Status = Literal["ok", "failed", "skipped"]
# Table columns, in order, with what each verifies.
CHECKS: dict[str, str] = {
    "ssh": "SSH connection",
    "sudo": "root for tuning (sudo -n when become is set)",
    "python": "the host's python",
    "engine": "engine installed, same version on every serving host",
    "router": "sglang-router on the router host",
    "bench": "the bench client (sglang or vllm, after the engine) on the bench host",
    "accel": "accelerators vs the profile's need",
    "nic": "NIC exists and holds the host's address",
    "env": "environment scripts (CANN set_env.sh) exist",
    "ports": "every planned port is free",
    "model": "model_path present, same files and size everywhere",
    "disk": "workdir and run dir writable, free space there",
    "clock": "clock skew between hosts",
    "flags": "planned flags against the installed engine",
    "reach": "TCP paths to bootstrap, dist-init and store ports",
    "devices": "planned GPUs/NPUs: other processes, free memory, ECC, persistence",
    "collective": "all-reduce and all-gather per instance over the planned interface",
    "container": "container runtime, image (pulled by `up`), GPU/NPU access, leftovers",
}


@dataclass(frozen=True)
class Finding:
    """One cell: a check's verdict on one host, with the reason and the fix."""

    host: str
    check: str
    status: Status
    summary: str  # what the table cell shows
    detail: str = ""  # the full reason
    fix: str = ""
    notes: tuple[str, ...] = ()  # warnings and translations, listed under the table


@dataclass
class HostFacts:
    """What one host told the check."""

    host: str
    unreachable: str | None = None
    probe: dict[str, Any] | None = None
    probe_error: str | None = None
    python: str = "python3"  # the planned interpreter
    python_missing: bool = False  # not found: the probe ran on python3 instead
    uid: int | None = None
    sudo_needed: bool = False  # become is set and the login user is not root
    sudo: str | None = None  # "ok", or what `sudo -n true` said
    clock_offset: float | None = None  # remote minus local, seconds
    clock_error: float | None = None  # ± bound of the offset

    @property
    def ok(self) -> bool:
        return self.unreachable is None and self.probe is not None

    @property
    def interpreter(self) -> str:
        """The interpreter that really ran here (for the follow-up programs)."""
        python = (self.probe or {}).get("python") or {}
        return python.get("executable") or self.python

    def package(self, dist: str) -> dict[str, Any]:
        """{version, path} of a distribution; empty when unknown (python missing, error)."""
        packages = (self.probe or {}).get("packages") or {}
        if self.python_missing or "error" in packages:
            return {}
        return packages.get(dist) or {}

    def section(self, name: str) -> Any:
        return (self.probe or {}).get(name)


@dataclass(frozen=True)
class CheckReport:
    """Every finding of one `toolkit check`, and the plan it checked (translated if asked)."""

    profile: str
    rehearse: bool
    hosts: list[str]
    findings: list[Finding]
    plan: Plan
    translated: bool = False
    elapsed_s: float = 0.0
    collective: list[dict[str, Any]] = field(default_factory=list)  # one per instance

    @property
    def failures(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "failed"]

    @property
    def ok(self) -> bool:
        return not self.failures

    def cell(self, host: str, check: str) -> Finding | None:
        return next((f for f in self.findings if (f.host, f.check) == (host, check)), None)

    def to_dict(self) -> dict[str, Any]:
        return {
            "schema": "toolkit.check/v1",
            "profile": self.profile,
            "rehearse": self.rehearse,
            "ok": self.ok,
            "hosts": self.hosts,
            "elapsed_s": round(self.elapsed_s, 2),
            "translated": self.translated,
            "notes": [n for n in self.plan.notes if n.startswith("--translate-flags")],
            "findings": [asdict(f) for f in self.findings],
            "collective": self.collective,
        }


def majority(values: list[str]) -> str:
    """The most common value; ties go to the highest version."""
    counts = Counter(values)
    return max(counts, key=lambda v: (counts[v], version_key(v), v))
