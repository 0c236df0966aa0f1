"""What a name may look like, checked where it enters (inventory, profile, --set, --run).

Names end up in shell scripts, file paths, SSH command lines and terminal output. Values are
always quoted (`toolkit.shell`), but some positions cannot be quoted (the name in
`export NAME=...`), some are read by other programs (an SSH host starting with `-` is an
option) and some are path components (a run id of `../..`). So each kind of name has one
pattern, and the error says which characters are allowed. Each check returns the name or
raises ValueError with a message the caller prefixes with the file and key.
"""

from __future__ import annotations

import re

ENV_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
# Host names, IPv4 and IPv6 addresses (with a %zone), never starting with "-" (an SSH option).
HOST = re.compile(r"[A-Za-z0-9_:\[][A-Za-z0-9_.:%\[\]-]*")
USER = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*\$?")
GROUP = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")
RUN_ID = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.+-]*")
PROFILE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.+-]*")
NIC = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.:@-]*")
SYSCTL = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]*")
_CONTROL = re.compile(r"[\x00-\x1f\x7f\x85\u2028\u2029]")
MAX_LEN = 253


def _check(value: str, pattern: re.Pattern[str], what: str, allowed: str) -> str:
    if not isinstance(value, str) or not value:
        raise ValueError(f"{what} must be a non-empty string")
    if len(value) > MAX_LEN:
        raise ValueError(f"{what} {value[:40]!r}… is longer than {MAX_LEN} characters")
    if not pattern.fullmatch(value):
        raise ValueError(f"{what} {value!r} is not valid: use {allowed}")
    return value


def check_env_name(name: str) -> str:
    return _check(
        name,
        ENV_NAME,
        "environment variable name",
        "letters, digits and _, not starting with a digit",
    )


def check_host(name: str, what: str = "host name") -> str:
    return _check(
        name, HOST, what, "letters, digits and . _ - : % [ ] (a DNS name or an IP address)"
    )


def check_user(name: str) -> str:
    return _check(name, USER, "user name", "letters, digits and . _ -")


def check_group(name: str) -> str:
    return _check(name, GROUP, "group name", "letters, digits and . _ -")


def check_role(name: str, what: str = "role name") -> str:
    """Role names and play ids: folder names, and words in a profile's `plays:`."""
    return _check(name, GROUP, what, "letters, digits and . _ -")


def check_run_id(run_id: str) -> str:
    return _check(run_id, RUN_ID, "run id", "letters, digits and . _ + - (as `toolkit up` prints)")


def check_profile_name(name: str) -> str:
    return _check(name, PROFILE, "profile name", "letters, digits and . _ + - in the file name")


def check_nic(name: str) -> str:
    return _check(name, NIC, "network interface name", "letters, digits and . _ : @ -")


def check_sysctl(name: str) -> str:
    return _check(name, SYSCTL, "sysctl name", "letters, digits and . _ / -")


def check_text(value: str, what: str) -> str:
    """Free text (paths, commands): anything but control characters, which could end a line."""
    match = _CONTROL.search(value)
    if match:
        raise ValueError(
            f"{what} {value[:60]!r} contains the control character {match.group()!r}; remove it"
        )
    return value
