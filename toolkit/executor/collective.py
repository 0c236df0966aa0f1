"""`toolkit check --collective` on the hosts: upload the worker, start it per node, collect.

Instances on disjoint machines run at once (`waves`). Per instance, the leader's launcher
starts first and prints the port it found free next to the planned dist-init port; then
every other node's launcher starts with that port. Each launcher runs its workers in the
node's planned environment (unset, sourced files, env, the NIC variables) with the node's
planned interpreter, as the user `up` starts the engine as (through sudo when become is
set), and kills them at its deadline, on a signal, or once its heartbeat finds the
controller gone; its script is removed when it exits.

Pure planning and judging live in `preflight/collective.py`.
"""

from __future__ import annotations

import json
import re
import threading
from pathlib import Path
from typing import Any

from toolkit import shell
from toolkit.executor.cluster import Cluster
from toolkit.executor.session import parallel
from toolkit.host import collective_worker as worker
from toolkit.plan import Plan
from toolkit.preflight import collective as pure
from toolkit.preflight.check_facts import Finding, HostFacts
from toolkit.preflight.check_rules import holding_interface

WORKER_SOURCE = Path(worker.__file__).read_text()
_NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]*$")  # a variable name (the value is quoted)
PORT_WAIT_S = 60.0  # SSH channel plus the launcher's start on the leader


def run_collectives(
    cluster: Cluster, plan: Plan, facts: dict[str, HostFacts], backend: str
) -> tuple[list[Finding], list[dict[str, Any]]]:
    """Every instance's collective test; findings per host and a summary per instance."""
    nics = {name: _detected_nic(plan, name, f) for name, f in facts.items()}
    tests = pure.plan_collectives(plan, backend, nics)
    outcomes: dict[str, tuple[list[Finding], dict[str, Any]]] = {}
    runnable = []
    for test in tests:
        down = [p.host for p in test.parts if not facts[p.host].ok]
        if down:
            why = f"{test.name}: {', '.join(down)} gave no facts (see ssh/python)"
            skipped = [Finding(p.host, "collective", "skipped", "not run", why) for p in test.parts]
            outcomes[test.name] = (skipped, {"instance": test.name, "ok": None, "skipped": why})
        else:
            runnable.append(test)
    for wave in waves(runnable, cluster):
        judged = parallel(wave, lambda t: pure.judge(t, _run_instance(cluster, t)))
        for test, result in zip(wave, judged, strict=True):
            if isinstance(result, Exception):
                raise result
            outcomes[test.name] = result
    findings = [f for test in tests for f in outcomes[test.name][0]]
    return findings, [outcomes[test.name][1] for test in tests]


def waves(tests: list[pure.InstanceTest], cluster: Cluster) -> list[list[pure.InstanceTest]]:
    """Instances that share no machine run at once; two on one machine (a local rehearsal)
    run one after the other, since their rendezvous ports would be searched from one base."""
    grouped: list[tuple[set[str], list[pure.InstanceTest]]] = []
    for test in tests:
        machines = {cluster.hosts[p.host].machine for p in test.parts}
        for used, members in grouped:
            if not used & machines:
                used |= machines
                members.append(test)
                break
        else:
            grouped.append((machines, [test]))
    return [members for _, members in grouped]


def _detected_nic(plan: Plan, host: str, facts: HostFacts) -> str | None:
    """The interface holding the node's address (what `up` exports when `nic` is unset)."""
    nodes = plan.nodes_on(host)
    if not nodes or nodes[0].nic or not facts.ok:
        return None
    return holding_interface(facts, nodes[0].address)[0]


def _run_instance(cluster: Cluster, test: pure.InstanceTest) -> pure.Outcome:
    outcome = pure.Outcome()
    leader, others = test.parts[0], test.parts[1:]
    port: list[int] = []
    ready = threading.Event()

    def on_leader_line(line: str) -> None:
        if line.startswith(worker.PORT) and line[len(worker.PORT) :].strip().isdigit():
            port.append(int(line[len(worker.PORT) :]))
            ready.set()

    leader_result: dict[str, Any] = {}

    def run_leader() -> None:
        try:
            leader_result["out"] = _launch(cluster, test, leader, None, on_leader_line)
        except Exception as exc:  # kept: reported as this host's failure
            leader_result["out"] = exc
        finally:
            ready.set()

    thread = threading.Thread(target=run_leader, daemon=True)
    thread.start()
    ready.wait(PORT_WAIT_S)
    if port:
        outs = parallel(others, lambda p: _launch(cluster, test, p, port[0], None))
    else:
        why = f"the leader {leader.host} did not start the rendezvous"
        outs = [RuntimeError(why) for _ in others]
    thread.join(test.deadline_s + PORT_WAIT_S)
    results = [leader_result.get("out", RuntimeError("no answer")), *outs]
    for part, result in zip(test.parts, results, strict=True):
        if isinstance(result, Exception):
            outcome.host_errors[part.host] = f"{part.host}: {result}"
        else:
            for rank in result:
                outcome.ranks[int(rank["rank"])] = rank
    return outcome


def _launch(
    cluster: Cluster,
    test: pure.InstanceTest,
    part: pure.HostPart,
    port: int | None,
    on_line: Any,
) -> list[dict[str, Any]]:
    # The planned interpreter, as the engine will run (the probe may have fallen back to
    # python3, which the `python` row reports).
    command = launch_command(part, part.node.python, part.node.workdir, test.spec(part, port))
    # As `up` starts the engine (become): the same user opens the devices.
    rc, out, err = cluster.sessions[part.host].run_script(command, WORKER_SOURCE, on_line)
    for line in out.splitlines():
        if line.startswith(worker.RESULT):
            return json.loads(line[len(worker.RESULT) :])
    said = [line for line in f"{err}\n{out}".splitlines() if line.strip() and line[:2] != "@@"]
    tail = " / ".join(said[-3:]) or f"exit status {rc}"
    raise RuntimeError(f"the collective launcher failed ({tail})")


def launch_command(part: pure.HostPart, python: str, workdir: str, spec: dict[str, Any]) -> str:
    """Upload the worker from stdin, then run it in the node's planned environment.

    Example (one line): `mkdir -p W/.toolkit-collective && cat > W/.toolkit-collective/
    worker-prefill0.0.py && unset X; if [ -f F ]; then . F >&2; fi; export K=V; python -u
    … launch '{…}'; rc=$?; rm -f …; exit $rc`.
    """
    q = shell.quote
    folder = f"{workdir.rstrip('/')}/.toolkit-collective"
    script = f"{folder}/worker-{part.node.name}.py"
    steps = [f"mkdir -p {q(folder)} && cat > {q(script)} || exit 1"]
    env_steps = []
    if part.node.unset_env:
        env_steps.append("unset " + " ".join(q(n) for n in part.node.unset_env))
    for path in part.node.source:
        # A missing file is the `env` row's finding; the collective still runs without it.
        env_steps.append(f"if [ -f {q(path)} ]; then . {q(path)} >&2; fi")
    env_steps += [
        f"export {name}={q(value)}" for name, value in part.env.items() if _NAME.match(name)
    ]
    run = f"{shell.join([python, '-u', script, 'launch', json.dumps(spec)])}; rc=$?"
    return "; ".join([*steps, *env_steps, run, f"rm -f {q(script)}", "exit $rc"])
