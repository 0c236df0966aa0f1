"""What `toolkit bench` runs on the bench host before, beside and after the client.

Uploaded to the bench host and run with its own Python, so it imports nothing but the
standard library (the bench host has no toolkit; it may have only vLLM, only SGLang, or
neither). Three subcommands, each printing one line `@@bench <json>`:

- `facts SPEC_JSON`: which bench clients are installed (without importing them: importing
  vllm or sglang takes seconds), whether the endpoint answers, whether a user's dataset
  file exists, and whether the Hugging Face hub can be reached;
- `corpus DEST CONVERSATIONS WORDS SEED`: a deterministic ShareGPT-format file for the
  `random`/`sharegpt` datasets when the hub cannot be reached;
- `stop PIDFILE GRACE`: stop the running client's process group (TERM, grace, KILL).
"""

import contextlib
import importlib.util
import json
import os
import random
import signal
import socket
import sys
import time

MARK = "@@bench "
HUB = "huggingface.co"

# Everyday English words: real tokenizers encode each as one or two tokens, so a prompt of
# N words is at least N tokens and bench_serving's `random` dataset cuts it to length.
WORDS = (  # noqa: SIM905 (one string of words beats a hundred lines of literals)
    "the of and to in is it on at as by we he be or an do so up if no go me my us am all can "
    "had her was one our out day get has him his how man new now old see two way who boy did "
    "its let put say she too use any ask big buy far few got low may not off own run set sun "
    "top yes yet red map cup box tip door milk gold fire wind snow rain bird fish tree road "
    "book idea room home case week work part hand life good year time river stone light water "
    "house story table window garden market summer winter morning evening music paper letter "
    "friend family answer question number people little great small large green white black "
    "happy quiet early late often never always simple strong gentle bright warm cold open"
).split()


def say(data):
    sys.stdout.write(MARK + json.dumps(data) + "\n")
    sys.stdout.flush()


def package_dir(module):
    """The directory of a top-level package, found without importing it."""
    spec = importlib.util.find_spec(module)
    if spec is None:
        return None
    locations = list(spec.submodule_search_locations or [])
    return locations[0] if locations else None


def version(dist):
    try:
        import importlib.metadata as metadata
    except ImportError:  # Python < 3.8
        return None
    try:
        return metadata.version(dist)
    except metadata.PackageNotFoundError:
        return None


def has_file(base, *candidates):
    """The first candidate (relative to `base`) that exists, else None."""
    for relative in candidates:
        if os.path.exists(os.path.join(base, relative)):
            return relative
    return None


def sglang_facts():
    base = package_dir("sglang")
    if base is None:
        return {"installed": False}
    # sglang 0.5.23 moved the client to sglang.benchmark.serving and deprecated the old name.
    new = has_file(base, "benchmark/serving.py", "benchmark/serving/__init__.py")
    old = has_file(base, "bench_serving.py")
    module = "sglang.benchmark.serving" if new else "sglang.bench_serving" if old else None
    return {"installed": module is not None, "version": version("sglang"), "module": module}


def vllm_facts():
    base = package_dir("vllm")
    if base is None:
        return {"installed": False}
    cli = has_file(base, "entrypoints/cli/main.py")
    serve = has_file(base, "benchmarks/serve.py")
    installed = bool(cli and serve)
    return {
        "installed": installed,
        "version": version("vllm"),
        "module": "vllm.entrypoints.cli.main",
    }


def endpoint(url, timeout):
    """GET URL: the HTTP status, or why no answer came."""
    import http.client
    from urllib.parse import urlsplit

    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port or 80, timeout=timeout)
    try:
        conn.request("GET", parts.path or "/")
        return {"status": conn.getresponse().status}
    except (OSError, http.client.HTTPException) as exc:
        return {"status": None, "error": str(exc) or type(exc).__name__}
    finally:
        conn.close()


def hub(timeout):
    """Can this host open a TCP connection to the hub? HF_HUB_OFFLINE=1 means no, unasked."""
    if os.environ.get("HF_HUB_OFFLINE", "").lower() in ("1", "true", "yes", "on"):
        return {"reachable": False, "detail": "HF_HUB_OFFLINE is set"}
    endpoint_url = os.environ.get("HF_ENDPOINT", "https://" + HUB)
    host = endpoint_url.split("://", 1)[-1].split("/", 1)[0]
    name, _, port = host.partition(":")
    try:
        socket.create_connection((name, int(port or 443)), timeout).close()
    except (OSError, ValueError) as exc:
        return {"reachable": False, "detail": "%s: %s" % (host, exc)}
    return {"reachable": True, "detail": host}


def facts(spec):
    out = {"sglang": sglang_facts(), "vllm": vllm_facts(), "python": sys.executable}
    if spec.get("endpoint"):
        out["endpoint"] = endpoint(spec["endpoint"], float(spec.get("timeout", 5)))
    if spec.get("dataset_path"):
        path = os.path.expanduser(spec["dataset_path"])
        out["dataset_path"] = {"exists": os.path.isfile(path), "path": path}
    if spec.get("check_hub"):
        out["hub"] = hub(float(spec.get("timeout", 5)))
    say(out)


def corpus(dest, conversations, words, seed):
    """ShareGPT format: [{"id", "conversations": [{"from": "human"|"gpt", "value"}]}].

    Each human turn has `words` words, so `random` prompts of up to that many tokens are
    cut from real text rather than repeated. Deterministic for (conversations, words,
    seed), so an existing file of the same name is reused; written atomically.
    """
    if os.path.isfile(dest):
        say({"path": dest, "reused": True})
        return
    rng = random.Random(seed)
    items = []
    for i in range(conversations):
        human = " ".join(rng.choice(WORDS) for _ in range(words))
        answer = " ".join(rng.choice(WORDS) for _ in range(rng.randint(16, 128)))
        turns = [{"from": "human", "value": human}, {"from": "gpt", "value": answer}]
        items.append({"id": "toolkit-%d" % i, "conversations": turns})
    os.makedirs(os.path.dirname(dest) or ".", exist_ok=True)
    tmp = "%s.%d.tmp" % (dest, os.getpid())
    with open(tmp, "w") as fh:
        json.dump(items, fh)
    os.replace(tmp, dest)
    say({"path": dest, "reused": False, "bytes": os.path.getsize(dest)})


def alive(pid):
    try:
        with open("/proc/%d/stat" % pid) as fh:
            return fh.read().split(") ", 1)[1][0] != "Z"
    except (OSError, IndexError):
        return False


def running(pgid):
    """Is any live (not zombie) process left in the client's process group (or the client)?"""
    for entry in os.listdir("/proc"):
        if not entry.isdigit():
            continue
        try:
            with open("/proc/%s/stat" % entry) as fh:
                fields = fh.read().rsplit(") ", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z" and (int(entry) == pgid or int(fields[2]) == pgid):
            return True
    return False


def stop(pidfile, grace):
    """TERM the client's process group, KILL what is left after `grace` seconds."""
    try:
        with open(pidfile) as fh:
            pid = int(fh.read().strip())
    except (OSError, ValueError):
        say({"stopped": False, "detail": "no pid file %s: the client had not started" % pidfile})
        return
    if not alive(pid):
        say({"stopped": True, "pid": pid, "detail": "had already exited"})
        return
    for sig in (signal.SIGTERM, signal.SIGKILL):
        with contextlib.suppress(OSError):
            os.killpg(pid, sig)
        with contextlib.suppress(OSError):
            os.kill(pid, sig)
        deadline = time.time() + (grace if sig == signal.SIGTERM else 2)
        while time.time() < deadline and running(pid):
            time.sleep(0.05)
        if not running(pid):
            how = "SIGTERM" if sig == signal.SIGTERM else "SIGKILL"
            say({"stopped": True, "pid": pid, "detail": "stopped with " + how})
            return
    say({"stopped": False, "pid": pid, "detail": "still running after SIGKILL"})


def main(argv):
    command = argv[0] if argv else ""
    if command == "facts" and len(argv) == 2:
        facts(json.loads(argv[1]))
    elif command == "corpus" and len(argv) == 5:
        corpus(argv[1], int(argv[2]), int(argv[3]), int(argv[4]))
    elif command == "stop" and len(argv) == 3:
        stop(argv[1], float(argv[2]))
    else:
        sys.stderr.write(
            "usage: bench_helper.py facts SPEC | corpus DEST N WORDS SEED | stop PIDFILE GRACE\n"
        )
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
