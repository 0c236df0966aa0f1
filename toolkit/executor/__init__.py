"""The executor: carries a Plan out on the hosts (the only place that talks SSH)."""
