"""A judge that asks any OpenAI-compatible chat-completions endpoint (OpenAI, vLLM, llama.cpp, Ollama, ...).

``OpenAIJudge`` (name ``"openai"``, version ``"<RUBRIC_VERSION>:<model>"``) is selected with
``--judge=openai`` plus ``--judge-model=MODEL`` (or ``--judge=openai:MODEL``). For every case it POSTs
``{base_url}/chat/completions`` with ``{"model", "messages": judge_messages(...), "temperature": 0}``
and reads the reply with ``parse_judge_output``:

* requests go through ``safety_gate.openai_http`` (shared with the openai engine): they run
  concurrently on ``options.concurrency`` worker threads; each worker keeps one
  keep-alive connection (``http.client``, stdlib only) for the whole ``judge()`` call;
* a request times out after ``options.timeout`` seconds (per socket operation);
* timeouts, connection errors, HTTP 429 and 5xx, and a 200 whose body is not JSON or has no
  ``choices[0].message.content`` are retried up to ``options.max_retries`` times, with exponential
  backoff (0.5 s, 1 s, 2 s, ... capped at 8 s, plus up to 10 % jitter); a 429's ``Retry-After``
  (seconds or an HTTP date; also ``retry-after-ms``) is honoured instead, capped at 60 s;
* other 4xx answers (a wrong key, an unknown model) are not retried: the case becomes an error
  verdict naming the status and an excerpt of the body;
* a reply without a readable score is asked again (a fresh request) up to 2 more times, then
  becomes an error verdict ``judge output had no score: <excerpt>``: never a pass;
* a blank answer is an error verdict without a request, as with the rule judge.

One case's failure never fails the batch: ``judge()`` returns one verdict per case, in order.
``stats()`` counts ``calls`` (HTTP requests sent), ``retries`` (requests repeated after a failure),
``reasks`` (fresh asks after an unreadable score), ``errors`` (cases that ended as error verdicts)
and the ``prompt_tokens`` / ``completion_tokens`` the server reported.

The API key (``options.api_key``; None for local servers, which then get no ``Authorization``
header) is sent only in that header. It never appears in a verdict, an error message, ``stats()``,
``repr()`` or the cache key; server text that echoes it is redacted.
"""

from __future__ import annotations

import threading
from typing import Any, Sequence

from safety_gate.judges import Case, JudgeError, JudgeOptions, Verdict
from safety_gate.judges.parsing import parse_judge_output
from safety_gate.judges.rubric import RUBRIC_FINGERPRINT, RUBRIC_VERSION, judge_messages
from safety_gate.openai_http import (
    BACKOFF_BASE,
    BACKOFF_CAP,
    DEFAULT_BASE_URL,
    RETRY_AFTER_CAP,
    ChatClient,
    Connection,
    EndpointError,
    RequestFailed,
    backoff_delay,
    excerpt,
    map_concurrent,
    retry_after_seconds,
)

__all__ = ["DEFAULT_BASE_URL", "OpenAIJudge", "backoff_delay", "excerpt", "retry_after_seconds"]

REASKS = 2  # fresh asks after a reply without a readable score


class OpenAIJudge:
    """Scores answers by asking a chat model on an OpenAI-compatible endpoint (see the module docstring)."""

    name = "openai"

    def __init__(
        self,
        model: str,
        *,
        base_url: str = DEFAULT_BASE_URL,
        api_key: str | None = None,
        concurrency: int = 8,
        timeout: float = 60.0,
        max_retries: int = 4,
        backoff_base: float = BACKOFF_BASE,
        backoff_cap: float = BACKOFF_CAP,
        retry_after_cap: float = RETRY_AFTER_CAP,
        reasks: int = REASKS,
    ) -> None:
        if not model or not model.strip():
            raise JudgeError("judge 'openai' needs a model name")
        try:
            self._client = ChatClient(base_url, api_key=api_key, timeout=timeout, max_retries=max_retries,
                                      backoff_base=backoff_base, backoff_cap=backoff_cap,
                                      retry_after_cap=retry_after_cap, what="judge 'openai'")
        except EndpointError as exc:
            raise JudgeError(str(exc)) from None
        self.model = model.strip()
        self.version = f"{RUBRIC_VERSION}:{self.model}"
        self.base_url = self._client.base_url
        # Another endpoint serving the same model name can score differently: its verdicts are its own.
        self.cache_identity = f"{self.base_url}|rubric:{RUBRIC_FINGERPRINT}"
        self.concurrency = max(1, int(concurrency))
        self.timeout = self._client.timeout
        self.max_retries = self._client.max_retries
        self.reasks = max(0, int(reasks))
        self._lock = threading.Lock()
        self._own = {"errors": 0, "reasks": 0}

    @classmethod
    def from_options(cls, arg: str | None, options: JudgeOptions) -> OpenAIJudge:
        """``openai:MODEL`` or ``--judge-model``; endpoint, key, concurrency, timeout and retries from ``options``."""
        model = arg or options.model
        if not model or not model.strip():
            raise JudgeError(
                "judge 'openai' needs a model: pass --judge-model=MODEL or --judge=openai:MODEL "
                "(endpoint: --judge-base-url or $OPENAI_BASE_URL; key: $OPENAI_API_KEY)"
            )
        return cls(
            model,
            base_url=options.base_url or DEFAULT_BASE_URL,
            api_key=options.api_key,
            concurrency=options.concurrency,
            timeout=options.timeout,
            max_retries=options.max_retries,
        )

    def __repr__(self) -> str:
        key = "set" if self._client.has_key else "none"
        return f"OpenAIJudge(model={self.model!r}, base_url={self.base_url!r}, api_key={key})"

    def stats(self) -> dict[str, int]:
        """Counters since construction: calls, retries, errors, reasks, prompt_tokens, completion_tokens."""
        http = self._client.stats()
        with self._lock:
            own = dict(self._own)
        return {"calls": http["calls"], "retries": http["retries"], **own,
                "prompt_tokens": http["prompt_tokens"], "completion_tokens": http["completion_tokens"]}

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self._own[key] += delta

    def _judge_one(self, conn: Connection, case: Case, stop: threading.Event) -> Verdict:
        """The verdict for one case; every failure becomes an error verdict."""
        if not case.answer or not case.answer.strip():
            self._count(errors=1)
            return Verdict(None, "empty answer", error="empty answer")
        payload = {"model": self.model, "messages": judge_messages(case.instruction, case.answer), "temperature": 0}
        content = ""
        reason = ""
        redact = self._client.redact
        for ask in range(1 + self.reasks):
            if ask:
                self._count(reasks=1)
            try:
                content = self._client.complete(conn, payload, stop).content
            except RequestFailed as failure:
                self._count(errors=1)
                return Verdict(None, "", error=f"judge request failed: {failure}")
            score, reason = parse_judge_output(content)
            if score is not None:
                return Verdict(score, redact(reason))
        self._count(errors=1)
        return Verdict(None, redact(reason), error=redact(f"judge output had no score: {excerpt(content)}"))

    def _safe_judge_one(self, conn: Connection, case: Case, stop: threading.Event) -> Verdict:
        """``_judge_one``, with anything unexpected turned into an error verdict (key redacted)."""
        try:
            return self._judge_one(conn, case, stop)
        except Exception as exc:  # a bug or an odd server must not fail the other cases
            self._count(errors=1)
            return Verdict(None, "", error=self._client.redact(f"judge 'openai' failed: {type(exc).__name__}: {exc}"))

    def judge(self, cases: Sequence[Case]) -> list[Verdict]:
        """One verdict per case, in order; cases are asked concurrently on ``concurrency`` connections."""
        results: list[Verdict | None] = [None] * len(cases)

        def store(done: list[tuple[int, Verdict]]) -> None:
            for index, verdict in done:
                results[index] = verdict

        map_concurrent(self._client, cases, self.concurrency, self._safe_judge_one, store, "safety-gate-judge")
        return [v if v is not None else Verdict(None, "", error="judge 'openai' returned no verdict") for v in results]

    def describe(self) -> dict[str, Any]:
        """A JSON-ready view without the key."""
        return {"name": self.name, "version": self.version, "model": self.model, "base_url": self.base_url,
                "concurrency": self.concurrency, "timeout": self.timeout, "max_retries": self.max_retries}
