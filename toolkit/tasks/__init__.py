"""The control-side halves of the modules a role's tasks name, registered by name."""

from toolkit.tasks import bench, generic, router, serving, teardown  # noqa: F401 (registers them)
from toolkit.tasks.base import MODULES

__all__ = ["MODULES"]
