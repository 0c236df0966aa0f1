"""How `toolkit check` reports: a table of checks × hosts, then every ✘ with its fix.

Cells are ✔ (green), ✘ (red) or – (skipped, dim) with a few words; the full reasons
follow the table, one line per problem with the fix under it, then the skipped checks
grouped with why, then notes (warnings, flag translations), then one verdict line.
"""

from __future__ import annotations

from rich.console import Console
from rich.table import Table
from rich.text import Text

from toolkit.preflight.check_facts import CHECKS, CheckReport, Finding

SYMBOL = {"ok": "✔", "failed": "✘", "skipped": "–"}
STYLE = {"ok": "green", "failed": "bold red", "skipped": "dim"}
CELL_WIDTH = 24


def _cell(finding: Finding | None, width: int) -> Text:
    if finding is None:
        return Text("")
    text = f"{SYMBOL[finding.status]} {finding.summary}"
    if len(text) > width:
        text = text[: width - 1] + "…" if width > 4 else text[0]
    return Text(text, style=STYLE[finding.status])


def check_table(report: CheckReport, width: int = 80) -> Table:
    """Checks down, hosts across; cells shorten to fit `width` (the reasons follow)."""
    mode = " · rehearsal" if report.rehearse else ""
    title = f"toolkit check {report.profile}{mode} · {len(report.hosts)} hosts"
    table = Table(title=title, title_justify="left")
    # 6 for the check names, 3 per column for borders and padding.
    cell = max(1, min(CELL_WIDTH, (width - 10) // max(1, len(report.hosts)) - 3))
    table.add_column("check", style="bold", no_wrap=True)
    for host in report.hosts:
        table.add_column(host, no_wrap=True, overflow="ellipsis")
    present = {f.check for f in report.findings}
    for check in (c for c in CHECKS if c in present):
        table.add_row(check, *(_cell(report.cell(host, check), cell) for host in report.hosts))
    return table


def render_check(report: CheckReport, console: Console) -> None:
    console.print(check_table(report, console.width))
    for finding in report.failures:
        line = Text(f"✘ {finding.host} {finding.check}: ", style="bold red")
        line.append(finding.detail, style="default")
        console.print(line, soft_wrap=True)
        if finding.fix:
            console.print(Text(f"    fix: {finding.fix}", style="yellow"), soft_wrap=True)
    groups: dict[tuple[str, str], list[Finding]] = {}
    for finding in report.findings:
        if finding.status == "skipped":
            groups.setdefault((finding.check, finding.summary), []).append(finding)
    for (check, _), items in groups.items():
        hosts = ", ".join(f.host for f in items)
        text = Text(f"– {check} skipped on {hosts}: {items[0].detail}", style="dim")
        console.print(text, soft_wrap=True)
    notes = [(f.host, note) for f in report.findings for note in f.notes]
    for host, note in notes:
        console.print(Text(f"note {host}: {note}", style="cyan"), soft_wrap=True)
    console.print(_verdict(report))


def _verdict(report: CheckReport) -> Text:
    took = f"in {report.elapsed_s:.1f} s"
    if report.ok:
        skipped = sum(f.status == "skipped" for f in report.findings)
        extra = f" ({skipped} skipped)" if skipped else ""
        return Text(
            f"✔ every check passed on {len(report.hosts)} hosts{extra} {took}", style="bold green"
        )
    hosts = sorted({f.host for f in report.failures}, key=report.hosts.index)
    count = len(report.failures)
    return Text(
        f"✘ {count} problem{'s' * (count != 1)} on {', '.join(hosts)} {took}", style="bold red"
    )
