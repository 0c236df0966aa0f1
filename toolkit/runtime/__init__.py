"""How a serving node starts, stops and shows its logs: on the bare host, or in a container.

`container.py` turns a profile's `container` section into the planned `ContainerPlan`, and a
`ContainerPlan` into docker/podman command lines (run, stop/remove by label, ps, logs, the
preflight probe). Everything here is pure: the executor sends the rendered commands to the
hosts' agents, and the unit tests compare them with the expected argv.
"""
