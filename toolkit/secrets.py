"""Which values are secrets, and how they are shown.

Secret env values reach a host only inside its owner-only launch script; everywhere
toolkit prints or stores them they are masked. A name is secret when one of its
underscore-separated words ends in TOKEN, SECRET, PASSWORD, PASSWD or KEY (HF_TOKEN,
OPENAI_API_KEY, AWS_SECRET_ACCESS_KEY). Plural counts such as
SGLANG_DEEPEP_NUM_MAX_DISPATCH_TOKENS_PER_RANK are tuning values, not credentials.
"""

from __future__ import annotations

import re

_SECRET = re.compile(r"(?:^|_)[A-Z0-9]*(?:TOKEN|SECRET|PASSWORD|PASSWD|KEY)(?:_|$)", re.I)
MASK = "********"


def is_secret(name: str) -> bool:
    return bool(_SECRET.search(name))


def mask_env(env: dict[str, str]) -> dict[str, str]:
    return {k: (MASK if is_secret(k) and v else v) for k, v in env.items()}


def mask_text(text: str, env: dict[str, str]) -> str:
    """Replace every secret value that occurs in free text (log lines, commands)."""
    for name, value in env.items():
        if is_secret(name) and value and len(value) >= 4:
            text = text.replace(value, MASK)
    return text
