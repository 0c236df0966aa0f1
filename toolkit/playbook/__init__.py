"""Playbooks, roles and tasks in Ansible's shape, and the engine that runs them.

`load.py` reads and validates the YAML (plays → roles → tasks, each task one module and its
arguments); `engine.py` runs a play on its host group, every host in parallel, a play's
tasks for one host travelling as one request to that host's agent. The modules' control-side
halves live in `toolkit/tasks/`, their host-side halves in `toolkit/host/`.
"""
