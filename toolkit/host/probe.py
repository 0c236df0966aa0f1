"""`host_facts`: every preflight fact of a host in one agent task, for `toolkit check`.

Runs inside the agent (so on the host's own Python >= 3.8, standard library only, shipped
in the bundle) over the agent's channel: one request per host instead of one SSH command.
It never imports sglang, vLLM or torch: versions come from `importlib.metadata`, locations
from `importlib.util.find_spec`. Sockets and interfaces are read by `facts.py`, as the
agent's other modules read them.

The result's `data` holds `facts` (one object keyed by section; a section that fails holds
`{"error": "..."}` instead of aborting the others, so one unreadable /proc file never hides
the rest of the host), the login user's `uid`, what `sudo -n true` said when asked, and
whether the planned interpreter was missing (the check's agent then runs on python3). The
host's clock goes out first, as a progress event, so the control side can bound the skew
by the time it took to arrive.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import hashlib
import importlib.util
import os
import platform
import re
import shutil
import socket
import struct
import subprocess
import sys
import time
from collections.abc import Callable
from typing import Any

from toolkit.host import facts as host
from toolkit.host.module import Decision, Emit, Module, register
from toolkit.host.protocol import Result

PROBE_VERSION = 1
DEFAULT_PARAMS: dict[str, Any] = {
    # [distribution name, top-level module]
    "packages": [
        ["sglang", "sglang"],
        ["vllm", "vllm"],
        ["sglang-router", "sglang_router"],
        ["torch", "torch"],
        ["torch_npu", "torch_npu"],
    ],
    "model_dir": None,
    "max_files": 200,  # relative paths listed; counting goes on
    "max_walk": 100000,  # files visited before the model walk gives up
    "disk_paths": [],
    "files": [],  # e.g. CANN set_env.sh candidates
    "sysctls": [
        "vm.swappiness",
        "kernel.numa_balancing",
        "kernel.sched_migration_cost_ns",
        "net.ipv4.ip_local_port_range",
        "net.ipv4.ip_local_reserved_ports",
    ],
    "run_smi": True,
    "smi_timeout": 20.0,
}
NPU_SMI_ARGS = ["info"]
NVIDIA_SMI_ARGS = [
    "--query-gpu=index,name,memory.total,memory.used",
    "--format=csv,noheader,nounits",
]
# `check`'s devices row: state and holders of each GPU (pid → command line from /proc).
GPU_STATE_ARGS = [
    "--query-gpu=index,uuid,memory.total,memory.used,memory.free,persistence_mode,"
    "ecc.mode.current,ecc.errors.uncorrected.volatile.total",
    "--format=csv,noheader,nounits",
]
GPU_APPS_ARGS = [
    "--query-compute-apps=gpu_uuid,pid,process_name,used_memory",
    "--format=csv,noheader,nounits",
]
# npu-smi lives in /usr/local/sbin, which a non-login SSH shell often lacks in PATH.
_EXTRA_BIN_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin"]
# Set by the check agent's start command when the planned interpreter was not found and
# python3 runs instead (executor/session.py).
PYTHON_MISSING_ENV = "TOOLKIT_PYTHON_MISSING"


# ------------------------------------------------------------------ sections


def _python() -> dict[str, Any]:
    return {
        "executable": sys.executable,
        "version": platform.python_version(),
        "version_info": list(sys.version_info[:3]),
    }


def _host() -> dict[str, Any]:
    meminfo = _read("/proc/meminfo") or ""
    mem = re.search(r"^MemTotal:\s+(\d+) kB", meminfo, re.M)
    os_release = _read("/etc/os-release") or ""
    pretty = re.search(r'^PRETTY_NAME="?([^"\n]*)"?', os_release, re.M)
    return {
        "hostname": socket.gethostname(),
        "kernel": platform.release(),
        "machine": platform.machine(),
        "os": pretty.group(1) if pretty else None,
        "cpu_count": os.cpu_count(),
        "mem_total_kb": int(mem.group(1)) if mem else None,
    }


def _packages(pairs: list[list[str]]) -> dict[str, Any]:
    return {dist: _package(dist, module) for dist, module in pairs}


def _package(dist: str, module: str) -> dict[str, Any]:
    """Version and directory of a package, without importing it."""
    import importlib.metadata as metadata  # 3.8+; imported here so the module loads anywhere

    info: dict[str, Any] = {"version": None, "path": None}
    with contextlib.suppress(metadata.PackageNotFoundError):
        info["version"] = metadata.version(dist)
    spec = importlib.util.find_spec(module)  # a top-level name: nothing is executed
    if spec is not None:
        locations = list(spec.submodule_search_locations or [])
        info["path"] = locations[0] if locations else spec.origin
    return info


def _sglang_source(path: str | None) -> dict[str, Any] | None:
    """Where sglang's flag declarations are, and a hash to cache their extraction by."""
    if not path:
        return None
    server_args = os.path.join(path, "srt", "server_args.py")
    if not os.path.isfile(server_args):
        return {"path": path, "server_args": None}
    with open(server_args, "rb") as handle:
        digest = hashlib.sha256(handle.read()).hexdigest()
    return {"path": path, "server_args": server_args, "server_args_sha256": digest}


def _listening() -> list[dict[str, Any]]:
    """TCP sockets in LISTEN state (`facts.tcp_sockets`: /proc/net/tcp and tcp6)."""
    found = [
        {"family": 6 if v6 else 4, "address": address, "port": port}
        for v6, address, port, state in host.tcp_sockets()
        if state == host.TCP_LISTEN
    ]
    return sorted(found, key=lambda s: (s["port"], s["family"], s["address"]))


def _interfaces() -> dict[str, Any]:
    """Interfaces and addresses: `ip -j addr` when it works, else /proc, /sys and ioctl."""
    data = host.ip_addr()
    if data is not None:
        return {"source": "ip", "interfaces": _from_ip_json(data)}
    return {"source": "proc", "interfaces": _from_proc()}  # no iproute2, or one without -j


def _from_ip_json(data: list[dict[str, Any]]) -> list[dict[str, Any]]:
    out = []
    for link in data:
        addrs = link.get("addr_info") or []
        out.append(
            {
                "name": link.get("ifname"),
                "state": link.get("operstate"),
                "mac": link.get("address"),
                "mtu": link.get("mtu"),
                "ipv4": [_cidr(a) for a in addrs if a.get("family") == "inet"],
                "ipv6": [_cidr(a) for a in addrs if a.get("family") == "inet6"],
            }
        )
    return out


def _cidr(addr: dict[str, Any]) -> str:
    return f"{addr.get('local')}/{addr.get('prefixlen')}"


def _from_proc() -> list[dict[str, Any]]:
    """Fallback: names from if_nameindex, the primary IPv4 by ioctl, IPv6 from /proc."""
    ipv6: dict[str, list[str]] = {}
    for line in (_read("/proc/net/if_inet6") or "").splitlines():
        fields = line.split()
        if len(fields) == 6:
            address = socket.inet_ntop(socket.AF_INET6, bytes.fromhex(fields[0]))
            ipv6.setdefault(fields[5], []).append(f"{address}/{int(fields[2], 16)}")
    out = []
    for _, name in socket.if_nameindex():
        sys_dir = "/sys/class/net/" + name
        out.append(
            {
                "name": name,
                "state": (_read(sys_dir + "/operstate") or "").strip().upper() or None,
                "mac": (_read(sys_dir + "/address") or "").strip() or None,
                "mtu": int((_read(sys_dir + "/mtu") or "0").strip() or 0) or None,
                "ipv4": _ioctl_ipv4(name),
                "ipv6": ipv6.get(name, []),
            }
        )
    return out


def _ioctl_ipv4(name: str) -> list[str]:
    import fcntl  # Unix only; imported here so the module still loads elsewhere

    request = struct.pack("256s", name.encode()[:15])
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        try:
            address = fcntl.ioctl(sock.fileno(), 0x8915, request)[20:24]  # SIOCGIFADDR
            netmask = fcntl.ioctl(sock.fileno(), 0x891B, request)[20:24]  # SIOCGIFNETMASK
        except OSError:
            return []  # no IPv4 address
    prefix = bin(struct.unpack("!I", netmask)[0]).count("1")
    return [f"{socket.inet_ntoa(address)}/{prefix}"]


def _disks(paths: list[str]) -> dict[str, Any]:
    """Free space for each path, measured at its nearest existing ancestor, and whether this
    user can create files there (a read-only mount or a foreign owner stops `up` midway)."""
    out = {}
    for path in paths:
        checked = os.path.abspath(path)
        while not os.path.exists(checked) and checked != os.path.dirname(checked):
            checked = os.path.dirname(checked)
        usage = shutil.disk_usage(checked)
        out[path] = {"checked": checked, "free_bytes": usage.free, "total_bytes": usage.total}
        out[path].update(_writable(checked))
    return out


def _writable(directory: str) -> dict[str, Any]:
    """Create and remove a file: the only test that sees read-only mounts, ACLs and quotas."""
    import tempfile

    try:
        fd, name = tempfile.mkstemp(prefix=".toolkit-write-test-", dir=directory)
    except OSError as exc:
        return {"writable": False, "write_error": exc.strerror or str(exc)}
    os.close(fd)
    os.unlink(name)
    return {"writable": True}


def _model_dir(path: str | None, max_files: int, max_walk: int) -> dict[str, Any] | None:
    """Existence, file count, total bytes and (capped) relative file list of a model dir."""
    if not path:
        return None
    info: dict[str, Any] = {"path": path, "exists": os.path.exists(path)}
    if not os.path.isdir(path):
        return dict(info, is_dir=False)
    files: list[str] = []
    count = total = broken = 0
    for root, dirs, names in os.walk(path):
        dirs.sort()
        for name in sorted(names):
            full = os.path.join(root, name)
            try:
                total += os.stat(full).st_size  # follows HF-cache symlinks to their blobs
            except OSError:
                broken += 1
            count += 1
            if len(files) < max_files:
                files.append(os.path.relpath(full, path))
        if count >= max_walk:
            break
    return dict(
        info,
        is_dir=True,
        file_count=count,
        total_bytes=total,
        broken_links=broken,
        files=files,
        truncated=count > len(files),
        walk_stopped=count >= max_walk,
        has_config=os.path.isfile(os.path.join(path, "config.json")),
        safetensors=sum(1 for f in files if f.endswith(".safetensors")),
    )


def _files(paths: list[str]) -> dict[str, Any]:
    out = {}
    for path in paths:
        exists = os.path.exists(path)
        size = os.path.getsize(path) if exists and os.path.isfile(path) else None
        out[path] = {"exists": exists, "is_file": os.path.isfile(path), "size": size}
    return out


def _clock() -> dict[str, Any]:
    now = time.time()
    utc = datetime.datetime.fromtimestamp(now, datetime.timezone.utc)
    return {"epoch": now, "utc": utc.isoformat()}


def _which(name: str) -> str | None:
    found = shutil.which(name)
    extra = [os.path.join(d, name) for d in _EXTRA_BIN_DIRS]
    return found or next((p for p in extra if os.access(p, os.X_OK)), None)


def _smi(name: str, args: list[str], run: bool, timeout: float) -> dict[str, Any]:
    path = _which(name)
    if path is None or not run:
        return {"found": path is not None, "path": path}
    try:
        # stdin closed: the agent's stdin carries its requests.
        done = subprocess.run(
            [path, *args], stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout
        )
    except subprocess.TimeoutExpired:
        return {"found": True, "path": path, "timed_out": True, "timeout": timeout}
    return {
        "found": True,
        "path": path,
        "rc": done.returncode,
        "stdout": done.stdout.decode("utf-8", "replace"),
        "stderr": done.stderr.decode("utf-8", "replace")[-2000:],
    }


def _gpu_apps(run: bool, timeout: float) -> dict[str, Any]:
    """nvidia-smi's compute processes, with each pid's command line where /proc shows it."""
    out = _smi("nvidia-smi", GPU_APPS_ARGS, run, timeout)
    cmdlines = {}
    for line in (out.get("stdout") or "").splitlines():
        fields = [f.strip() for f in line.split(",")]
        if len(fields) > 1 and fields[1].isdigit():
            raw = _read(f"/proc/{fields[1]}/cmdline")
            if raw:
                cmdlines[fields[1]] = raw.replace("\0", " ").strip()[:300]
    out["cmdlines"] = cmdlines
    return out


def _cpufreq() -> dict[str, Any]:
    paths = glob.glob("/sys/devices/system/cpu/cpu[0-9]*/cpufreq/scaling_governor")
    governors: dict[str, int] = {}
    for path in paths:
        value = (_read(path) or "").strip() or "unreadable"
        governors[value] = governors.get(value, 0) + 1
    return {"present": bool(paths), "governors": governors}


def _sysctls(names: list[str]) -> dict[str, Any]:
    out = {}
    for name in names:
        if not re.match(r"^[A-Za-z0-9_.-]+$", name) or ".." in name:
            out[name] = None
            continue
        value = _read("/proc/sys/" + name.replace(".", "/"))
        out[name] = " ".join(value.split()) if value is not None else None
    return out


def _read(path: str) -> str | None:
    try:
        with open(path, encoding="utf-8", errors="replace") as handle:
            return handle.read()
    except OSError:
        return None


# ------------------------------------------------------------------ main


def _guard(section: Callable[[], Any]) -> Any:
    try:
        return section()
    except Exception as exc:  # one broken section must not hide the others
        return {"error": f"{type(exc).__name__}: {exc}"}


def probe(params: dict[str, Any]) -> dict[str, Any]:
    """Every fact, keyed by section."""
    p = dict(DEFAULT_PARAMS, **params)
    packages = _guard(lambda: _packages(p["packages"]))
    sglang_path = (packages.get("sglang") or {}).get("path") if "error" not in packages else None
    run, timeout = bool(p["run_smi"]), float(p["smi_timeout"])
    return {
        "probe_version": PROBE_VERSION,
        "python": _guard(_python),
        "host": _guard(_host),
        "time": _guard(_clock),
        "packages": packages,
        "sglang_source": _guard(lambda: _sglang_source(sglang_path)),
        "listening": _guard(_listening),
        "interfaces": _guard(_interfaces),
        "disk": _guard(lambda: _disks(p["disk_paths"])),
        "model_dir": _guard(lambda: _model_dir(p["model_dir"], p["max_files"], p["max_walk"])),
        "files": _guard(lambda: _files(p["files"])),
        "npu_smi": _guard(lambda: _smi("npu-smi", NPU_SMI_ARGS, run, timeout)),
        "nvidia_smi": _guard(lambda: _smi("nvidia-smi", NVIDIA_SMI_ARGS, run, timeout)),
        "gpu_state": _guard(lambda: _smi("nvidia-smi", GPU_STATE_ARGS, run, timeout)),
        "gpu_apps": _guard(lambda: _gpu_apps(run, timeout)),
        "cpufreq": _guard(_cpufreq),
        "sysctl": _guard(lambda: _sysctls(p["sysctls"])),
    }


def sudo_works() -> str:
    """ "ok", or the first line of what `sudo -n true` said (a password is needed, ...)."""
    try:
        done = subprocess.run(
            ["sudo", "-n", "true"],
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=20,
        )
    except FileNotFoundError:
        return "sudo is not installed"
    except (OSError, subprocess.TimeoutExpired) as exc:
        return "sudo -n true failed: %s" % exc
    if done.returncode == 0:
        return "ok"
    said = done.stdout.decode("utf-8", "replace").strip().splitlines()
    return said[0] if said else "sudo -n true failed"


@register
class HostFacts(Module):
    """Read-only: gathers the facts and reports ok with them in `data`."""

    name = "host_facts"

    def run(
        self, args: dict, check: bool, emit: Emit, label: str = "", facts: dict | None = None
    ) -> list[Result]:
        if facts is None:  # on a host: the clock first, so it arrives while the probe runs
            emit({"clock": time.time()})
        return super().run(args, check, emit, label, facts=facts)

    def facts(self, args: dict) -> dict:
        params = {k: v for k, v in args.items() if k in DEFAULT_PARAMS}
        return {
            "facts": probe(params),
            "uid": os.getuid(),
            "sudo": sudo_works() if args.get("sudo") else None,
            "python_missing": os.environ.get(PYTHON_MISSING_ENV) == "1",
        }

    def decide(self, args: dict, facts: dict) -> Decision:
        broken = sorted(
            k for k, v in facts["facts"].items() if isinstance(v, dict) and "error" in v
        )
        why = " (unreadable: %s)" % ", ".join(broken) if broken else ""
        return Decision.ok("%d sections%s" % (len(facts["facts"]), why), data=facts)
