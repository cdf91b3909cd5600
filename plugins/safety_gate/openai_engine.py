"""Generation on an OpenAI-compatible server (vLLM, TGI, SGLang, ...): ``--engine openai``.

``OpenAIEngine`` has the local engine's shape: ``render(instruction, system_prompt)`` (here the chat
messages, since the server applies its own chat template) and ``generate(prompts, max_new_tokens,
batch_size, on_batch, on_step)``, where ``batch_size`` is the number of requests in flight: the
server batches them itself. Each prompt is one request to ``{base_url}/chat/completions`` with
``{"model", "messages", "temperature": 0, "max_tokens": max_new_tokens, "seed"}``, through the
shared client (``openai_http``: keep-alive connections, a timeout, bounded retries with exponential
backoff, ``Retry-After`` honoured on 429). Answers reach ``on_batch`` as they arrive, in the calling
thread, so the pipeline stores them at once; a prompt that still fails after its retries gets no
answer and goes to ``on_error(index, reason)`` instead, and the others go on.

The served model is identified by its name and endpoint (``fingerprint``), which replaces the hash of
local weights in the answer cache key. The API key never enters the fingerprint, ``describe()``,
``stats()``, ``repr()`` or a reason.
"""

from __future__ import annotations

import hashlib
import threading
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

from .engine import Answer
from .openai_http import (
    DEFAULT_BASE_URL, ChatClient, Connection, EndpointError, RequestFailed, display_url, map_concurrent,
)

__all__ = ["DEFAULT_CONCURRENCY", "EngineError", "OpenAIEngine", "ServedModel", "ServerOptions"]

DEFAULT_CONCURRENCY = 32  # a vLLM server batches far more; 32 keeps a shared server usable for others
DEFAULT_TIMEOUT = 300.0  # seconds per request: a long answer on a busy server takes a while
DEFAULT_RETRIES = 4
_FINISH = {"stop": "stop", "length": "length", "eos": "stop", "eos_token": "stop", "stop_sequence": "stop"}


class EngineError(ValueError):
    """Server settings that cannot be used."""


@dataclass(frozen=True)
class ServerOptions:
    """Where and how to generate with ``--engine openai``; ``api_key`` is never shown or stored."""

    model: str
    base_url: str = DEFAULT_BASE_URL
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = DEFAULT_CONCURRENCY
    timeout: float = DEFAULT_TIMEOUT
    max_retries: int = DEFAULT_RETRIES
    seed: int = 0

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view without the key (and without credentials in the URL)."""
        return {"model": self.model, "base_url": display_url(self.base_url), "concurrency": self.concurrency,
                "timeout": self.timeout, "max_retries": self.max_retries}


@dataclass(frozen=True)
class ServedModel:
    """The model under test when a server generates: its served name and endpoint (the report's "model")."""

    spec: str
    endpoint: str
    kind: str = "openai"
    base: None = None

    def describe(self) -> dict[str, Any]:
        """A JSON-ready description, for the report."""
        return {"spec": self.spec, "kind": self.kind, "endpoint": self.endpoint, "base": None}


class OpenAIEngine:
    """Greedy generation on an OpenAI-compatible server (see the module docstring)."""

    name = "openai"

    def __init__(self, options: ServerOptions, *, backoff_base: float | None = None,
                 backoff_cap: float | None = None) -> None:
        if not options.model or not options.model.strip():
            raise EngineError("engine 'openai' needs the served model's name: pass --engine-model=NAME")
        extra = {k: v for k, v in (("backoff_base", backoff_base), ("backoff_cap", backoff_cap)) if v is not None}
        try:
            self._client = ChatClient(options.base_url, api_key=options.api_key, timeout=options.timeout,
                                      max_retries=options.max_retries, what="engine 'openai'", **extra)
        except EndpointError as exc:
            raise EngineError(str(exc)) from None
        self.model = options.model.strip()
        self.seed = options.seed
        self.concurrency = max(1, int(options.concurrency))
        self._errors = 0
        self._lock = threading.Lock()

    def __repr__(self) -> str:
        key = "set" if self._client.has_key else "none"
        return f"OpenAIEngine(model={self.model!r}, base_url={self._client.base_url!r}, api_key={key})"

    @property
    def endpoint(self) -> str:
        """The chat-completions URL without credentials or query."""
        return self._client.endpoint

    def served_model(self) -> ServedModel:
        """What the report names as the model."""
        return ServedModel(self.model, self.endpoint)

    def fingerprint(self) -> str:
        """What identifies the answers' source in the cache key: the served model and the endpoint."""
        return hashlib.sha256(f"openai\0{self.endpoint}\0{self.model}".encode()).hexdigest()

    def generation_key(self, max_new_tokens: int) -> dict[str, Any]:
        """The request settings that change an answer (the seed is sent, so it is part of the key)."""
        return {"max_new_tokens": max_new_tokens, "decoding": "greedy", "engine": "openai", "seed": self.seed}

    def stats(self) -> dict[str, int]:
        """requests (HTTP requests sent), retries, errors (prompts left without an answer), tokens."""
        http = self._client.stats()
        with self._lock:
            errors = self._errors
        return {"requests": http["calls"], "retries": http["retries"], "errors": errors,
                "prompt_tokens": http["prompt_tokens"], "completion_tokens": http["completion_tokens"]}

    def render(self, instruction: str, system_prompt: str | None) -> list[dict[str, str]]:
        """The chat messages: the system prompt first where there is one, then the instruction."""
        messages = [{"role": "user", "content": instruction}]
        if system_prompt:
            messages.insert(0, {"role": "system", "content": system_prompt})
        return messages

    def _ask(self, conn: Connection, payload: dict[str, Any], stop: threading.Event) -> Answer | str:
        """The answer to one request, or the reason there is none."""
        try:
            reply = self._client.complete(conn, payload, stop)
        except RequestFailed as failure:
            return str(failure)
        except Exception as exc:  # a bug or an odd server must not lose the other answers
            return self._client.redact(f"{type(exc).__name__}: {exc}")
        finish = _FINISH.get(reply.finish_reason or "stop", reply.finish_reason or "stop")
        return Answer(reply.content.strip(), reply.completion_tokens, finish)

    def generate(
        self,
        prompts: Sequence[list[dict[str, str]]],
        max_new_tokens: int,
        batch_size: int,
        on_batch: Callable[[list[int], list[Answer]], None],
        on_step: Callable[[int], None] | None = None,
        on_error: Callable[[int, str], None] | None = None,
    ) -> list[Answer | None]:
        """Answers to ``prompts`` (rendered messages) in their order, None where a request failed for
        good. ``batch_size`` requests are in flight at once; ``on_batch(indices, answers)`` gets the
        answers as they arrive and ``on_error(index, reason)`` each failure, in the calling thread.
        ``on_step`` is not called: a server reports no decoding steps."""
        results: list[Answer | None] = [None] * len(prompts)
        payloads = [{"model": self.model, "messages": list(messages), "temperature": 0,
                     "max_tokens": max_new_tokens, "seed": self.seed} for messages in prompts]

        def work(conn: Connection, index: int, stop: threading.Event) -> Answer | str:
            return self._ask(conn, payloads[index], stop)

        def arrived(done: list[tuple[int, Answer | str]]) -> None:
            good = [(i, a) for i, a in done if isinstance(a, Answer)]
            for i, a in good:
                results[i] = a
            if good:
                on_batch([i for i, _ in good], [a for _, a in good])
            for index, reason in done:
                if isinstance(reason, str):
                    with self._lock:
                        self._errors += 1
                    if on_error is not None:
                        on_error(index, reason)

        map_concurrent(self._client, range(len(prompts)), batch_size, work, arrived, "safety-gate-engine")
        return results
