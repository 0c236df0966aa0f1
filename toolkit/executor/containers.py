"""The executor's container work: preflight and pulls, stop-and-remove, status, logs.

Each is one shell command per host over the open session (rendered by `toolkit.runtime`),
run beside the agent rather than through it: the runtime's own CLI does the work, and its
exit code and output are the result.
"""

from __future__ import annotations

from dataclasses import replace

from rich.console import Console

from toolkit import shell
from toolkit.executor import state
from toolkit.executor.cluster import Cluster, HostWork
from toolkit.executor.session import Session, parallel
from toolkit.host.protocol import Result
from toolkit.plan import ContainerPlan, NodePlan, Plan
from toolkit.preflight.check_facts import Finding
from toolkit.render.run import Recap
from toolkit.render.scripts import ScriptOptions
from toolkit.runtime import container as rt
from toolkit.runtime import preflight as probe


def containers_of(work: HostWork) -> list[ContainerPlan]:
    return [n.container for n in work.nodes if n.container is not None]


def env_file(workdir: str, run_id: str, node: str) -> str:
    """The owner-only env file a container node's launch script writes (secrets inside)."""
    return f"{state.run_dir(workdir, run_id)}/{node}.env"


def env_files(work: HostWork, run_id: str) -> list[str]:
    return [env_file(work.workdir, run_id, n.name) for n in work.nodes if n.container]


def script_options(
    options: ScriptOptions, node: NodePlan, argv: list[str] | None, env_file: str
) -> ScriptOptions:
    """A container node's launch script: its env file in the run dir; a rehearsal (`argv`
    given) runs the engine from the workdir mount with the image's python, sourcing what
    the image has of the profile's `source`."""
    command = None
    if argv is not None and node.container is not None:
        inner = [node.container.python, *argv[1:]]
        entrypoint, words = rt.command_words(inner, node.source, optional=True)
        command = (entrypoint, tuple(words))
    return replace(options, env_file=env_file, container_command=command)


def probe_host(
    session: Session,
    work: HostWork,
    plan: Plan,
    run_id: str,
    rehearse: bool,
    check: bool,
    console: Console,
) -> list[Result]:
    """Runtime present, image present or pulled, GPU/NPU access, leftovers of older runs,
    on one host. `check`: nothing is pulled; an image that would be is reported as such."""
    found: list[Result] = []
    by_runtime: dict[str, list[ContainerPlan]] = {}
    for item in containers_of(work):
        by_runtime.setdefault(item.runtime, []).append(item)
    for runtime, items in by_runtime.items():
        words = [w for c in items for w in (*c.options, *c.devices)]
        script = probe.probe_script(
            runtime,
            list(dict.fromkeys(c.image for c in items)),
            "never" if check else items[0].pull,
            work.tag,
            run_id,
            gpus="--gpus" in words and not rehearse,
            ascend=plan.platform == "ascend" and not rehearse,
        )

        def progress(line: str, host: str = work.name) -> None:
            if line.startswith("progress\t"):
                console.print(f"  [{host}] {line[9:]}", highlight=False, markup=False)

        rc, out, err = session.run_script(script, on_line=progress)
        if rc != 0:
            found.append(_raw(f"{runtime} preflight", "failed", err.strip()[-300:]))
            continue
        for status, detail, fix in probe.findings(runtime, items[0].pull, out, check):
            msg = f"{detail}; fix: {fix}" if fix else detail
            found.append(_raw(f"{runtime}", status, msg))
    return found


def preflight(
    cluster: Cluster, plan: Plan, run_id: str, rehearse: bool, recap: Recap, check: bool = False
) -> None:
    """`probe_host` on every host with containers at once; each finding to the recap."""
    names = [n for n in cluster.sessions if containers_of(cluster.hosts[n])]
    cluster.each(
        names,
        lambda s, w: probe_host(s, w, plan, run_id, rehearse, check, cluster.console),
        recap,
    )


def check_findings(cluster: Cluster, plan: Plan, rehearse: bool) -> list[Finding]:
    """`toolkit check`'s container row: the preflight without pulling, one cell per host
    (leftover containers are not judged: check knows no run)."""
    recap = Recap(Console(quiet=True))
    preflight(cluster, plan, "", rehearse, recap, check=True)
    out = []
    for host in cluster.sessions:
        mine = [r for r in recap.results if r.host == host]
        if not mine:
            continue
        bad = [r for r in mine if r.status in ("failed", "unreachable")]
        pulls = [r.msg for r in mine if r.msg.startswith("would pull")]
        summary = bad[0].msg.split(";")[0] if bad else (pulls[0] if pulls else mine[0].msg)
        out.append(
            Finding(
                host,
                "container",
                "failed" if bad else "ok",
                summary[:40],
                "; ".join(r.msg for r in mine),
                "; ".join(r.msg.split("fix: ", 1)[1] for r in bad if "fix: " in r.msg),
            )
        )
    return out


def stop_results(session: Session, work: HostWork, run_id: str, grace: float) -> list[Result]:
    """Stop (grace) and remove the run's containers on this host, verified by label."""
    out: list[Result] = []
    for runtime in dict.fromkeys(c.runtime for c in containers_of(work)):
        rc, text, err = session.run_script(rt.stop_script(runtime, run_id, work.tag, grace))
        said = (text.strip().splitlines() or [""])[-1]
        if rc != 0:
            out.append(_raw(f"{runtime} containers", "failed", said or err.strip()[-300:]))
        else:
            status = "changed" if said.startswith("stopped") else "ok"
            out.append(_raw(f"{runtime} containers", status, said))
    return out


def ps(session: Session, work: HostWork, run_id: str) -> list[list[str]]:
    """[name, status] of each container of the run on this host."""
    rows: list[list[str]] = []
    for runtime in dict.fromkeys(c.runtime for c in containers_of(work)):
        argv = rt.ps_argv(runtime, run_id, work.tag)
        rc, out, err = session.run_script(shell.join(argv))
        if rc != 0:
            rows.append([f"({runtime} ps failed)", err.strip()[-200:]])
            continue
        rows += [line.split("\t") for line in out.splitlines() if line.strip()]
    return rows


def ps_all(cluster: Cluster, run_id: str) -> dict[str, list[list[str]]]:
    """Host → its rows of `ps`, for the hosts that run containers."""
    names = [n for n in cluster.sessions if containers_of(cluster.hosts[n])]
    rows = parallel(names, lambda n: ps(cluster.sessions[n], cluster.hosts[n], run_id))
    return {n: r for n, r in zip(names, rows, strict=True) if isinstance(r, list)}


def logs_command(container: ContainerPlan, run_id: str, lines: int, follow: bool) -> str:
    argv = rt.logs_argv(container.runtime, rt.container_name(container, run_id), lines, follow)
    return shell.join(argv) + " 2>&1"


def _raw(task: str, status: str, msg: str) -> Result:
    return Result(task, status, msg)
