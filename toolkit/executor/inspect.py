"""`toolkit status` and `toolkit logs`: look at a run without changing it."""

from __future__ import annotations

import threading
import time
from typing import Any

from rich.console import Console
from rich.table import Table
from rich.text import Text

from toolkit import shell
from toolkit.errors import ToolkitError
from toolkit.executor import containers, state
from toolkit.executor.cancel import Interrupted, signals
from toolkit.executor.cluster import Cluster, HostWork, host_work
from toolkit.executor.session import Session, Unreachable
from toolkit.host.protocol import Op
from toolkit.render.run import Recap
from toolkit.secrets import mask_text


def _processes(work: HostWork, record: state.RunRecord) -> list[dict[str, Any]]:
    plan = record.plan_obj
    items = []
    for node in work.nodes:
        files = state.node_files(work.workdir, record.run_id, node)
        local = "127.0.0.1" if node.bind in ("0.0.0.0", "::") else node.bind
        items.append(
            {
                "name": node.name,
                "role": node.role,
                "port": node.port,
                "pidfile": files["pidfile"],
                "log": files["log"],
                "url": f"http://{local}:{node.port}/health",
            }
        )
    if work.router and plan.router is not None:
        files = state.process_files(work.workdir, record.run_id, "router")
        port = plan.router.listen["http"]
        items.append(
            {
                "name": "router",
                "role": "router",
                "port": port,
                "pidfile": files["pidfile"],
                "log": files["log"],
                "url": f"http://127.0.0.1:{port}/readiness",
            }
        )
    return items


def status(record: state.RunRecord, console: Console, accept_new: bool) -> bool:
    plan = record.plan_obj
    hosts = host_work(plan)
    recap = Recap(console)
    cluster = Cluster(hosts, console, accept_new)
    table = Table(title=f"run {record.run_id} · {plan.profile}", title_justify="left")
    for column in ("process", "host", "role", "pid", "alive", "http", "port", "uptime", "log"):
        table.add_column(column)
    healthy = True
    try:
        cluster.connect(recap)
        wanted = {n: _processes(w, record) for n, w in hosts.items()}
        done = cluster.each(
            [n for n in cluster.sessions if wanted[n]],
            lambda s, w: s.agent([Op("status", {"processes": wanted[w.name]})]),
            recap,
            quiet_ok=True,
        )
        boxes = containers.ps_all(cluster, record.run_id)
    finally:
        cluster.close()
    for host, results in done.items():
        roles = {p["name"]: (p["role"], p["port"]) for p in wanted[host]}
        for row in results[0].data["processes"]:
            role, port = roles[row["name"]]
            ok = row["alive"] and row["http"] == 200
            healthy &= ok
            uptime = f"{row['uptime']:.0f} s" if row["uptime"] is not None else "—"
            table.add_row(
                row["name"],
                host,
                role,
                str(row["pid"] or "—"),
                "[green]yes[/]" if row["alive"] else "[red]no[/]",
                f"[{'green' if row['http'] == 200 else 'red'}]{row['http'] or '—'}[/]",
                str(port),
                uptime,
                row["log"],
            )
    for failure in recap.failures():
        healthy = False
        table.add_row("—", failure.host, "—", "—", "[red]?[/]", "—", "—", "—", failure.msg)
    console.print(table)
    if boxes:
        healthy &= _container_table(console, boxes)
    if record.stopped:
        console.print(f"[yellow]run {record.run_id} was stopped by `toolkit down`[/]")
    return healthy


def _container_table(console: Console, boxes: dict[str, list[list[str]]]) -> bool:
    """What the runtime says of each container of the run; True when all are running."""
    table = Table(title="containers (runtime ps)", title_justify="left")
    for column in ("container", "host", "state", "status"):
        table.add_column(column)
    running = True
    for host, rows in boxes.items():
        for row in rows:
            name, detail = [*row, "", ""][:2]
            state_ = "running" if detail.startswith("Up") else "not running"
            running &= state_ == "running"
            colour = "green" if state_ == "running" else "red"
            table.add_row(name, host, f"[{colour}]{state_}[/]", detail)
    console.print(table)
    return running


def _boxes(record: state.RunRecord, target: str | None) -> dict[str, list[tuple[str, Any]]]:
    """host → (node name, container) of the container nodes `target` selects."""
    chosen: dict[str, list[tuple[str, Any]]] = {}
    for host, work in host_work(record.plan_obj).items():
        for node in work.nodes:
            if node.container is not None and target in (None, host, node.role, node.name):
                chosen.setdefault(host, []).append((node.name, node.container))
    return chosen


def _select(
    record: state.RunRecord, target: str | None, allow_empty: bool = False
) -> dict[str, list[str]]:
    """host → log paths, for a host name, a role, a process name, or everything."""
    chosen: dict[str, list[str]] = {}
    for host, work in host_work(record.plan_obj).items():
        boxed = {n.name for n in work.nodes if n.container is not None}
        for proc in _processes(work, record):
            if target in (None, host, proc["role"], proc["name"]) and proc["name"] not in boxed:
                chosen.setdefault(host, []).append(proc["log"])
    if not chosen and not allow_empty:
        raise ToolkitError(
            f"no process of run {record.run_id} matches {target!r}: give a host, a role "
            "(prefill, decode, mixed, router) or a process name such as prefill0.1"
        )
    return chosen


def logs(
    record: state.RunRecord,
    target: str | None,
    lines: int,
    follow: bool,
    console: Console,
    accept_new: bool,
) -> None:
    boxes = _boxes(record, target)  # container nodes: read the runtime's logs
    chosen = _select(record, target, allow_empty=bool(boxes))
    hosts = {h: w for h, w in host_work(record.plan_obj).items() if h in chosen or h in boxes}
    recap = Recap(console)
    cluster = Cluster(hosts, console, accept_new)
    try:
        cluster.connect(recap)
        if not follow:
            _container_logs(cluster, boxes, record.run_id, lines, console)
            done = cluster.each(
                [n for n in cluster.sessions if n in chosen],
                lambda s, w: s.agent([Op("tail", {"paths": chosen[w.name], "lines": lines})]),
                recap,
                quiet_ok=True,
            )
            for host, results in done.items():
                for path, text in results[0].data["lines"].items():
                    console.rule(f"{host}: {path}")
                    for line in text:
                        console.print(
                            Text.from_ansi(mask_text(line)), highlight=False, soft_wrap=True
                        )
            return
        _follow(cluster, chosen, lines, console, boxes, record.run_id)
    finally:
        cluster.close()


def _container_logs(
    cluster: Cluster,
    boxes: dict[str, list[tuple[str, Any]]],
    run_id: str,
    lines: int,
    console: Console,
) -> None:
    for host, items in boxes.items():
        session = cluster.sessions.get(host)
        if session is None:
            continue
        for name, box in items:
            _, out, _ = session.run_script(
                containers.logs_command(box, run_id, lines, follow=False)
            )
            console.rule(f"{host}: {name} ({box.runtime} logs)")
            for line in out.splitlines():
                console.print(Text.from_ansi(line), highlight=False, soft_wrap=True)


def _follow(
    cluster: Cluster,
    chosen: dict[str, list[str]],
    lines: int,
    console: Console,
    boxes: dict[str, list[tuple[str, Any]]],
    run_id: str,
) -> None:
    lock = threading.Lock()
    ending = threading.Event()  # the streams end because we close them: nothing to report

    def stream_box(session: Session, name: str, box: Any) -> None:
        def show(line: str) -> None:
            with lock:
                prefix = Text(f"[{session.name} {name}] ")
                console.print(prefix + Text.from_ansi(line), highlight=False, soft_wrap=True)

        command = containers.logs_command(box, run_id, lines, follow=True)
        try:
            session.run_script(command, on_line=show)
        except Unreachable as exc:
            if not ending.is_set():
                show(f"{exc}")

    def stream(session: Session) -> None:
        paths = " ".join(shell.quote(p) for p in chosen[session.name])
        prefix = f"[{session.name}] "

        def show(line: str) -> None:
            with lock:
                console.print(
                    Text(prefix) + Text.from_ansi(mask_text(line)), highlight=False, soft_wrap=True
                )

        # Closing the connection does not signal a command without a terminal. Recent GNU tail
        # notices its closed stdout; older ones (coreutils < 8.28) would follow a quiet log
        # forever, so --pid also ends it with its sshd parent.
        try:
            session.run(f"exec tail -n {int(lines)} -F --pid=$PPID {paths} 2>&1", on_line=show)
        except Unreachable as exc:  # keepalives end the stream of a host that went away
            if not ending.is_set():
                with lock:
                    console.print(f"[red]{prefix}{exc}[/]", highlight=False)

    threads = [
        threading.Thread(target=stream, args=(s,), daemon=True)
        for s in cluster.sessions.values()
        if s.name in chosen
    ]
    threads += [
        threading.Thread(target=stream_box, args=(cluster.sessions[h], name, box), daemon=True)
        for h, items in boxes.items()
        if h in cluster.sessions
        for name, box in items
    ]
    for thread in threads:
        thread.start()
    # Ctrl-C or SIGTERM ends the follow; closing the connections (the caller) ends each tail.
    with signals(console):
        try:
            while any(t.is_alive() for t in threads):
                time.sleep(0.5)
        except Interrupted:
            console.print("[yellow]stopped following; closing the connections[/]")
        finally:
            ending.set()
