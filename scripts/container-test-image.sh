#!/usr/bin/env bash
# Test-environment setup for the container tests (root only; called by setup.sh): podman with
# runc, and a local base image, since no container registry is reachable from CI.
#
# The two containers.conf settings make podman work on this kind of sandboxed machine
# (no CAP_SYS_RESOURCE to raise rlimits; cgroups in hybrid mode, which crun refuses). They
# are test-machine fixes in a drop-in file of their own; toolkit never writes them.
#
# The image (localhost/tk-test:bookworm: Debian 12 minbase + python3, the same Python minor
# as the test hosts, enough for the stdlib-only rehearsal engine) is built once with
# mmdebstrap (~60 s) and kept; a second run only checks.
set -euo pipefail
IMAGE=${TOOLKIT_TEST_IMAGE:-localhost/tk-test:bookworm}

missing=""
for tool in podman runc mmdebstrap; do
  command -v "$tool" >/dev/null 2>&1 || missing="$missing $tool"
done
if [ -n "$missing" ]; then
  echo "setup: apt-get install$missing"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq $missing >/dev/null
fi

conf=/etc/containers/containers.conf.d/50-toolkit-tests.conf
if [ ! -f "$conf" ]; then
  mkdir -p "$(dirname "$conf")"
  cat > "$conf" <<'CONF'
# Written by toolkit's scripts/container-test-image.sh for its tests on sandboxed CI machines.
[containers]
default_ulimits = []
[engine]
runtime = "runc"
CONF
fi

if ! podman image exists "$IMAGE"; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  echo "setup: building $IMAGE with mmdebstrap"
  mmdebstrap --quiet --variant=minbase --include=python3 bookworm "$tmp/rootfs.tar"
  podman import --quiet "$tmp/rootfs.tar" "$IMAGE" >/dev/null
fi
