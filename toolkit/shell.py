"""The one path by which a value becomes shell text.

Every value toolkit puts into a command line or a generated script passes through here:
`quote` for one word, `join` for an argv, `comment` for text after `#`, and `env_name` for
the left side of `export NAME=...`, which cannot be quoted and so is validated instead.
A value can therefore never end a word, a line or a comment early and run as a command.
"""

from __future__ import annotations

import re
import shlex
from collections.abc import Iterable

from toolkit.names import check_env_name

# C0 controls, DEL and the Unicode line separators: anything a terminal or a shell could take
# as the end of a line.
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")


class FromEnv(str):
    """An argv word whose secret part is read from an environment variable when the script
    runs: `FromEnv("--api-key=", "X")` is written `'--api-key='"${X}"`. Scripts a user
    keeps (`toolkit plan --format sh`) carry the variable's name, never the secret."""

    def __new__(cls, prefix: str, name: str) -> FromEnv:
        word = super().__new__(cls, prefix + "${" + check_env_name(name) + "}")
        word.prefix, word.name = prefix, name
        return word

    prefix: str
    name: str


def quote(value: object) -> str:
    """One shell word, whatever the value holds."""
    if isinstance(value, FromEnv):
        return (shlex.quote(value.prefix) if value.prefix else "") + f'"${{{value.name}}}"'
    return shlex.quote(str(value))


def join(argv: Iterable[object]) -> str:
    """An argv as one command line, each element one word."""
    return " ".join(quote(a) for a in argv)


def comment(value: object) -> str:
    """Text safe after `#`: control characters (a newline above all) become `\\xNN` escapes,
    so the comment ends where the template ends it."""
    return _CONTROL.sub(lambda m: f"\\x{ord(m.group()):02x}", str(value))


def env_name(name: object) -> str:
    """An environment variable name for `export NAME=...`; raises ValueError otherwise."""
    return check_env_name(str(name))
