"""Gather a host's preflight facts in one remote command, as JSON.

This file is both a toolkit module and the script it ships: `probe_script()` returns its
own source, and the executor runs `python3 - '<params json>'` on each host with that source
on stdin, one command per host. So it imports only the standard library and must run on
Python >= 3.8 (whatever python3 the host OS has); `from __future__ import annotations`
keeps the type hints legal there. It never imports sglang, vLLM or torch: versions come
from `importlib.metadata`, locations from `importlib.util.find_spec`.

Output is one JSON object. A section that fails holds `{"error": "..."}` instead of
aborting the others, so one unreadable /proc file never hides the rest of the host.
"""

from __future__ import annotations

import contextlib
import datetime
import glob
import hashlib
import importlib.util
import json
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
from pathlib import Path
from typing import Any

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
# npu-smi lives in /usr/local/sbin, which a non-login SSH shell often lacks in PATH.
_EXTRA_BIN_DIRS = ["/usr/local/sbin", "/usr/local/bin", "/usr/sbin", "/usr/bin", "/sbin"]
_TCP_LISTEN = "0A"


# ------------------------------------------------------------------ toolkit side


def probe_script() -> str:
    """The script to send on stdin: this file's source."""
    return Path(__file__).read_text(encoding="utf-8")


def probe_argv(params: dict[str, Any] | None = None, python: str = "python3") -> list[str]:
    """The remote command, as an argv to quote: `python3 - '<params json>'`."""
    return [python, "-", json.dumps(params or {}, sort_keys=True)]


def parse_probe_output(stdout: str) -> dict[str, Any]:
    """The probe's JSON object (its last non-empty stdout line)."""
    lines = [line for line in stdout.splitlines() if line.strip()]
    try:
        result = json.loads(lines[-1])
    except (IndexError, ValueError):
        raise ValueError(f"remote probe printed no JSON; output ends: {stdout[-300:]!r}") from None
    if not isinstance(result, dict) or "probe_version" not in result:
        raise ValueError("remote probe output is not a probe result")
    return result


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
    """TCP sockets in LISTEN state, from /proc/net/tcp and tcp6."""
    found = []
    for family, path in ((4, "/proc/net/tcp"), (6, "/proc/net/tcp6")):
        for line in (_read(path) or "").splitlines()[1:]:
            fields = line.split()
            if len(fields) < 10 or fields[3] != _TCP_LISTEN:
                continue
            address, port = fields[1].split(":")
            found.append(
                {
                    "family": family,
                    "address": _proc_address(address),
                    "port": int(port, 16),
                    "inode": int(fields[9]),
                }
            )
    return sorted(found, key=lambda s: (s["port"], s["family"], s["address"]))


def _proc_address(hex_address: str) -> str:
    """/proc/net/tcp prints each 32-bit word of the address in host byte order."""
    words = [int(hex_address[i : i + 8], 16) for i in range(0, len(hex_address), 8)]
    packed = struct.pack(f"={len(words)}I", *words)
    family = socket.AF_INET if len(words) == 1 else socket.AF_INET6
    return socket.inet_ntop(family, packed)


def _interfaces() -> dict[str, Any]:
    """Interfaces and addresses: `ip -j addr` when it works, else /proc, /sys and ioctl."""
    ip = shutil.which("ip")
    if ip:
        try:
            done = subprocess.run([ip, "-j", "addr"], capture_output=True, timeout=10)
            if done.returncode == 0:
                return {"source": "ip", "interfaces": _from_ip_json(json.loads(done.stdout))}
        except (OSError, ValueError, subprocess.TimeoutExpired):
            pass  # old iproute2 without -j: fall through
    return {"source": "proc", "interfaces": _from_proc()}


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
        done = subprocess.run([path, *args], capture_output=True, timeout=timeout)
    except subprocess.TimeoutExpired:
        return {"found": True, "path": path, "timed_out": True, "timeout": timeout}
    return {
        "found": True,
        "path": path,
        "rc": done.returncode,
        "stdout": done.stdout.decode("utf-8", "replace"),
        "stderr": done.stderr.decode("utf-8", "replace")[-2000:],
    }


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
        "cpufreq": _guard(_cpufreq),
        "sysctl": _guard(lambda: _sysctls(p["sysctls"])),
    }


def main(argv: list[str]) -> None:
    params = json.loads(argv[0]) if argv else {}
    sys.stdout.write(json.dumps(probe(params), sort_keys=True) + "\n")


if __name__ == "__main__":
    main(sys.argv[1:])
