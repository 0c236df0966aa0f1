"""Where the installed sglang's source is, for tests that read its flags (no import)."""

from __future__ import annotations

import importlib.util
from pathlib import Path

_SPEC = importlib.util.find_spec("sglang")
SGLANG_DIR = Path(_SPEC.origin).parent if _SPEC and _SPEC.origin else None
