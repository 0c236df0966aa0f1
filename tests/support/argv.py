"""Argv comparison helpers: flags as an order-insensitive multiset of (flag, values)."""

from __future__ import annotations

from collections import Counter


def flag_items(argv: list[str]) -> Counter[tuple[str, tuple[str, ...]]]:
    """`--a 1 --b --c x y` → {("--a", ("1",)), ("--b", ()), ("--c", ("x", "y"))}.

    Tokens before the first flag (interpreter, -m, module, positionals) are ignored.
    """
    items: Counter[tuple[str, tuple[str, ...]]] = Counter()
    flag: str | None = None
    values: list[str] = []
    for token in argv:
        if token.startswith("--"):
            if flag is not None:
                items[(flag, tuple(values))] += 1
            flag, values = token, []
        elif flag is not None:
            values.append(token)
    if flag is not None:
        items[(flag, tuple(values))] += 1
    return items


def flag_map(argv: list[str]) -> dict[str, tuple[str, ...]]:
    """Like flag_items but one entry per flag (asserts no flag repeats)."""
    items = flag_items(argv)
    flags = [flag for flag, _ in items]
    assert len(flags) == len(set(flags)), f"a flag repeats: {sorted(items)}"
    return dict(items.keys())
