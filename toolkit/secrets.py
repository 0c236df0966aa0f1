"""Which values are secrets, and how they are shown.

Secret env values reach a host only inside its owner-only launch script; everywhere
toolkit prints or stores them they are masked. A name is secret when one of its
underscore-separated words ends in TOKEN, SECRET, PASSWORD, PASSWD, KEY or KEYS (HF_TOKEN,
OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY). Plural counts such as
SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK are tuning values, not credentials. Engine
flags follow the same rule with dashes (--api-key, --hf-token, --ssl-keyfile-password).

A secret flag whose engine also reads it from an environment variable is planned as that
variable (`SECRET_FLAG_ENV`), so it never appears in the host's process list. Engines read:
- vLLM: VLLM_API_KEY when --api-key is not given (vllm/envs.py, entrypoints/openai
  api_server); HF_TOKEN through huggingface_hub, which --hf-token otherwise overrides.
- sglang (0.5.x) and its router: --api-key only from argv; those stay flags, masked
  wherever toolkit shows a command.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from typing import Any

_SECRET = re.compile(r"(?:^|_)[A-Z0-9]*(?:TOKEN|SECRET|PASSWORD|PASSWD|KEYS?)(?:_|$)", re.I)
MASK = "********"
# engine → flag name (without dashes) → the environment variable the engine reads instead.
SECRET_FLAG_ENV: dict[str, dict[str, str]] = {
    "vllm": {"api-key": "VLLM_API_KEY", "hf-token": "HF_TOKEN"},
    "sglang": {},
}


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def is_secret_flag(flag: str) -> bool:
    """`--api-key`, `--hf-token=...`, `api_key`: a flag whose value is a credential."""
    name = flag.lstrip("-").partition("=")[0]
    return bool(name) and is_secret(name.replace("-", "_"))


def mask_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret(k) and v else v) for k, v in env.items()}


def secret_values(argv: Iterable[Any]) -> list[tuple[int, str, str]]:
    """(index, flag, prefix) of each argv word that holds a secret: the values after a
    secret flag up to the next flag (`--api-key X`), or the word itself (`--api-key=X`,
    prefix `--api-key=`)."""
    found: list[tuple[int, str, str]] = []
    hiding = ""
    for index, item in enumerate(argv):
        token = str(item)
        if token.startswith("-") and len(token) > 1 and not _is_number(token):
            hiding = ""
            name, eq, _ = token.partition("=")
            if name.startswith("--") and is_secret_flag(name):
                if eq:
                    found.append((index, name, name + "="))
                else:
                    hiding = name
        elif hiding:
            found.append((index, hiding, ""))
    return found


def mask_argv(argv: Iterable[Any]) -> list[str]:
    """The argv with the values of secret flags masked (`--api-key X`, `--api-key=X`)."""
    out = [str(a) for a in argv]
    for index, _, prefix in secret_values(out):
        out[index] = prefix + MASK
    return out


def _is_number(token: str) -> bool:
    try:
        float(token)
    except ValueError:
        return False
    return True


def secret_flags_to_env(engine: str, args: dict[str, Any]) -> tuple[dict[str, Any], dict[str, str]]:
    """Split profile flags into (flags for argv, env variables the engine reads instead)."""
    mapping = SECRET_FLAG_ENV.get(engine, {})
    kept: dict[str, Any] = {}
    env: dict[str, str] = {}
    for flag, value in args.items():
        name = mapping.get(flag.replace("_", "-"))
        if name is not None and isinstance(value, str) and value:
            env[name] = value
        else:
            kept[flag] = value
    return kept, env


# `api_key='v'`, `HF_TOKEN=v`, `"password": "v"`, `--api-key v` in free text (an engine logs
# its parsed arguments at start-up: sglang prints `ServerArgs(..., api_key='...')`).
_NAMED_SECRET = re.compile(
    r"(?<![A-Za-z0-9_.-])(?P<name>(?:--)?[A-Za-z0-9_.-]*"
    r"(?:token|secret|password|passwd|key|keys))"
    r"(?P<sep>['\"]?\s*[=:]\s*|(?<=[a-z])\s+(?=[^-\s]))(?P<quote>['\"]?)"
    r"(?P<value>[^'\"\s,)}\]]+)",
    re.I,
)
_NOT_SECRET_VALUES = {"none", "null", "true", "false", MASK.lower()}


def _mask_named(match: re.Match[str]) -> str:
    name, value = match.group("name"), match.group("value")
    flag_form = match.group("sep").isspace()
    if value.lower() in _NOT_SECRET_VALUES or (flag_form and not name.startswith("--")):
        return match.group(0)
    return match.group(0)[: match.start("value") - match.start()] + MASK


def mask_text(text: str, env: dict[str, str] | None = None) -> str:
    """Mask secrets in free text (log lines, commands): every secret env value that occurs,
    and any value written next to a secret-looking name."""
    for name, value in (env or {}).items():
        if is_secret(name) and value and len(value) >= 4:
            text = text.replace(value, MASK)
    return _NAMED_SECRET.sub(_mask_named, text)
