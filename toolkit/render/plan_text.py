"""`toolkit plan --format text`: a readable view of a Plan, one panel per node."""

from __future__ import annotations

from rich.console import Console, Group
from rich.panel import Panel
from rich.table import Table
from rich.text import Text

from toolkit import shell
from toolkit.plan import NodePlan, Plan, ProcessPlan
from toolkit.secrets import mask_argv, mask_env


def argv_text(argv: list[str]) -> Text:
    """One flag (with its values) per line, like the recipes print them; secret flag values
    (`--api-key`) masked."""
    lines: list[str] = []
    current: list[str] = []
    for token in mask_argv(argv):
        if token.startswith("--") and current:
            lines.append(shell.join(current))
            current = []
        current.append(token)
    if current:
        lines.append(shell.join(current))
    return Text(" \\\n  ".join(lines), style="cyan")


def _node_panel(node: NodePlan) -> Panel:
    facts = Table.grid(padding=(0, 2))
    facts.add_column(style="bold")
    facts.add_column()
    ports = ", ".join(f"{k} {v}" for k, v in node.listen.items())
    facts.add_row("host", f"{node.host} ({node.address})  listens on {node.bind}: {ports}")
    facts.add_row("leader", node.leader + ("  (this node)" if node.is_leader else ""))
    if node.nic:
        facts.add_row("nic", node.nic)
    elif node.nic_env:
        facts.add_row("nic", f"detected at up (for {', '.join(node.nic_env)})")
    tuning = []
    if node.tuning.cpu_governor:
        tuning.append(f"governor={node.tuning.cpu_governor}")
    tuning += [f"{k}={v}" for k, v in node.tuning.sysctl.items()]
    if tuning:
        facts.add_row("tuning", " ".join(tuning))
    if node.unset_env:
        facts.add_row("unset", " ".join(node.unset_env))
    for path in node.source:
        facts.add_row("source", path)
    env = mask_env(node.env)
    if env:
        facts.add_row("env", "\n".join(f"{k}={v}" for k, v in env.items()))
    if node.container is not None:
        box = node.container
        facts.add_row("container", f"{box.runtime} {box.image} (pull {box.pull}), --network host")
        if box.options or box.devices:
            facts.add_row("options", " ".join([*box.options, *box.devices]))
    title = (
        f"[bold]{node.name}[/]  {node.role} instance {node.instance} · rank "
        f"{node.node_rank}/{node.nnodes}"
    )
    return Panel(Group(facts, Text(), argv_text(node.argv)), title=title, title_align="left")


def _process_panel(kind: str, proc: ProcessPlan) -> Panel:
    where = f"on {proc.host} ({proc.address})"
    if proc.listen:
        where += "  listens: " + ", ".join(f"{k} {v}" for k, v in proc.listen.items())
    return Panel(
        Group(Text(where), Text(), argv_text(proc.argv)),
        title=f"[bold]{kind}[/]",
        title_align="left",
    )


def render_plan(plan: Plan, console: Console) -> None:
    meta = plan.meta
    head = (
        f"[bold]{plan.profile}[/] — {meta['title']}\n{meta['model']} on {meta['hardware']}, "
        f"{meta['cards']} cards, {plan.mode}, {plan.engine}/{plan.platform}, dataset "
        f"{meta['dataset']}"
        + (f", target TPOT {meta['target_tpot_ms']} ms" if meta.get("target_tpot_ms") else "")
        + f"\ninventory {plan.inventory} · model {plan.model_path}\nendpoint "
        f"{plan.endpoint.local_address}:{plan.endpoint.port} on {plan.endpoint.host}"
    )
    console.print(Panel(head, border_style="blue"))
    for node in plan.nodes:
        console.print(_node_panel(node))
    if plan.router is not None:
        console.print(_process_panel("router", plan.router))
    console.print(_process_panel("bench", plan.bench))
    for note in plan.notes:
        console.print(f"[yellow]note:[/] {note}")
