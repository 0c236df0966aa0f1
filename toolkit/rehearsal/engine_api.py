"""The model server's request and response bodies: sglang `/generate`, the OpenAI routes,
`/server_info`, `/model_info`, `/v1/models` and `/metrics`, as the real servers shape them.

Part of the rehearsal engine (`engine.py` is the entry point); standard library only.
"""

from __future__ import annotations

import math
import os
import time

if __package__:  # imported as toolkit.rehearsal.engine_api
    from .engine_core import Bootstrap, Engine, EngineError, Job
    from .engine_settings import DEFAULT_MAX_NEW_TOKENS, VERSION
else:  # uploaded next to engine.py, whose directory is on sys.path
    from engine_core import Bootstrap, Engine, EngineError, Job  # type: ignore[no-redef]
    from engine_settings import DEFAULT_MAX_NEW_TOKENS, VERSION  # type: ignore[no-redef]

# ---------------------------------------------------------------------------- request bodies


def _per_item(value, count: int, name: str) -> list:
    if isinstance(value, list):
        if len(value) != count:
            raise EngineError(400, f"{name} has {len(value)} entries for a batch of {count}")
        return value
    return [value] * count


def _bootstraps(body: dict, count: int) -> list[Bootstrap | None]:
    hosts = _per_item(body.get("bootstrap_host"), count, "bootstrap_host")
    ports = _per_item(body.get("bootstrap_port"), count, "bootstrap_port")
    rooms = _per_item(body.get("bootstrap_room"), count, "bootstrap_room")
    out: list[Bootstrap | None] = []
    for host, port, room in zip(hosts, ports, rooms):  # noqa: B905 (strict= needs 3.10)
        if host is None or room is None:
            out.append(None)
        else:
            out.append(Bootstrap(str(host), None if port is None else int(port), str(room)))
    return out


def _limit(value, default: int) -> int:
    if value is None:
        return default
    if not isinstance(value, int) or isinstance(value, bool) or value < 0:
        raise EngineError(400, f"max new tokens must be a non-negative integer, got {value!r}")
    return value


def _make_jobs(
    engine: Engine, body: dict, counts: list[int], limits: list[int], exact: bool
) -> list[Job]:
    rids = body.get("rid")
    rids = rids if isinstance(rids, list) else [rids] * len(counts)
    context = engine.settings.context_length
    jobs = []
    boots = _bootstraps(body, len(counts))
    for count, limit, rid, boot in zip(counts, limits, rids, boots):  # noqa: B905 (3.8)
        if exact and context and count >= context:
            raise EngineError(
                400,
                f"The input ({count} tokens) is longer than the model's context length"
                f" ({context} tokens).",
            )
        if engine.settings.mode == "prefill":
            limit = min(limit, 1)  # prefill produces the first token; decode does the rest
        jobs.append(Job(count, limit, str(rid) if rid else os.urandom(16).hex(), boot))
    return jobs


def generate_jobs(engine: Engine, body: dict) -> tuple[list[Job], bool]:
    """sglang `/generate`: `text` or `input_ids`, single or batch."""
    ids, text = body.get("input_ids"), body.get("text")
    if ids is not None:
        batch = bool(ids) and isinstance(ids[0], list)
        counts, exact = ([len(x) for x in ids] if batch else [len(ids)]), True
    elif text is not None:
        batch = isinstance(text, list)
        counts, exact = [engine.estimate_tokens(t) for t in (text if batch else [text])], False
    else:
        raise EngineError(400, "Either text or input_ids should be provided.")
    params = _per_item(body.get("sampling_params") or {}, len(counts), "sampling_params")
    limits = [_limit((p or {}).get("max_new_tokens"), DEFAULT_MAX_NEW_TOKENS) for p in params]
    return _make_jobs(engine, body, counts, limits, exact), batch


def completion_jobs(engine: Engine, body: dict) -> list[Job]:
    """OpenAI `/v1/completions`: `prompt` is text, token ids, or a batch of either."""
    prompt = body.get("prompt")
    if isinstance(prompt, str):
        prompts: list = [prompt]
    elif isinstance(prompt, list) and prompt and all(isinstance(p, int) for p in prompt):
        prompts = [prompt]
    elif isinstance(prompt, list) and prompt:
        prompts = prompt
    else:
        raise EngineError(400, "prompt must be a string, token ids, or a non-empty list of them")
    counts = [len(p) if isinstance(p, list) else engine.estimate_tokens(str(p)) for p in prompts]
    limit = _limit(body.get("max_tokens"), 16)
    exact = all(isinstance(p, list) for p in prompts)
    return _make_jobs(engine, body, counts, [limit] * len(counts), exact)


def chat_jobs(engine: Engine, body: dict) -> list[Job]:
    """OpenAI `/v1/chat/completions`: prompt size from the message texts plus template."""
    messages = body.get("messages")
    if not isinstance(messages, list) or not messages:
        raise EngineError(400, "messages must be a non-empty list")
    chars = 0
    for message in messages:
        content = message.get("content") if isinstance(message, dict) else None
        parts = content if isinstance(content, list) else [content]
        chars += sum(len(p.get("text", "")) if isinstance(p, dict) else len(p or "") for p in parts)
    count = engine.estimate_tokens("x" * chars) + 4 * len(messages)  # + the chat template
    raw_limit = body.get("max_completion_tokens")
    limit = _limit(
        raw_limit if raw_limit is not None else body.get("max_tokens"), DEFAULT_MAX_NEW_TOKENS
    )
    return _make_jobs(engine, body, [count], [limit], False)


# ---------------------------------------------------------------------------- response bodies


def generate_object(engine: Engine, job: Job, started: float) -> dict:
    meta = {
        "id": job.rid,
        "finish_reason": {"type": "length", "length": job.limit} if job.finished else None,
        "prompt_tokens": job.prompt_tokens,
        "weight_version": "default",
        "num_retractions": 0,
        "reasoning_tokens": 0,
        "completion_tokens": len(job.output_ids),
        "cached_tokens": 0,
    }
    if engine.speculative:
        accept = max(engine.timing.accept_length, 1.0)
        meta["spec_accept_length"] = accept
        meta["spec_verify_ct"] = math.ceil(len(job.output_ids) / accept)
    if job.finished:
        meta["e2e_latency"] = round(time.monotonic() - started, 6)
    return {"text": job.text, "output_ids": list(job.output_ids), "meta_info": meta}


def usage_object(jobs: list[Job]) -> dict:
    prompt = sum(job.prompt_tokens for job in jobs)
    completion = sum(len(job.output_ids) for job in jobs)
    return {
        "prompt_tokens": prompt,
        "total_tokens": prompt + completion,
        "completion_tokens": completion,
        "prompt_tokens_details": None,
        "reasoning_tokens": 0,
    }


class OpenAIStream:
    """Turns job progress into OpenAI completion or chat chunks (text deltas)."""

    def __init__(self, engine: Engine, jobs: list[Job], chat: bool, model: str) -> None:
        self.jobs, self.chat, self.model = jobs, chat, model
        self.id = ("chatcmpl-" if chat else "cmpl-") + os.urandom(16).hex()
        self.created = int(time.time())
        self._sent = [0] * len(jobs)
        self._finished_sent = [False] * len(jobs)

    def _chunk(self, choices: list[dict], usage: dict | None = None) -> dict:
        kind = "chat.completion.chunk" if self.chat else "text_completion"
        return {
            "id": self.id,
            "object": kind,
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage,
        }

    def step(self) -> list[dict]:
        out = []
        for index, job in enumerate(self.jobs):
            delta = "".join(job.pieces[self._sent[index] :])
            first = self._sent[index] == 0
            self._sent[index] = len(job.pieces)
            if self.chat:
                if first and delta:
                    role = {"role": "assistant", "content": "", "reasoning_content": None}
                    out.append(self._chunk([self._choice(index, role, None)]))
                if delta:
                    out.append(self._chunk([self._choice(index, self._delta(delta), None)]))
                if job.finished and not self._finished_sent[index]:
                    out.append(self._chunk([self._choice(index, self._delta(None), "length")]))
            elif delta or (job.finished and not self._finished_sent[index]):
                reason = "length" if job.finished else None
                choice = {"index": index, "text": delta, "logprobs": None}
                choice.update(finish_reason=reason, matched_stop=None)
                out.append(self._chunk([choice]))
            self._finished_sent[index] = job.finished
        return out

    @staticmethod
    def _delta(content: str | None) -> dict:
        return {"role": None, "content": content, "reasoning_content": None}

    @staticmethod
    def _choice(index: int, delta: dict, reason: str | None) -> dict:
        return {
            "index": index,
            "delta": delta,
            "logprobs": None,
            "finish_reason": reason,
            "matched_stop": None,
        }

    def usage_chunk(self) -> dict:
        return self._chunk([], usage_object(self.jobs))

    def response(self) -> dict:
        choices = []
        for index, job in enumerate(self.jobs):
            choice: dict = {"index": index}
            if self.chat:
                choice["message"] = {"role": "assistant", "content": job.text, "tool_calls": None}
                choice["message"]["reasoning_content"] = None
            else:
                choice["text"] = job.text
            choice.update(logprobs=None, finish_reason="length", matched_stop=None)
            choices.append(choice)
        return {
            "id": self.id,
            "object": "chat.completion" if self.chat else "text_completion",
            "created": self.created,
            "model": self.model,
            "choices": choices,
            "usage": usage_object(self.jobs),
        }


def server_info(engine: Engine) -> dict:
    s, t = engine.settings, engine.timing
    state: dict = {"last_gen_throughput": 0.0, "#running_req": engine.running}
    if engine.speculative:
        state["avg_spec_accept_length"] = max(t.accept_length, 1.0)
    return {
        "model_path": s.model_path,
        "tokenizer_path": t.tokenizer_dir or s.model_path,
        "served_model_name": s.model_id,
        "host": s.host,
        "port": s.port,
        "tp_size": s.tp_size,
        "dp_size": s.dp_size,
        "nnodes": s.nnodes,
        "node_rank": s.node_rank,
        "dist_init_addr": s.dist_init_addr,
        "disaggregation_mode": s.mode,
        "disaggregation_bootstrap_port": s.bootstrap_port,
        "speculative_algorithm": s.speculative_algorithm,
        "speculative_num_draft_tokens": s.speculative_num_draft_tokens,
        "max_running_requests": s.max_running_requests,
        "context_length": s.context_length,
        "internal_states": [state],
        "version": VERSION,
        "rehearsal": True,
        "rehearsal_timing": t._asdict(),
    }


def model_info(engine: Engine) -> dict:
    s = engine.settings
    return {
        "model_path": s.model_path,
        "served_model_name": s.model_id,
        "tokenizer_path": engine.timing.tokenizer_dir or s.model_path,
        "is_generation": True,
        "preferred_sampling_params": None,
        "weight_version": "default",
        "load_format": "rehearsal",
        "reasoning_parser": None,
        "tool_call_parser": None,
        "disaggregation_mode": s.mode,
        "has_image_understanding": False,
        "has_audio_understanding": False,
        "model_type": "rehearsal",
        "architectures": ["RehearsalForCausalLM"],
    }


def models_list(engine: Engine) -> dict:
    s = engine.settings
    card = {
        "id": s.model_id,
        "object": "model",
        "created": int(time.time() - (time.monotonic() - engine.started)),
        "owned_by": s.engine,
        "root": s.model_path,
        "parent": None,
        "max_model_len": s.context_length or 131072,
    }
    return {"object": "list", "data": [card]}


def metrics_text(engine: Engine) -> str:
    vllm = engine.settings.engine == "vllm"
    prefix = "vllm:" if vllm else "sglang:"
    labels = '{{model_name="{}"}}'.format(engine.settings.model_id.replace('"', ""))
    rows = (
        ("num_requests_running" if vllm else "num_running_reqs", "gauge", engine.running),
        ("num_requests_waiting" if vllm else "num_queue_reqs", "gauge", engine.waiting),
        ("prompt_tokens_total", "counter", engine.prompt_tokens_total),
        ("generation_tokens_total", "counter", engine.generation_tokens_total),
        (
            "request_success_total" if vllm else "num_requests_total",
            "counter",
            engine.requests_total,
        ),
    )
    lines = []
    for name, kind, value in rows:
        lines.append(
            "# HELP {}{} Rehearsal engine {}.".format(prefix, name, name.replace("_", " "))
        )
        lines.append(f"# TYPE {prefix}{name} {kind}")
        lines.append(f"{prefix}{name}{labels} {float(value)}")
    if engine.speculative:
        lines.append("# TYPE sglang:spec_accept_length gauge")
        lines.append(f"sglang:spec_accept_length{labels} {engine.timing.accept_length}")
    return "\n".join(lines) + "\n"
