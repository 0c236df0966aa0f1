"""`command` and `shell`: run a program on the host, guarded by `creates:` / `removes:`.
(Filled in by the generic-modules work.)"""
