"""Guards two CUDA-only calls in SGLang 0.5.23's prefill server, for its CPU engine.

`srt/disaggregation/prefill.py` asks the KV sender for host tensor indices and records a
`torch.cuda.Event` without checking for CUDA; on CPU the prefill server dies on its first
request and on prefix-cache hits. Each guard adds `torch.cuda.is_available()`. Idempotent;
fails naming the file when SGLang's text moved (another version), instead of half-patching.
Run with the SGLang engine venv's python (scripts/setup-engines.sh).
"""

from __future__ import annotations

import importlib.util
import pathlib
import sys

HOST_INDICES = 'getattr(sender, "supports_host_tensor_indices", False) and not ('
CUDA_EVENT = ":\n            ev = torch.cuda.Event()"
GUARDS = [
    (f"if {HOST_INDICES}", f"if torch.cuda.is_available() and {HOST_INDICES}"),
    (
        f"if self.enable_overlap{CUDA_EVENT}",
        f"if self.enable_overlap and torch.cuda.is_available(){CUDA_EVENT}",
    ),
]


def main() -> int:
    spec = importlib.util.find_spec("sglang")
    if spec is None or not spec.submodule_search_locations:
        print("patch_sglang: sglang is not installed in this python", file=sys.stderr)
        return 1
    target = pathlib.Path(spec.submodule_search_locations[0]) / "srt/disaggregation/prefill.py"
    text = target.read_text()
    for old, new in GUARDS:
        if new in text:
            continue
        if text.count(old) != 1:
            why = f"expected one {old!r}; another sglang version?"
            print(f"patch_sglang: {target}: {why}", file=sys.stderr)
            return 1
        text = text.replace(old, new)
    target.write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
