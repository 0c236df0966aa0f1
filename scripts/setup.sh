#!/usr/bin/env bash
# Installs everything toolkit's tests and the local rehearsal need, on a fresh Debian machine:
# OpenSSH and iproute2 (test hosts are network namespaces running sshd), a virtualenv with
# toolkit itself, the real sglang-router and the real sglang.bench_serving (CPU torch).
# Idempotent: a second run only checks.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ "$(id -u)" = 0 ]; then
  missing=""
  command -v sshd >/dev/null 2>&1 || [ -x /usr/sbin/sshd ] || missing="$missing openssh-server"
  command -v ip >/dev/null 2>&1 || missing="$missing iproute2"
  command -v iptables >/dev/null 2>&1 || [ -x /usr/sbin/iptables ] || missing="$missing iptables"
  # sudo: integration tests log in as a non-root user and become root (create_sudo_user).
  command -v sudo >/dev/null 2>&1 || missing="$missing sudo"
  if [ -n "$missing" ]; then
    echo "setup: apt-get install$missing"
    apt-get update -qq
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
  fi
fi

PY=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PY" -m venv .venv
fi
stamp=.venv/.toolkit-setup
want=$(cat pyproject.toml requirements/*.txt 2>/dev/null | sha256sum | cut -d' ' -f1)
if [ ! -f "$stamp" ] || [ "$(cat "$stamp")" != "$want" ]; then
  .venv/bin/pip install -q --upgrade pip
  # torch first, pinned: 2.13.0 is the CPU build this machine kind keeps on disk; an
  # unpinned torch (asked for by another package) would pull a multi-GB CUDA build.
  .venv/bin/pip install -q torch==2.13.0
  .venv/bin/pip install -q -e '.[test]'
  if [ -f requirements/bench.txt ]; then
    .venv/bin/pip install -q -r requirements/bench.txt
  fi
  # sglang itself without its GPU dependency tree: only the bench client is used here.
  .venv/bin/pip install -q --no-deps sglang==0.5.23
  # bench_serving imports torchvision; PyPI's Linux wheels of current releases are CUDA
  # builds that replace the CPU torch, while 0.15.2 (no deps) imports beside torch 2.13 CPU.
  .venv/bin/pip install -q --no-deps torchvision==0.15.2
  echo "$want" > "$stamp"
fi

# The test hosts' Python (.venv-host): a venv that sees the packages of .venv (the router, the
# bench client, torch) but not toolkit itself, as on a real cluster, where toolkit is installed
# only on the control machine (its editable install leaves only toolkit/_data, no code, in
# site-packages). A path line in a .pth file adds that directory to sys.path
# without reading the .pth files inside it, so .venv's editable toolkit (a .pth) stays out.
if [ ! -x .venv-host/bin/python ]; then
  "$PY" -m venv .venv-host
fi
host_site=$(.venv-host/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
ctl_site=$(.venv/bin/python -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])')
echo "$ctl_site" > "$host_site/toolkit-test-host.pth"
if (cd / && .venv-host/bin/python -c 'import toolkit.cli' 2>/dev/null); then
  echo "setup: .venv-host must not import toolkit" >&2
  exit 1
fi

# The real CPU engines that tests/integration/test_real_engines.py runs (SGLang, vLLM, a tiny
# model): always in CI, elsewhere with TOOLKIT_REAL_ENGINES=1. About 4 minutes and 7 GB when
# cold; cached, so a second run only checks.
if [ -n "${CI:-}" ] || [ "${TOOLKIT_REAL_ENGINES:-}" = 1 ]; then
  bash scripts/setup-engines.sh
fi

# Container tests: podman + runc and a local base image (built once, cached).
if [ "$(id -u)" = 0 ]; then
  bash scripts/container-test-image.sh
fi
