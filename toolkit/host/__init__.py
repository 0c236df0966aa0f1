"""Everything that runs on a host: the agent, its modules and the facts they read.

Standard library only and Python 3.8 compatible: hosts have no toolkit installed. The
control machine ships this package's sources to each host in one bundle (`bundle.py`) over
the agent's SSH channel; nothing here imports from the rest of toolkit.
"""
