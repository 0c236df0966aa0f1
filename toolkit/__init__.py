"""toolkit: stand up, benchmark and tear down LLM serving clusters on bare metal.

The library is layered as data in, data out: an Inventory and a Profile go into the pure
planner (`toolkit.planner`), which returns a Plan; the executor carries a Plan out over SSH.
The CLI (`toolkit.cli`) is a thin layer over these.
"""

__version__ = "0.1.0"
