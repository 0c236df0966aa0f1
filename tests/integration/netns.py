"""Test hosts made of Linux network namespaces, each running Debian's real OpenSSH server.

Why: integration tests must drive toolkit over real SSH against several machines, and a CI
runner has one. Each `TestHost` is a network namespace joined by a veth pair to a bridge in
the root namespace (which holds the gateway address, so this process reaches every host),
with its own address, hostname and `sshd`. Host keys are checked: `TestCluster.known_hosts`
lists every host's own key.

Namespaces share the filesystem and PID space with the root namespace, so each host gets its
own working directory (`TestHost.workdir`), and teardown finds a host's processes by their
network namespace, not by name. Everything this module creates is named `tkt-<session>-…`
(namespaces, links, users, /etc/netns and /etc/sudoers.d entries, the temp dir) so that
`sweep_stale` can remove what a crashed run left, without touching a concurrent live session.

Worked example: `TestCluster(2).start()` in session `ab12` on subnet 10.231.1.0/24 makes
bridge `tkt-ab12-br` (10.231.1.1), hosts `tkt-h1` (netns `tkt-ab12-h1`, 10.231.1.11) and
`tkt-h2` (10.231.1.12), workdirs /tmp/tkt-ab12/tkt-h1 and /tmp/tkt-ab12/tkt-h2.
"""

from __future__ import annotations

import contextlib
import fcntl
import ipaddress
import os
import re
import secrets
import select
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal

import yaml

TMP = Path(tempfile.gettempdir())
LOCK_PATH = Path("/run/lock/tkt-netns.lock") if Path("/run/lock").is_dir() else TMP / "tkt.lock"
NETNS_ETC = Path("/etc/netns")  # `ip netns exec` bind-mounts /etc/netns/NS/* over /etc/*
SUDOERS_D = Path("/etc/sudoers.d")
SSHD = "/usr/sbin/sshd"
SUBNET_FORMAT = "10.231.{}.0/24"
HOST_OFFSET = 10  # host hN gets .(10+N)
DOWN_OFFSET = 200  # unreachable host k gets .(200+k)
REQUIRED_TOOLS = ("ip", "ssh-keygen", "iptables", "unshare", "useradd", SSHD)
_SESSION_RE = re.compile(r"^tkt-([0-9a-f]{4})(?:-|$)")
_SEARCH_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/sbin"])

# Held by `TestHost.listen`: accept and drop connections, like an unrelated service would.
_LISTENER = """
import socket, sys
s = socket.socket()
# As most servers do: an earlier test's connections in TIME_WAIT must not block the bind.
s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
s.bind((sys.argv[1], int(sys.argv[2])))
s.listen(64)
print("ready", flush=True)
while True:
    s.accept()[0].close()
"""


class NetnsError(RuntimeError):
    """A setup command failed; the message carries the command, exit code and stderr tail."""


def missing_tools() -> list[str]:
    """Names of the programs this module needs that are not installed."""
    return [t for t in REQUIRED_TOOLS if shutil.which(t, path=_SEARCH_PATH) is None]


def _exe(name: str) -> str:
    """Absolute path of a tool, also found in /usr/sbin when PATH lacks it."""
    return shutil.which(name, path=_SEARCH_PATH) or name


def _keygen(path: Path, comment: str) -> None:
    _run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", comment, "-f", str(path)])


def _run(
    argv: Sequence[str], *, check: bool = True, timeout: float = 30
) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(
        [_exe(argv[0]), *argv[1:]], capture_output=True, text=True, timeout=timeout
    )
    if check and proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-5:])
        raise NetnsError(f"{' '.join(argv)} exited {proc.returncode}: {tail}")
    return proc


@dataclass(frozen=True)
class TestHost:
    """One test machine. `netns` is None for an unreachable host (an address nobody holds)."""

    __test__ = False  # not a pytest test class

    name: str
    address: str
    netns: str | None
    workdir: Path
    port: int = 22

    def _argv(self, cmd: str | Sequence[str]) -> list[str]:
        if self.netns is None:
            raise NetnsError(f"{self.name} has no namespace (unreachable host)")
        body = ["/bin/sh", "-c", cmd] if isinstance(cmd, str) else [_exe(cmd[0]), *cmd[1:]]
        return [_exe("ip"), "netns", "exec", self.netns, *body]

    def run(
        self, cmd: str | Sequence[str], *, check: bool = True, timeout: float = 30
    ) -> subprocess.CompletedProcess[str]:
        """Run `cmd` (a shell string or an argv) in this host's network namespace, no SSH.

        It shares the root's hostname; use SSH to see the host's own hostname.
        """
        return _run(self._argv(cmd), check=check, timeout=timeout)

    def _rule(self, port: int, proto: str, mode: str) -> list[str]:
        target = ["DROP"]
        if mode == "reject":
            how = "tcp-reset" if proto == "tcp" else "icmp-port-unreachable"
            target = ["REJECT", "--reject-with", how]
        # `! -i lo`: a firewall stops other machines, not the host talking to itself.
        return ["INPUT", "!", "-i", "lo", "-p", proto, "--dport", str(port), "-j", *target]

    def block_port(
        self, port: int, *, proto: str = "tcp", mode: Literal["drop", "reject"] = "drop"
    ) -> None:
        """Firewall `port` for traffic from other hosts: "drop" times out, "reject" refuses."""
        rule = self._rule(port, proto, mode)
        if self.run(["iptables", "-w", "-C", *rule], check=False).returncode != 0:
            self.run(["iptables", "-w", "-I", *rule])

    def unblock_port(self, port: int, *, proto: str = "tcp") -> None:
        """Remove every rule `block_port` may have added for `port`; a no-op if none."""
        for mode in ("drop", "reject"):
            rule = self._rule(port, proto, mode)
            while self.run(["iptables", "-w", "-D", *rule], check=False).returncode == 0:
                pass

    @contextlib.contextmanager
    def listen(self, port: int, address: str | None = None) -> Iterator[tuple[str, int]]:
        """Hold TCP `port` on this host (its own address by default) to simulate a conflict.

        The holder accepts and closes connections. Yields (address, port).
        """
        addr = address or self.address
        proc = subprocess.Popen(
            self._argv([sys.executable, "-c", _LISTENER, addr, str(port)]),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        try:
            ready, _, _ = select.select([proc.stdout], [], [], 10)
            line = proc.stdout.readline() if ready and proc.stdout else ""
            if line.strip() != "ready":
                proc.kill()
                err = proc.communicate(timeout=5)[1].strip().splitlines()[-1:]
                raise NetnsError(f"{self.name}: cannot listen on {addr}:{port}: {err}")
            yield addr, port
        finally:
            proc.kill()
            proc.communicate(timeout=5)


class TestCluster:
    """N `TestHost`s on one bridge, each with `sshd` on port 22, plus client credentials.

    Use as a context manager or call `start()` and `teardown()`. `teardown` is idempotent and
    safe after a partial `start`.
    """

    __test__ = False  # not a pytest test class

    def __init__(
        self, n_hosts: int = 6, enter: Literal["ip-netns", "nsenter"] = "ip-netns"
    ) -> None:
        self.n_hosts = n_hosts
        # How sshd enters its namespace. `ip netns exec` also bind-mounts /etc/netns/NS/hosts
        # (the host's own name resolves) but remounts /sys, hiding the cgroup mounts that
        # podman's runc needs; `nsenter --net` keeps /sys, so SSH sessions can run podman.
        self.enter = enter
        self.session = ""
        self.root = Path()
        self.subnet: ipaddress.IPv4Network | None = None
        self.hosts: list[TestHost] = []
        self.unreachable_hosts: list[TestHost] = []
        self._sshd: dict[str, subprocess.Popen[bytes]] = {}
        self._next_index = 1
        self._workdir_counter = 0

    # -- names and paths -------------------------------------------------------------------
    @property
    def bridge(self) -> str:
        return f"tkt-{self.session}-br"

    @property
    def gateway(self) -> str:
        """The root namespace's address on the bridge: how hosts reach the control machine."""
        assert self.subnet is not None, "cluster not started"
        return str(self.subnet.network_address + 1)

    @property
    def client_key(self) -> Path:
        """Private key accepted for root (and for `create_sudo_user` users) on every host."""
        return self.root / "client" / "id_ed25519"

    @property
    def known_hosts(self) -> Path:
        """OpenSSH known_hosts with every started host's address and own host key."""
        return self.root / "client" / "known_hosts"

    def ssh_options(self) -> list[str]:
        """OpenSSH client options for these hosts, host-key checking on (ssh ignores $HOME)."""
        return [
            "-i", str(self.client_key),
            "-o", "IdentitiesOnly=yes",
            "-o", f"UserKnownHostsFile={self.known_hosts}",
            "-o", "GlobalKnownHostsFile=/dev/null",
            "-o", "StrictHostKeyChecking=yes",
            "-o", "BatchMode=yes",
            "-o", "ConnectTimeout=5",
        ]  # fmt: skip

    def host(self, name: str) -> TestHost:
        """The host called `name` (started or unreachable)."""
        for h in [*self.hosts, *self.unreachable_hosts]:
            if h.name == name:
                return h
        raise KeyError(name)

    # -- lifecycle -------------------------------------------------------------------------
    def __enter__(self) -> TestCluster:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.teardown()

    def start(self) -> TestCluster:
        """Create the bridge, the client key and `n_hosts` hosts; wait until every sshd answers."""
        try:
            self._claim_session_and_subnet()
            client = self.root / "client"
            client.mkdir(mode=0o755)
            _keygen(self.client_key, "tkt-client")
            self.known_hosts.write_text("")
            Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)  # sshd's privsep dir
            hosts = [self._create_host(start_sshd=True) for _ in range(self.n_hosts)]
            self._write_hosts_files()
            for h in hosts:
                self._wait_for_sshd(h)
        except BaseException:
            self.teardown()
            raise
        return self

    def _claim_session_and_subnet(self) -> None:
        """Pick an unused session id and /24, make the bridge: under a lock, as sweeps are."""
        with _locked():
            while True:
                self.session = secrets.token_hex(2)
                self.root = TMP / f"tkt-{self.session}"
                if self.session not in _sessions_present():
                    break
            self.root.mkdir(mode=0o755)
            self.root.chmod(0o755)  # readable by sudo-test users: their authorized key is here
            (self.root / "owner").write_text(_owner_token(os.getpid()))
            self.subnet = _free_subnet()
            _run(["ip", "link", "add", self.bridge, "type", "bridge"])
            _run(["ip", "addr", "add", f"{self.gateway}/24", "dev", self.bridge])
            _run(["ip", "link", "set", self.bridge, "up"])
        # Fail ARP for absent addresses in ~0.6 s instead of 3 s ("No route to host").
        neigh = Path("/proc/sys/net/ipv4/neigh") / self.bridge
        (neigh / "retrans_time_ms").write_text("200")
        (neigh / "mcast_solicit").write_text("3")

    def _create_host(self, *, start_sshd: bool) -> TestHost:
        assert self.subnet is not None, "cluster not started"
        index = self._next_index
        self._next_index += 1
        name, ns = f"tkt-h{index}", f"tkt-{self.session}-h{index}"
        address = str(self.subnet.network_address + HOST_OFFSET + index)
        host = TestHost(name, address, ns, self.root / name)
        self.hosts.append(host)  # before creating anything, so teardown sees partial hosts
        host.workdir.mkdir(mode=0o755)
        _run(["ip", "netns", "add", ns])
        _run(["ip", "link", "add", ns, "type", "veth", "peer", "name", "eth0", "netns", ns])
        _run(["ip", "link", "set", ns, "master", self.bridge, "up"])
        _run(["ip", "-n", ns, "addr", "add", f"{host.address}/24", "dev", "eth0"])
        _run(["ip", "-n", ns, "link", "set", "eth0", "up"])
        _run(["ip", "-n", ns, "link", "set", "lo", "up"])
        # Must exist before `ip netns exec` starts sshd, which bind-mounts it over /etc/hosts.
        (NETNS_ETC / ns).mkdir(parents=True, exist_ok=True)
        (NETNS_ETC / ns / "hosts").touch()
        if start_sshd:
            self._start_sshd(host)
        return host

    def _start_sshd(self, host: TestHost) -> None:
        d = self.root / "sshd" / host.name
        d.mkdir(parents=True)
        key = d / "ssh_host_ed25519_key"
        _keygen(key, host.name)
        config = d / "sshd_config"
        config.write_text(_SSHD_CONFIG.format(host=host, dir=d, client_key=self.client_key))
        pub = key.with_suffix(".pub").read_text().split()
        with self.known_hosts.open("a") as f:
            f.write(f"{host.address} {pub[0]} {pub[1]}\n")
        self._launch_sshd(host)

    def _launch_sshd(self, host: TestHost) -> None:
        d = self.root / "sshd" / host.name
        # A UTS namespace gives the host its own `hostname`; /etc/netns/NS/hosts resolves it.
        script = 'hostname "$1" && exec "$0" -D -e -f "$2"'
        if self.enter == "nsenter":
            argv = [_exe("nsenter"), f"--net=/run/netns/{host.netns}"]
        else:
            argv = [_exe("ip"), "netns", "exec", str(host.netns)]
        argv += [_exe("unshare"), "--uts", "--"]
        argv += ["/bin/sh", "-c", script, SSHD, host.name, str(d / "sshd_config")]
        with (d / "sshd.log").open("ab") as log:
            self._sshd[host.name] = subprocess.Popen(
                argv, stdin=subprocess.DEVNULL, stdout=log, stderr=log, start_new_session=True
            )

    def _wait_for_sshd(self, host: TestHost, timeout: float = 15) -> None:
        """Return once `host`'s sshd sends its banner; raise with its log if it died."""
        deadline = time.monotonic() + timeout
        proc = self._sshd[host.name]
        while time.monotonic() < deadline:
            if proc.poll() is not None:
                break
            with (
                contextlib.suppress(OSError),
                socket.create_connection((host.address, host.port), timeout=1) as s,
            ):
                if s.recv(4).startswith(b"SSH-"):
                    return
            time.sleep(0.02)
        log = (self.root / "sshd" / host.name / "sshd.log").read_text(errors="replace")
        raise NetnsError(f"sshd on {host.name} ({host.address}) not ready: {log[-800:]}")

    def _write_hosts_files(self) -> None:
        """Write every host's /etc/hosts view in place (bind mounts keep the inode)."""
        lines = ["127.0.0.1 localhost", "::1 localhost ip6-localhost ip6-loopback"]
        lines += [f"{h.address} {h.name}" for h in [*self.hosts, *self.unreachable_hosts]]
        for h in self.hosts:
            path = NETNS_ETC / str(h.netns) / "hosts"
            with path.open("r+") as f:
                f.truncate(0)
                f.write("\n".join(lines) + "\n")

    # -- faults ----------------------------------------------------------------------------
    def kill_sshd(self, host: TestHost) -> list[int]:
        """SIGKILL the host's sshd and every SSH session it serves, as a crash would; returns
        the PIDs. The processes those sessions started (toolkit's agent) are left alone."""
        pids = [p for p in _netns_pids([str(host.netns)]) if _comm(p).startswith("sshd")]
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        proc = self._sshd.get(host.name)
        if proc is not None:
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        return pids

    def restart_sshd(self, host: TestHost) -> None:
        """Start the host's sshd again (same key and config) after `kill_sshd`."""
        self._launch_sshd(host)
        self._wait_for_sshd(host)

    @contextlib.contextmanager
    def read_only(self, host: TestHost, path: Path) -> Iterator[Path]:
        """`path` mounted read-only for everything reached through the host's sshd (its own
        mount namespace, made by `ip netns exec`); the rest of the machine still writes it."""
        target = ["nsenter", "-t", str(self._sshd[host.name].pid), "-m", "--"]
        _run([*target, "mount", "--bind", str(path), str(path)])
        try:
            _run([*target, "mount", "-o", "remount,bind,ro", str(path)])
            yield path
        finally:
            _run([*target, "umount", str(path)], check=False)

    def add_host(self, *, start_sshd: bool = True) -> TestHost:
        """Add a host; with `start_sshd=False` its address answers but refuses port 22."""
        host = self._create_host(start_sshd=start_sshd)
        self._write_hosts_files()
        if start_sshd:
            self._wait_for_sshd(host)
        return host

    def unreachable_host(self) -> TestHost:
        """A host whose address is on the bridge's subnet but held by nobody.

        Connecting fails with "No route to host" in about a second.
        """
        assert self.subnet is not None, "cluster not started"
        k = len(self.unreachable_hosts) + 1
        name = f"tkt-down{k}"
        address = str(self.subnet.network_address + DOWN_OFFSET + k)
        host = TestHost(name, address, None, self.root / name)
        host.workdir.mkdir(mode=0o755, exist_ok=True)
        self.unreachable_hosts.append(host)
        self._write_hosts_files()
        return host

    def create_sudo_user(self, name: str = "deploy") -> str:
        """Create a user (on every host: they share /etc) that logs in with `client_key` and
        may `sudo` without a password. Returns the user name, `tkt-<session>-<name>`."""
        if shutil.which("sudo", path=_SEARCH_PATH) is None:
            raise NetnsError("sudo is not installed (scripts/setup.sh installs it)")
        user = f"tkt-{self.session}-{name}"
        home = self.root / "home" / user
        home.parent.mkdir(mode=0o755, exist_ok=True)
        # `-p '*'`: no password, yet not locked ("!"), which sshd without PAM would refuse.
        _run(["useradd", "-m", "-d", str(home), "-s", "/bin/bash", "-U", "-p", "*", user])
        rule = SUDOERS_D / user
        rule.write_text(f"{user} ALL=(ALL:ALL) NOPASSWD: ALL\n")
        rule.chmod(0o440)
        return user

    def fresh_workdirs(self, tag: str) -> dict[str, Path]:
        """A new, empty directory per started host under its workdir, keyed by host name."""
        self._workdir_counter += 1
        out = {}
        for h in self.hosts:
            d = h.workdir / f"{tag}-{self._workdir_counter}"
            d.mkdir(mode=0o755)
            out[h.name] = d
        return out

    def write_inventory(
        self,
        path: Path,
        groups: Mapping[str, Sequence[TestHost]],
        vars: Mapping[str, Any] | None = None,
        *,
        workdirs: Mapping[str, Path] | None = None,
    ) -> Path:
        """Write an Ansible-format YAML inventory of `groups`; returns `path`.

        Every host gets `ansible_host` and `workdir` (from `workdirs` if given, else its own).
        `vars` extend `all.vars` (ansible_user root and the client key).
        """
        workdirs = workdirs or {}
        children: dict[str, Any] = {}
        for group, hosts in groups.items():
            entries: dict[str, Any] = {}
            for h in hosts:
                workdir = str(workdirs.get(h.name, h.workdir))
                entries[h.name] = {"ansible_host": h.address, "workdir": workdir}
                if h.port != 22:
                    entries[h.name]["ansible_port"] = h.port
            children[group] = {"hosts": entries}
        all_vars = {"ansible_user": "root", "ansible_ssh_private_key_file": str(self.client_key)}
        all_vars.update(vars or {})
        doc = {"all": {"vars": all_vars, "children": children}}
        path.write_text(yaml.safe_dump(doc, sort_keys=False))
        return path

    def teardown(self) -> None:
        """Kill every process in the hosts' namespaces, remove all the session made."""
        for proc in self._sshd.values():  # our children: kill and reap them first
            if proc.poll() is None:
                proc.kill()
            with contextlib.suppress(subprocess.TimeoutExpired):
                proc.wait(timeout=5)
        if self.session:
            remove_session(self.session)


_SSHD_CONFIG = """\
# Generated by tests/integration/netns.py for one test host.
ListenAddress {host.address}
Port {host.port}
HostKey {dir}/ssh_host_ed25519_key
PidFile {dir}/sshd.pid
AuthorizedKeysFile {client_key}.pub
PermitRootLogin prohibit-password
PubkeyAuthentication yes
PasswordAuthentication no
KbdInteractiveAuthentication no
UsePAM no
UseDNS no
StrictModes no
MaxStartups 100:30:200
MaxSessions 50
Subsystem sftp internal-sftp
"""


# -- cleanup shared by teardown and the start-of-session sweep -------------------------------
@contextlib.contextmanager
def _locked() -> Iterator[None]:
    with LOCK_PATH.open("a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        yield


def _owner_token(pid: int) -> str:
    """`pid starttime`: survives PID reuse, unlike a bare PID."""
    stat = Path(f"/proc/{pid}/stat").read_text()
    return f"{pid} {stat.rsplit(')', 1)[1].split()[19]}"


def _session_alive(session: str) -> bool:
    try:
        token = (TMP / f"tkt-{session}" / "owner").read_text()
        return _owner_token(int(token.split()[0])) == token
    except (OSError, ValueError, IndexError):
        return False


def _session_objects() -> dict[str, list[str]]:
    """Everything named like a session's, by kind: netns, link, user, file."""
    users = [line.split(":")[0] for line in Path("/etc/passwd").read_text().splitlines()]
    files = [*TMP.glob("tkt-*"), *NETNS_ETC.glob("tkt-*"), *SUDOERS_D.glob("tkt-*")]
    netns = [line.split()[0] for line in _run(["ip", "netns", "list"]).stdout.splitlines()]
    links = [n.split()[1] for n in _run(["ip", "-o", "link", "show"]).stdout.splitlines()]
    return {
        "netns": netns,
        "link": [n.split("@")[0].rstrip(":") for n in links],
        "user": users,
        "file": [str(p) for p in files],
    }


def _session_of(name: str) -> str | None:
    m = _SESSION_RE.match(Path(name).name)
    return m.group(1) if m else None


def _sessions_present() -> set[str]:
    objs = _session_objects()
    return {s for names in objs.values() for n in names if (s := _session_of(n))}


def _free_subnet() -> ipaddress.IPv4Network:
    """The first 10.231.N.0/24 overlapping no route or address this machine has."""
    taken = []
    for line in _run(["ip", "-4", "-o", "route", "show", "table", "all"]).stdout.splitlines():
        for tok in line.split()[:2]:
            with contextlib.suppress(ValueError):
                taken.append(ipaddress.ip_network(tok, strict=False))
                break
    for n in range(1, 255):
        net = ipaddress.IPv4Network(SUBNET_FORMAT.format(n))
        if not any(net.overlaps(t) for t in taken):
            return net
    raise NetnsError("no free 10.231.N.0/24 subnet")


def _netns_pids(namespaces: Sequence[str]) -> list[int]:
    """PIDs whose network namespace is one of `namespaces` (what `ip netns pids` reports)."""
    inodes = set()
    for ns in namespaces:
        with contextlib.suppress(OSError):
            inodes.add(os.stat(f"/run/netns/{ns}").st_ino)
    pids = []
    for entry in os.listdir("/proc"):
        if entry.isdigit() and int(entry) != os.getpid():
            with contextlib.suppress(OSError):
                if os.stat(f"/proc/{entry}/ns/net").st_ino in inodes:
                    pids.append(int(entry))
    return pids


def _comm(pid: int) -> str:
    try:
        return Path(f"/proc/{pid}/comm").read_text().strip()
    except OSError:
        return ""


def _alive(pid: int) -> bool:
    """Whether `pid` runs: neither gone nor a zombie (init reaps those, maybe not at once)."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] not in "ZX"
    except OSError:
        return False


def _kill_all(namespaces: Sequence[str], timeout: float = 5) -> None:
    """SIGKILL every process in `namespaces` and wait until they are dead."""
    killed: set[int] = set()
    for _ in range(100):  # processes may fork while we kill; loop until none is left
        pids = _netns_pids(namespaces)
        if not pids:
            break
        for pid in pids:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
        killed.update(pids)
        time.sleep(0.02)
    deadline = time.monotonic() + timeout
    while any(_alive(p) for p in killed) and time.monotonic() < deadline:
        time.sleep(0.02)


def remove_session(session: str) -> None:
    """Remove every object of `session`: processes in its namespaces first, then the rest."""

    def mine(names: list[str]) -> list[str]:
        return [n for n in names if _session_of(n) == session]

    objs = _session_objects()
    namespaces = mine(objs["netns"])
    _kill_all(namespaces)
    for link in mine(objs["link"]):  # veths first (deleting one end deletes both), bridge last
        if not link.endswith("-br"):
            _run(["ip", "link", "del", link], check=False)
    for ns in namespaces:
        _run(["ip", "netns", "del", ns], check=False)
    _run(["ip", "link", "del", f"tkt-{session}-br"], check=False)
    for user in mine(objs["user"]):
        _run(["userdel", "-f", "-r", user], check=False)
    for path in mine(objs["file"]):
        p = Path(path)
        if p.is_dir() and not p.is_symlink():
            shutil.rmtree(p, ignore_errors=True)
        else:
            p.unlink(missing_ok=True)
    with contextlib.suppress(OSError):
        NETNS_ETC.rmdir()  # only if empty


def sweep_stale() -> list[str]:
    """Remove the leftovers of sessions whose owning process is gone; return their ids."""
    with _locked():
        stale = sorted(s for s in _sessions_present() if not _session_alive(s))
        for session in stale:
            remove_session(session)
    return stale
