"""Everything that runs on a host: the agent, its modules and the facts they read.

Standard library only and Python 3.8 compatible: hosts have no toolkit installed. The
control machine ships this package's sources to each host in one bundle (`bundle.py`) over
the agent's SSH channel; nothing here imports from the rest of toolkit.

Two programs here are not in the bundle: they run as files of their own, written to the
host by the agent (`write_files`) because another interpreter must run them:
`collective_worker.py` (the collective check's launcher and workers, under torch) and
`bench_helper.py` (the bench host's facts, corpus and stop, with the bench client's Python
in isolated mode).
"""
