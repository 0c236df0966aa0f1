#!/usr/bin/env bash
# The main job on the built-in default, on this machine alone (no cluster, no weights):
# install toolkit, then rehearse the a3-1p1d-64k profile (2-node prefill + 2-node decode
# behind the real sglang-router) on inventory/local.yaml, benchmark it with the real
# sglang.bench_serving, and tear it down.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
export PATH="$PWD/.venv/bin:$PATH"
profile=${1:-a3-1p1d-64k}
toolkit up --profile "$profile" -i inventory/local.yaml --rehearse
status=0
toolkit bench || status=$?
toolkit down
exit "$status"
