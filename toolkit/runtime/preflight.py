"""Container preflight: one probe script per host, and pure findings from what it printed.

The probe (run by the host's agent) prints one fact per line, `key<TAB>value`:

    runtime   podman version 4.3.1          (or `missing`)
    image     localhost/tk-test:bookworm<TAB>present   (absent / pulled / pull-failed:<rc>)
    leftover  tk-<older run>-decode0.0
    gpu       cdi | nvidia | none
    device    /dev/davinci_manager<TAB>missing

It pulls under the profile's policy (`missing`: only when absent; `always`; `never`), so
every host pulls at once, before anything is launched. `findings` turns the facts into
(status, detail, fix) triples for the recap; the unit tests feed it fixture text.
"""

from __future__ import annotations

from collections.abc import Sequence

from toolkit import shell
from toolkit.runtime.container import LABEL_HOST, safe_name

# The Ascend NPU device files and driver mounts SGLang's Ascend documentation lists.
ASCEND_PATHS = (
    "/dev/davinci_manager",
    "/dev/devmm_svm",
    "/dev/hisi_hdc",
    "/usr/local/dcmi",
    "/usr/local/bin/npu-smi",
    "/usr/local/Ascend/driver",
)
CDI_SPECS = ("/etc/cdi/nvidia.yaml", "/etc/cdi/nvidia.json", "/var/run/cdi/nvidia.yaml")


def probe_script(
    runtime: str,
    images: Sequence[str],
    pull: str,
    host_tag: str,
    run_id: str,
    gpus: bool,
    ascend: bool,
) -> str:
    rt = shell.quote(runtime)
    lines = [
        "set -o pipefail",
        f"if ! command -v {rt} >/dev/null; then printf 'runtime\\tmissing\\n'; exit 0; fi",
        f'printf "runtime\\t%s\\n" "$({rt} --version 2>&1 | head -n1)"',
    ]
    for image in images:
        img = shell.quote(image)
        have = f"{rt} image inspect {img} >/dev/null 2>&1"
        # The pull's own output, one `progress` fact a line, is shown while it runs.
        get = f"{rt} pull {img} 2>&1 | sed -u 's/^/progress\\t/'"
        if pull == "always":
            lines.append(
                f"if {get}; then printf 'image\\t%s\\tpulled\\n' {img}; "
                f"else printf 'image\\t%s\\tpull-failed:%s\\n' {img} $?; fi"
            )
        elif pull == "missing":
            lines.append(
                f"if {have}; then printf 'image\\t%s\\tpresent\\n' {img}; "
                f"elif {get}; then printf 'image\\t%s\\tpulled\\n' {img}; "
                f"else printf 'image\\t%s\\tpull-failed:%s\\n' {img} $?; fi"
            )
        else:
            lines.append(
                f"if {have}; then printf 'image\\t%s\\tpresent\\n' {img}; "
                f"else printf 'image\\t%s\\tabsent\\n' {img}; fi"
            )
    mine = f"label={LABEL_HOST}={host_tag}"
    ps = shell.join([runtime, "ps", "-a", "--filter", mine, "--format", "{{.Names}}"])
    lines.append(
        f"{ps} 2>/dev/null | while read -r name; do "
        f'case "$name" in *{shell.quote(safe_name(run_id))}*) ;; '
        "*) printf 'leftover\\t%s\\n' \"$name\";; "
        "esac; done"
    )
    if gpus:
        if runtime == "docker":
            lines.append(
                f"if {rt} info --format '{{{{json .Runtimes}}}}' 2>/dev/null | grep -q nvidia; "
                "then printf 'gpu\\tnvidia\\n'; else printf 'gpu\\tnone\\n'; fi"
            )
        else:
            specs = " ".join(shell.quote(p) for p in CDI_SPECS)
            lines.append(
                f'gpu=none; for spec in {specs}; do [ -e "$spec" ] && gpu=cdi; done; '
                "printf 'gpu\\t%s\\n' \"$gpu\""
            )
    if ascend:
        for path in ASCEND_PATHS:
            q = shell.quote(path)
            lines.append(f"[ -e {q} ] || printf 'device\\t%s\\tmissing\\n' {q}")
    return "\n".join(lines) + "\n"


def parse_facts(text: str) -> list[list[str]]:
    return [line.split("\t") for line in text.splitlines() if "\t" in line]


def findings(runtime: str, pull: str, text: str, check: bool = False) -> list[tuple[str, str, str]]:
    """(status ok/changed/failed, what was found, the fix) for each fact of one host.

    `check`: the probe ran with pull `never` (check mode changes nothing), so an absent
    image the policy would pull is "would pull", not a failure."""
    out: list[tuple[str, str, str]] = []
    said = ""  # the last line of a pull, for a failed one
    for fact in parse_facts(text):
        key, value = fact[0], fact[1]
        if key == "progress":
            said = value.strip() or said
            continue
        if key == "runtime" and value == "missing":
            out.append(
                (
                    "failed",
                    f"{runtime} is not installed",
                    f"install {runtime}, or "
                    "set container_runtime for this host / --set container.runtime=...",
                )
            )
        elif key == "runtime":
            out.append(("ok", value, ""))
        elif key == "image":
            state = fact[2] if len(fact) > 2 else ""
            if check and state == "absent" and pull != "never":
                out.append(("changed", f"would pull {value}", ""))
            else:
                out.append(_image(runtime, pull, value, state, said))
        elif key == "leftover":
            out.append(
                (
                    "failed",
                    f"container {value} of an older run is still here",
                    f"stop that run with `toolkit down -i INVENTORY`, or `{runtime} rm -f {value}`",
                )
            )
        elif key == "gpu" and value == "none":
            fix = (
                "install the NVIDIA Container Toolkit and register its runtime with docker"
                if runtime == "docker"
                else "generate the CDI spec: nvidia-ctk cdi generate --output=/etc/cdi/nvidia.yaml"
            )
            out.append(("failed", f"--gpus asked, but {runtime} has no NVIDIA GPU support", fix))
        elif key == "gpu":
            out.append(("ok", f"GPU support: {value}", ""))
        elif key == "device":
            out.append(
                (
                    "failed",
                    f"Ascend {value} is missing (the container needs it)",
                    "install the Ascend driver (npu-smi info must work on the host)",
                )
            )
    return out


def _image(runtime: str, pull: str, image: str, state: str, said: str = "") -> tuple[str, str, str]:
    if state == "present":
        return ("ok", f"image {image} present", "")
    if state == "pulled":
        return ("changed", f"pulled {image}", "")
    if state == "absent":
        return (
            "failed",
            f"image {image} is not on this host and container.pull is {pull}",
            f"`{runtime} pull {image}` (or `{runtime} load`) on the host, "
            "or --set container.pull=missing",
        )
    return (
        "failed",
        f"could not pull {image} ({state}{': ' + said if said else ''})",
        f"check the image name and the registry login (`{runtime} login`), or load it "
        f"with `{runtime} load`",
    )
