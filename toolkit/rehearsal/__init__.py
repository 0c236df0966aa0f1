"""Rehearsal: rehearse a cluster plan's wiring in seconds, without weights or accelerators.

`engine.py` is a stand-in for `sglang.launch_server` / `vllm serve` that speaks their HTTP
protocol with simulated timing; `tokenizer.py` and `dataset.py` build the offline tokenizer
and ShareGPT file the real benchmark client needs.
"""
