"""Every default port toolkit knows about, named once.

Profiles set the ports a recipe uses; these are the engines' own defaults, used when a
profile leaves a port out, and the extra listeners preflight must find free.
"""

SGLANG_HTTP = 30000
VLLM_HTTP = 8000
SGLANG_BOOTSTRAP = 8998
ROUTER_HTTP = 30000
ROUTER_PROMETHEUS = 29000
# HCCL's host-NIC ports on Ascend: 16 ports from HCCL_IF_BASE_PORT (default 60000).
HCCL_BASE = 60000
HCCL_COUNT = 16
# sglang's router waits this long per upstream request by default (streaming included).
ROUTER_REQUEST_TIMEOUT_S = 1800
