"""The collective check's host program: a launcher per host, one worker per device.

Standard library plus torch (the engine host's Python has it wherever sglang or vLLM is
installed). `toolkit check --collective` uploads this file to the host's workdir and runs

    python collective_worker.py launch '<json>'

in the instance's planned environment (interface variables, NCCL/HCCL settings, sourced
files). The launcher prints `@@port N` first on the leader (a free port next to the planned
dist-init port), starts one worker per device in its own process session, relays nothing
but a final `@@result [...]` line, and kills every worker it started when the deadline
passes, when it is signalled, or when nobody reads its output any more (a heartbeat line
fails once the SSH channel or the controller's pipe is gone).

A worker checks its interface, imports torch, joins the rendezvous (a TCPStore on the
leader), waits a bounded time for every rank to join (naming those that do not), then
times an all-reduce per size and one all-gather, and prints `@@rank {...}`.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time

PORT, RESULT, RANK, PHASE, ALIVE = "@@port ", "@@result ", "@@rank ", "@@phase ", "@@alive"
IFNAME_VARS = {
    "gloo": "GLOO_SOCKET_IFNAME",
    "nccl": "NCCL_SOCKET_IFNAME",
    "hccl": "HCCL_SOCKET_IFNAME",
}
PORT_SEARCH = 32
HEARTBEAT_S = 1.0
_OUT = threading.Lock()


def say(line: str) -> None:
    """One whole line to stdout (the heartbeat thread writes too)."""
    with _OUT:
        sys.stdout.write(line + "\n")
        sys.stdout.flush()


WARMUP = 2


# ------------------------------------------------------------------ launcher


def free_port(base: int) -> int:
    """The first port from `base` that binds on every interface (TCPStore binds them all)."""
    for port in range(base, base + PORT_SEARCH):
        sock = socket.socket()
        # As TCPStore binds: a port in TIME_WAIT from an earlier run is still usable.
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            sock.bind(("", port))
            return port
        except OSError:
            continue
        finally:
            sock.close()
    raise SystemExit(f"no free port in {base}-{base + PORT_SEARCH - 1}")


def launch(spec: dict) -> None:
    if spec.get("port") is None:
        spec["port"] = free_port(int(spec["port_base"]))
        say(PORT + str(spec["port"]))
    children: list[tuple[dict, subprocess.Popen]] = []
    outputs: dict[int, list[str]] = {}
    readers: list[threading.Thread] = []

    def kill_all(*_: object) -> None:
        for _rank, proc in children:
            if proc.poll() is None:
                with contextlib.suppress(OSError):
                    os.killpg(proc.pid, signal.SIGKILL)

    def on_signal(signum: int, _frame: object) -> None:
        kill_all()
        os._exit(128 + signum)

    for signum in (signal.SIGTERM, signal.SIGHUP, signal.SIGINT):
        signal.signal(signum, on_signal)

    def heartbeat() -> None:
        # The controller went away (Ctrl-C, killed, lost connection): the SSH channel or the
        # local pipe is closed, so this write fails, and nobody would read the result anyway.
        while True:
            time.sleep(HEARTBEAT_S)
            try:
                say(ALIVE)
            except OSError:
                on_signal(signal.SIGHUP, None)

    threading.Thread(target=heartbeat, daemon=True).start()
    for rank in spec["ranks"]:
        argument = json.dumps({**spec, "ranks": None, "me": rank})
        proc = subprocess.Popen(
            [sys.executable, "-u", os.path.abspath(__file__), "worker", argument],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # one group per worker: killpg takes its helpers too
            text=True,
        )
        children.append((rank, proc))
        lines = outputs.setdefault(rank["rank"], [])
        reader = threading.Thread(target=_drain, args=(proc, lines), daemon=True)
        reader.start()
        readers.append(reader)
    deadline = time.monotonic() + float(spec["deadline"])
    try:
        while time.monotonic() < deadline and any(p.poll() is None for _, p in children):
            time.sleep(0.05)
    finally:
        kill_all()
    results = []
    for reader in readers:
        reader.join(5)  # the last lines of a worker that just exited
    for rank, proc in children:
        proc.wait()
        results.append(_rank_result(rank, proc.returncode, outputs[rank["rank"]], spec))
    say(RESULT + json.dumps(results))


def _drain(proc: subprocess.Popen, lines: list[str]) -> None:
    assert proc.stdout is not None
    for line in proc.stdout:
        lines.append(line.rstrip("\n"))
        del lines[:-200]


def _rank_result(rank: dict, rc: int | None, lines: list[str], spec: dict) -> dict:
    for line in reversed(lines):
        if line.startswith(RANK):
            return json.loads(line[len(RANK) :])
    phases = [line[len(PHASE) :] for line in lines if line.startswith(PHASE)]
    phase = phases[-1] if phases else "start"
    tail = [line for line in lines if not line.startswith("@@")][-3:]
    if rc is not None and rc < 0 and -rc == signal.SIGKILL:
        error = f"did not finish within {spec['deadline']:g} s (stuck in {phase})"
    else:
        error = f"exited with status {rc} in {phase}: {' / '.join(tail) or 'no output'}"
    return {**rank, "ok": False, "phase": phase, "error": error}


# ------------------------------------------------------------------ worker


def phase(name: str) -> None:
    print(PHASE + name, flush=True)


def finish(me: dict, **fields: object) -> None:
    print(RANK + json.dumps({**me, **fields}), flush=True)
    sys.exit(0)


def interface_problem(name: str) -> str | None:
    """Why the interface named for the backend cannot carry traffic, or None.

    Only a plain name is checked: NCCL also takes prefixes and lists (`eth`, `^docker`, `=eth0`).
    """
    if not name or any(c in name for c in "^=,"):
        return None
    base = f"/sys/class/net/{name}"
    if not os.path.isdir(base):
        have = ", ".join(sorted(os.listdir("/sys/class/net")))
        return f"interface {name} does not exist (this host has: {have})"
    try:
        with open(base + "/operstate") as fh:
            state = fh.read().strip()
        with open(base + "/flags") as fh:
            up = int(fh.read().strip(), 16) & 1
    except OSError:
        return None
    if state == "down" or not up:
        return f"interface {name} is down"
    return None


def worker(spec: dict) -> None:
    me = spec["me"]
    backend, world, rank = spec["backend"], int(spec["world"]), int(me["rank"])
    phase("interface")
    problem = interface_problem(os.environ.get(IFNAME_VARS[backend], ""))
    if problem:
        finish(me, ok=False, phase="interface", error=problem)
    phase("import torch")
    try:
        import datetime

        import torch
        import torch.distributed as dist
    except ImportError as exc:
        finish(me, ok=False, phase="import torch", error=f"cannot import torch: {exc}")
    phase("device")
    device = torch.device("cpu")
    if backend == "nccl":
        torch.cuda.set_device(int(me["local"]))
        device = torch.device("cuda", int(me["local"]))
    elif backend == "hccl":
        try:
            import torch_npu  # noqa: F401  (registers the npu device and the hccl backend)
        except ImportError as exc:
            finish(me, ok=False, phase="import torch", error=f"cannot import torch_npu: {exc}")

        torch.npu.set_device(int(me["local"]))
        device = torch.device("npu", int(me["local"]))
    phase("rendezvous")
    join = float(spec["join_timeout"])
    address = f"{spec['master_addr']}:{spec['port']}"
    try:
        store = dist.TCPStore(
            spec["master_addr"],
            int(spec["port"]),
            world,
            is_master=rank == 0,
            timeout=datetime.timedelta(seconds=join),
            wait_for_workers=False,
        )
    except Exception as exc:  # torch raises RuntimeError/DistNetworkError variants
        why = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
        error = f"cannot reach the rendezvous at {address} within {join:g} s: {why}"
        finish(me, ok=False, phase="rendezvous", error=error)
    store.set(f"joined/{rank}", "1")
    phase("join")
    missing = list(range(world))
    ends = time.monotonic() + join
    while missing and time.monotonic() < ends:
        missing = [r for r in missing if not store.check([f"joined/{r}"])]
        time.sleep(0.05 if missing else 0)
    if missing:
        error = f"{len(missing)} of {world} ranks did not join within {join:g} s"
        finish(me, ok=False, phase="join", error=error, missing=missing)
    phase("init")
    timeout = datetime.timedelta(seconds=float(spec["op_timeout"]))
    dist.init_process_group(backend, store=store, rank=rank, world_size=world, timeout=timeout)
    sync = torch.cuda.synchronize if backend == "nccl" else (lambda: None)
    if backend == "hccl":
        sync = torch.npu.synchronize
    phase("all-reduce check")
    probe = torch.ones(4, device=device)
    dist.all_reduce(probe)
    sync()
    if float(probe[0]) != world:
        finish(me, ok=False, phase="all-reduce", error=f"wrong sum {float(probe[0])} != {world}")
    iters = int(spec["iters"])
    flag = torch.zeros(1, device=device)

    def align() -> None:
        dist.all_reduce(flag)

    sizes = []
    for size in spec["sizes"]:
        phase(f"all-reduce {size}")
        tensor = torch.ones(max(1, int(size) // 4), dtype=torch.float32, device=device)
        sizes.append(
            {
                "bytes": int(size),
                "seconds": _timed(lambda t=tensor: dist.all_reduce(t), sync, iters, align),
            }
        )
    gather_bytes = int(spec["gather_bytes"])
    phase(f"all-gather {gather_bytes}")
    part = torch.ones(max(1, gather_bytes // 4 // world), dtype=torch.float32, device=device)
    whole = torch.empty(part.numel() * world, dtype=torch.float32, device=device)
    gather = _timed(lambda: dist.all_gather_into_tensor(whole, part), sync, iters, align)
    # Hold the store (rank 0) until every rank is done with it.
    store.set(f"done/{rank}", "1")
    if rank == 0:
        ends = time.monotonic() + float(spec["op_timeout"])
        while time.monotonic() < ends and not all(store.check([f"done/{r}"]) for r in range(world)):
            time.sleep(0.05)
    dist.destroy_process_group()
    finish(
        me,
        ok=True,
        phase="done",
        sizes=sizes,
        gather={"bytes": part.numel() * 4 * world, "seconds": gather},
    )


def _timed(op, sync, iters: int, align=None) -> float:
    for _ in range(WARMUP):
        op()
    sync()
    if align is not None:
        align()  # every rank starts its clock together: the time is the collective's
        sync()
    started = time.perf_counter()
    for _ in range(iters):
        op()
    sync()
    return (time.perf_counter() - started) / iters


if __name__ == "__main__":
    if sys.argv[1] == "launch":
        launch(json.loads(sys.argv[2]))
    else:
        worker(json.loads(sys.argv[2]))
