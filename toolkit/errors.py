"""Expected errors: each carries one message a user can act on (file, key, fix).

The CLI prints these without a traceback; anything else is a bug and keeps its traceback
for `--debug`.
"""

from __future__ import annotations


class ToolkitError(Exception):
    """An error the user can fix; the message names the file, the key and the fix."""


class YamlError(ToolkitError):
    """A YAML file could not be read or parsed."""


class InventoryError(ToolkitError):
    """The inventory is malformed or does not fit the profile."""


class ProfileError(ToolkitError):
    """A profile is unknown, malformed, or an override does not apply."""


class PlanError(ToolkitError):
    """Inventory and profile are each valid but cannot be combined into a plan."""
