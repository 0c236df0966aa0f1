"""Time `toolkit up`/`down` side by side with Ansible and the SSH floor, as ratios.

Why: toolkit claims to stand a cluster up faster than the Ansible playbooks it replaces, and
close to what one SSH session per host can do. Absolute seconds depend on the machine, so
this script measures all three on the same network-namespace hosts in the same run and
reports ratios: Ansible/toolkit (how much faster toolkit is) and toolkit/floor (how much
orchestration overhead toolkit adds over the bare minimum).

What runs, per host count and repetition, on a fresh `TestCluster` (tests/integration):
- `toolkit up --check --skip-check`: connect, prepare, read the tuning; change nothing.
- `toolkit up --rehearse --skip-check --load-seconds 0`: connect, prepare, tune, upload and
  launch the rehearsal engine, wait for /health, one smoke request. Then `toolkit down`.
- `ansible-playbook bench/reference/ansible_up.yaml -f 16`, then ansible_down.yaml.
- `bash bench/reference/floor.sh HOST...`: the same work in one SSH session per host.

Needs root (network namespaces). Traffic goes only to the namespace hosts and loopback.
Usage: .venv/bin/python bench/orchestration.py --hosts 4 16 --repeat 2
"""

from __future__ import annotations

import argparse
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / "tests" / "integration"))
sys.path.insert(0, str(Path(__file__).resolve().parent))

from netns import TestCluster, missing_tools, sweep_stale  # noqa: E402
from orchestration_hosts import (  # noqa: E402
    SERVE_PORT,
    Tuning,
    leftovers,
    port_free,
    reap_anchor,
    wait_ports_free,
    wait_time_wait_gone,
)
from orchestration_report import Run, machine_notes, write_results  # noqa: E402
from toolkit_cli import kill_leftovers  # noqa: E402

# The reference playbooks and the floor script, copied from the team's shared perf folder so the
# benchmark runs from the checkout alone.
PERF = Path(__file__).resolve().parent / "reference"
VENV_PYTHON = REPO / ".venv" / "bin" / "python"
RUN_TIMEOUT_S = 600.0
PROXY_VARS = ("http_proxy", "https_proxy", "all_proxy", "ftp_proxy", "no_proxy")


# ----------------------------------------------------------------------------- running


def run_timed(argv: Sequence[str], env: dict[str, str], cwd: Path, log: Path) -> Run:
    """Run `argv`, timestamping each output line; the time stops when the process exits.

    Output is read on a thread and the clock stops at exit, not at EOF: ssh ControlPersist
    masters that Ansible leaves behind must not stretch the measurement.
    """
    lines: list[tuple[float, str]] = []
    start = time.perf_counter()
    proc = subprocess.Popen(
        list(argv), cwd=cwd, env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
        stdin=subprocess.DEVNULL, text=True, errors="replace", start_new_session=True,
    )  # fmt: skip

    def read() -> None:
        assert proc.stdout is not None
        for line in proc.stdout:
            lines.append((time.perf_counter() - start, line.rstrip("\n")))

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    try:
        rc = proc.wait(timeout=RUN_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        rc = proc.wait()
    seconds = time.perf_counter() - start
    reader.join(timeout=2)
    log.write_text("".join(f"{t:8.3f} {text}\n" for t, text in lines) + f"rc {rc}\n")
    return Run(seconds=seconds, rc=rc, lines=tuple(lines), log=log)


def clean_env(home: Path) -> dict[str, str]:
    """This process's environment without proxies or an SSH agent, HOME set to `home`."""
    env = {
        k: v
        for k, v in os.environ.items()
        if k.lower() not in PROXY_VARS and k not in ("SSH_AUTH_SOCK", "SSH_AGENT_PID")
    }
    env.update(HOME=str(home), XDG_CONFIG_HOME=str(home / ".config"))
    env.update(XDG_CACHE_HOME=str(home / ".cache"), XDG_DATA_HOME=str(home / ".local/share"))
    env.setdefault("LC_ALL", "C.UTF-8")  # ansible-core refuses a non-UTF-8 locale
    return env


def make_home(root: Path, cluster: TestCluster) -> Path:
    """A HOME whose ~/.ssh/known_hosts lists every host's key (Paramiko reads it)."""
    ssh_dir = root / "home" / ".ssh"
    ssh_dir.mkdir(parents=True, mode=0o700)
    shutil.copyfile(cluster.known_hosts, ssh_dir / "known_hosts")
    return root / "home"


# ----------------------------------------------------------------------------- toolkit


def profile_data(n: int) -> dict[str, Any]:
    """A mixed-mode sglang profile, one node per host, tuned like the reference playbook."""
    return {
        "meta": {
            "title": f"orchestration benchmark: {n} mixed nodes",
            "model": "none (rehearsal engine)",
            "hardware": "network-namespace hosts",
            "cards": n,
            "mode": "mixed",
            "dataset": "none",
            "seed": "bench/orchestration.py",
        },
        "engine": "sglang",
        "platform": "ascend",
        "model_path": "/models/none",
        "tuning": {
            "cpu_governor": "performance",
            "sysctl": {
                "vm.swappiness": 0,
                "kernel.numa_balancing": 0,
                "kernel.sched_migration_cost_ns": 50000,
            },
        },
        "unset_env": ["http_proxy", "https_proxy"],
        "nic_env": ["HCCL_SOCKET_IFNAME", "GLOO_SOCKET_IFNAME"],
        "roles": {"mixed": {"nnodes": 1, "instances": n, "host": "node", "port": SERVE_PORT}},
        "bench": {
            "backend": "sglang",
            "args": {
                "dataset-name": "random",
                "random-input-len": 128,
                "random-output-len": 16,
                "num-prompts": 1,
                "max-concurrency": 1,
            },
        },
        "rehearsal": {"load_seconds": 0},
    }


def toolkit_env(home: Path) -> dict[str, str]:
    env = clean_env(home)
    env.update(COLUMNS="200", NO_COLOR="1", TERM="dumb")
    env["PATH"] = f"{VENV_PYTHON.parent}:{env.get('PATH', '')}"
    return env


def toolkit_inputs(cluster: TestCluster, work: Path, rep: int) -> tuple[Path, Path]:
    """The profile and a YAML inventory (fresh work dirs) for one toolkit round."""
    n = len(cluster.hosts)
    profile = work / f"bench-mixed-{n}.yaml"
    profile.write_text(yaml.safe_dump(profile_data(n), sort_keys=False))
    inventory = cluster.write_inventory(
        work / f"inventory-{rep}.yaml",
        {"mixed": cluster.hosts},
        {"python": str(VENV_PYTHON)},
        workdirs=cluster.fresh_workdirs(f"bench{rep}"),
    )
    return profile, inventory


def toolkit_round(
    bench: Bench, cluster: TestCluster, work: Path, rep: int, tool: str = "toolkit"
) -> dict[str, Run]:
    """`up --check`, `up`, `down` on every host; always leaves the hosts clean. `tool`
    "baseline" runs the checkout given with --baseline (an earlier toolkit) instead."""
    profile, inventory = toolkit_inputs(cluster, work, rep)
    env = toolkit_env(work / "home")
    if tool == "baseline":
        assert bench.baseline is not None
        env["PYTHONPATH"] = str(bench.baseline)  # ahead of the editable install's path
    cli = [str(VENV_PYTHON), "-m", "toolkit.cli"]
    up = [*cli, "up", "-p", str(profile), "-i", str(inventory), "--rehearse", "--skip-check"]
    log = bench.log_path(len(cluster.hosts), rep)
    out: dict[str, Run] = {}
    bench.tuning.restore()
    out[f"{tool} check"] = run_timed([*up, "--check"], env, REPO, log(f"{tool}-check"))
    bench.tuning.restore()
    try:
        out[f"{tool} up"] = run_timed([*up, "--load-seconds", "0"], env, REPO, log(f"{tool}-up"))
        down = [*cli, "down"]
        if not out[f"{tool} up"].ok:
            down += ["-i", str(inventory)]  # no local record of a failed up
        out[f"{tool} down"] = run_timed(down, env, REPO, log(f"{tool}-down"))
    finally:
        killed = kill_leftovers(cluster.hosts)
        if killed:
            bench.note(
                f"`toolkit down` left processes {killed} (rep {rep}); the script killed them"
            )
        bench.tuning.restore()
    return out


# ----------------------------------------------------------------------------- Ansible


def ensure_ansible(cache: Path) -> Path:
    """ansible-playbook from a venv of its own under `cache`, installed on first use."""
    playbook = cache / "venv" / "bin" / "ansible-playbook"
    if playbook.exists():
        return playbook
    cache.mkdir(parents=True, exist_ok=True)
    subprocess.run(["python3", "-m", "venv", str(cache / "venv")], check=True)
    pip = cache / "venv" / "bin" / "pip"
    subprocess.run([str(pip), "install", "-q", "ansible-core"], check=True)
    return playbook


def ansible_inventory(path: Path, cluster: TestCluster) -> Path:
    """INI inventory named by address: the reference listener binds inventory_hostname."""
    lines = ["[all]", *(h.address for h in cluster.hosts), "", "[all:vars]"]
    lines += [
        "ansible_user=root",
        f"ansible_ssh_private_key_file={cluster.client_key}",
        "ansible_ssh_common_args='-o StrictHostKeyChecking=no -o UserKnownHostsFile=/dev/null'",
    ]
    path.write_text("\n".join(lines) + "\n")
    return path


def ansible_env(home: Path, playbook: Path) -> dict[str, str]:
    env = clean_env(home)
    env.update(
        ANSIBLE_HOST_KEY_CHECKING="False",
        ANSIBLE_PYTHON_INTERPRETER="/usr/bin/python3",
        ANSIBLE_NOCOLOR="1",
        ANSIBLE_REMOTE_TEMP=str(home / "ansible-remote-tmp"),
    )
    env["PATH"] = f"{playbook.parent}:{env.get('PATH', '')}"
    return env


def ansible_round(bench: Bench, cluster: TestCluster, work: Path, rep: int) -> dict[str, Run]:
    """ansible_up.yaml then ansible_down.yaml with 16 forks; kills what they leave."""
    inventory = ansible_inventory(work / "ansible.ini", cluster)
    env = ansible_env(work / "home", bench.playbook)
    log = bench.log_path(len(cluster.hosts), rep)
    out: dict[str, Run] = {}
    try:
        for step in ("up", "down"):
            argv = [str(bench.playbook), "-i", str(inventory), str(PERF / f"ansible_{step}.yaml")]
            out[f"ansible {step}"] = run_timed(
                [*argv, "-f", "16"], env, work, log(f"ansible-{step}")
            )
    finally:
        reap_anchor(cluster.hosts)
    return out


# ----------------------------------------------------------------------------- floor


def floor_round(bench: Bench, cluster: TestCluster, work: Path, rep: int) -> dict[str, Run]:
    """floor.sh on every host at once; its listeners are killed afterwards, untimed.

    floor.sh exits 0 even when a listener never came up, so the run is failed here when
    port 8000 is not held on every host.
    """
    env = clean_env(work / "home")
    env["KEY"] = str(cluster.client_key)
    argv = ["bash", str(PERF / "floor.sh"), *(h.address for h in cluster.hosts)]
    try:
        run = run_timed(argv, env, work, bench.log_path(len(cluster.hosts), rep)("floor"))
        down = [h.name for h in cluster.hosts if port_free(h)]
        if down:
            run = run.failed(f"bench: no listener on port {SERVE_PORT} of {', '.join(down)}")
        return {"floor": run}
    finally:
        reap_anchor(cluster.hosts)


# ----------------------------------------------------------------------------- driver


@dataclass
class Bench:
    """What every round needs, and what the run learns on the way for RESULTS.md."""

    logs: Path
    playbook: Path
    tuning: Tuning
    sessions: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    baseline: Path | None = None  # an earlier toolkit checkout, timed beside this one

    def log_path(self, n: int, rep: int) -> Callable[[str], Path]:
        return lambda name: self.logs / f"{n}h-r{rep}-{name}.log"

    def note(self, text: str) -> None:
        print(f"  note: {text}", flush=True)
        self.notes.append(text)


def bench_size(bench: Bench, n: int, repeat: int) -> list[Run]:
    """Every measurement `repeat` times on one fresh cluster of `n` hosts.

    Per repetition: Ansible, the floor, then toolkit, so that toolkit's TIME-WAIT sockets
    (see `wait_time_wait_gone`) only need waiting out between repetitions.
    """
    runs: list[Run] = []
    cluster = TestCluster(n)
    work = Path(tempfile.mkdtemp(prefix=f"toolkit-bench-{n}h-"))
    try:
        cluster.start()
        bench.sessions.append(cluster.session)
        make_home(work, cluster)
        for rep in range(1, repeat + 1):
            waited = wait_time_wait_gone(cluster.hosts)
            if waited > 1:
                bench.note(f"{n} hosts, before rep {rep}: waited {waited:.0f} s (untimed) "
                           f"for TIME-WAIT sockets on port {SERVE_PORT} to clear")  # fmt: skip
            for measure in (ansible_round, floor_round, toolkit_round):
                runs += after_round(bench, cluster, measure(bench, cluster, work, rep), rep)
            if bench.baseline is not None:
                wait_time_wait_gone(cluster.hosts)  # the previous round's TIME-WAIT sockets
                found = toolkit_round(bench, cluster, work, rep, tool="baseline")
                runs += after_round(bench, cluster, found, rep)
    finally:
        cluster.teardown()
        shutil.rmtree(work, ignore_errors=True)
    return runs


def after_round(
    bench: Bench, cluster: TestCluster, round_runs: dict[str, Run], rep: int
) -> list[Run]:
    """Name and print a round's runs; check the hosts are clean for the next round."""
    named = [r.named(tool, len(cluster.hosts), rep) for tool, r in round_runs.items()]
    report_progress(named)
    busy = wait_ports_free(cluster.hosts)
    if busy:
        raise RuntimeError(f"port {SERVE_PORT} still held on {busy}")
    bench.tuning.restore()
    return named


def report_progress(runs: Sequence[Run]) -> None:
    for r in runs:
        status = "" if r.rc == 0 else f"  FAILED rc {r.rc}, see {r.log}"
        print(f"  {r.hosts:>3} hosts  rep {r.rep}  {r.tool:<14} {r.seconds:7.2f} s{status}")
    sys.stdout.flush()


def parse_args(argv: Sequence[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--hosts", type=int, nargs="+", default=[4, 16], help="host counts")
    p.add_argument("--repeat", type=int, default=2, help="repetitions per host count")
    p.add_argument("--cache", type=Path, default=Path("/tmp/toolkit-bench-ansible"),
                   help="where ansible-core's venv is kept")  # fmt: skip
    p.add_argument("--out", type=Path, default=Path(__file__).resolve().parent / "RESULTS.md")
    p.add_argument("--logs", type=Path, help="keep every run's timestamped output here")
    p.add_argument("--baseline", type=Path,
                   help="an earlier toolkit checkout (git worktree add DIR REV) timed in the "
                   "same run, for a toolkit/baseline ratio")  # fmt: skip
    return p.parse_args(argv)


def preflight() -> None:
    if os.geteuid() != 0:
        sys.exit("bench/orchestration.py needs root (network-namespace hosts)")
    missing = missing_tools()
    if missing:
        sys.exit(f"missing {', '.join(missing)} (scripts/setup.sh installs them)")


def main(argv: Sequence[str] | None = None) -> int:
    args = parse_args(argv)
    preflight()
    playbook = ensure_ansible(args.cache)
    logs = args.logs or Path(tempfile.mkdtemp(prefix="toolkit-bench-logs-"))
    logs.mkdir(parents=True, exist_ok=True)
    sweep_stale()
    notes = machine_notes(playbook, VENV_PYTHON)
    bench = Bench(logs, playbook, Tuning(), baseline=args.baseline)
    bench.note(bench.tuning.describe(profile_data(1)["tuning"]))
    runs: list[Run] = []
    try:
        for n in args.hosts:
            print(f"{n} hosts:", flush=True)
            runs += bench_size(bench, n, args.repeat)
    finally:
        bench.tuning.restore()
    notes.finish(leftovers(bench.sessions), logs, bench.notes)
    given = sys.argv[1:] if argv is None else list(argv)
    command = " ".join([".venv/bin/python", "bench/orchestration.py", *given])
    write_results(args.out, runs, notes, command)
    print(f"wrote {args.out}; logs in {logs}")
    return 0 if all(r.rc == 0 for r in runs) else 1


if __name__ == "__main__":
    sys.exit(main())
