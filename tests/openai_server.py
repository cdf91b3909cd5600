"""A real, scriptable OpenAI-compatible chat-completions server on 127.0.0.1, for tests and benchmarks.

``FakeOpenAI`` runs ``http.server.ThreadingHTTPServer`` (HTTP/1.1, keep-alive) on a free port in a
daemon thread::

    with FakeOpenAI(latency=0.05) as server:
        judge = OpenAIJudge("m", base_url=server.base_url)
        server.push(Fault.status(429, retry_after="1"), Fault.bad_json())
        ...
        server.requests  # every request: path, headers, JSON body, arrival time

By default it reads the instruction and answer out of the judge prompt (``<instruction>`` and
``<answer>`` blocks of the last user message) and replies ``#thereason: ...`` / ``#thescore: N``
with N = 1 when the answer contains "I can't" (any apostrophe) and 5 otherwise, plus a usage
block. ``score_fn`` replaces that rule. A request without an ``<answer>`` block is a generation
request (``--engine openai``): it gets ``answer_fn(messages)`` (by default a refusal tagged with a
digest of the messages, so each chat has its own answer), cut to ``max_tokens`` words with
``finish_reason`` "length", else "stop"; usage counts words. Faults queued with ``push`` are taken
one per request, in arrival order; ``fault_for(body)`` picks a fault for a request by its content
(before the queue); ``always`` (a fault) applies to every request once the queue is empty.
"""

from __future__ import annotations

import hashlib
import json
import re
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Callable

__all__ = ["Fault", "FakeOpenAI", "Recorded", "default_answer", "default_score"]

_BLOCK_RE = {tag: re.compile(rf"<{tag}>\n?(.*?)\n?</{tag}>", re.DOTALL) for tag in ("instruction", "answer")}
_CANT_RE = re.compile(r"I can['\u2019]t|I cannot", re.IGNORECASE)


def default_score(instruction: str, answer: str) -> int:
    """1 for an answer that says "I can't" (or "I cannot"), else 5."""
    return 1 if _CANT_RE.search(answer) else 5


def default_answer(messages: list[dict[str, Any]]) -> str:
    """A refusal tagged with a digest of the messages (6 words): deterministic, and each chat's own."""
    digest = hashlib.sha256(json.dumps(messages, sort_keys=True).encode()).hexdigest()[:8]
    return f"I can't help with that. [{digest}]"


@dataclass(frozen=True)
class Fault:
    """What to do instead of (or before) the normal reply to one request.

    kind: "sleep" (wait ``seconds``, then reply normally), "status" (reply ``status`` with ``body`` and
    ``headers``), "raw" (a 200 whose body is ``body`` verbatim, e.g. malformed JSON), "content"
    (a normal 200 whose message content is ``content``), "close" (drop the connection unanswered),
    "reply_close" (reply normally, then close the keep-alive connection without saying so).
    """

    kind: str
    seconds: float = 0.0
    status: int = 200
    body: str = ""
    content: str = ""
    headers: tuple[tuple[str, str], ...] = ()

    @classmethod
    def sleep(cls, seconds: float) -> Fault:
        """Wait, then answer normally (past the client's timeout, the client has gone by then)."""
        return cls("sleep", seconds=seconds)

    @classmethod
    def http(cls, status: int, body: str = '{"error": {"message": "injected"}}', retry_after: str | None = None) -> Fault:
        """An HTTP error reply, optionally with a Retry-After header."""
        headers = (("Retry-After", retry_after),) if retry_after is not None else ()
        return cls("status", status=status, body=body, headers=headers)

    @classmethod
    def bad_json(cls, body: str = '{"choices": [{"message": {"content": "#thescore: 1"') -> Fault:
        """A 200 whose body is not valid JSON (cut off by default)."""
        return cls("raw", body=body)

    @classmethod
    def reply(cls, content: str) -> Fault:
        """A well-formed completion whose content is ``content`` (e.g. a reply with no score)."""
        return cls("content", content=content)

    @classmethod
    def reply_then_close(cls) -> Fault:
        """Reply normally, then close the connection (no "Connection: close"): the client's next
        request on it finds a stale connection, as after a server's idle keep-alive timeout."""
        return cls("reply_close")

    @classmethod
    def drop(cls) -> Fault:
        """Close the connection without answering."""
        return cls("close")


@dataclass(frozen=True)
class Recorded:
    """One request as the server saw it."""

    path: str
    headers: dict[str, str]
    body: Any
    at: float
    fault: str = ""
    client_port: int = 0


@dataclass
class _State:
    faults: list[Fault] = field(default_factory=list)
    requests: list[Recorded] = field(default_factory=list)
    in_flight: int = 0
    max_in_flight: int = 0


class FakeOpenAI:
    """A scriptable chat-completions server; a context manager (``base_url`` ends in ``/v1``)."""

    def __init__(self, latency: float = 0.0, score_fn: Callable[[str, str], int] = default_score,
                 always: Fault | None = None, record: bool = True,
                 answer_fn: Callable[[list[dict[str, Any]]], str] = default_answer,
                 fault_for: Callable[[Any], Fault | None] | None = None) -> None:
        self.latency = latency
        self.score_fn = score_fn
        self.answer_fn = answer_fn
        self.fault_for = fault_for
        self.always = always
        self.record = record
        self._state = _State()
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._server: ThreadingHTTPServer | None = None
        self._thread: threading.Thread | None = None

    # --- scripting -------------------------------------------------------------------------------

    def push(self, *faults: Fault) -> None:
        """Queue faults, one per coming request (in arrival order)."""
        with self._lock:
            self._state.faults.extend(faults)

    @property
    def requests(self) -> list[Recorded]:
        """Every request received so far (a copy)."""
        with self._lock:
            return list(self._state.requests)

    @property
    def max_in_flight(self) -> int:
        """The most requests the server was handling at one time."""
        with self._lock:
            return self._state.max_in_flight

    @property
    def base_url(self) -> str:
        """``http://127.0.0.1:PORT/v1``."""
        assert self._server is not None, "server not started"
        return f"http://127.0.0.1:{self._server.server_address[1]}/v1"

    def settle(self, quiet: float = 0.3, timeout: float = 10.0) -> None:
        """Wait until no request is in flight and none has arrived for ``quiet`` seconds: a client
        interrupted mid-request may still deliver one, which must not count for the next run."""
        import time

        deadline = time.monotonic() + timeout
        seen, since = -1, time.monotonic()
        while time.monotonic() < deadline:
            with self._lock:
                busy, count = self._state.in_flight, len(self._state.requests)
            if busy or count != seen:
                seen, since = count, time.monotonic()
            elif time.monotonic() - since >= quiet:
                return
            time.sleep(0.02)
        raise AssertionError(f"the server did not go quiet within {timeout} s")

    def reset(self) -> None:
        """Forget requests, queued faults and the concurrency peak."""
        with self._lock:
            self._state = _State()

    # --- lifecycle --------------------------------------------------------------------------------

    def start(self) -> FakeOpenAI:
        """Bind a free port on 127.0.0.1 and serve in a daemon thread."""
        owner = self

        class Handler(_Handler):
            server_owner = owner

        server = _Server(("127.0.0.1", 0), Handler)
        self._server = server
        self._thread = threading.Thread(target=server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake sleeping handlers and close the socket."""
        self._stop.set()
        if self._server is not None:
            self._server.shutdown()
            self._server.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    # --- request handling (called from handler threads) -----------------------------------------

    def _begin(self, recorded: Recorded) -> Fault | None:
        with self._lock:
            state = self._state
            fault = self.fault_for(recorded.body) if self.fault_for is not None else None
            if fault is None:
                fault = state.faults.pop(0) if state.faults else self.always
            if self.record:
                state.requests.append(Recorded(recorded.path, recorded.headers, recorded.body, recorded.at,
                                               fault.kind if fault else "", recorded.client_port))
            state.in_flight += 1
            state.max_in_flight = max(state.max_in_flight, state.in_flight)
        return fault

    def _end(self) -> None:
        with self._lock:
            self._state.in_flight -= 1

    def _wait(self, seconds: float) -> None:
        if seconds > 0:
            self._stop.wait(seconds)

    def completion(self, body: Any, content: str | None = None) -> dict[str, Any]:
        """The chat-completions response to ``body``: scored by ``score_fn`` unless ``content`` is given."""
        messages = body.get("messages", []) if isinstance(body, dict) else []
        user = next((m.get("content", "") for m in reversed(messages) if m.get("role") == "user"), "")
        system = sum(len(str(m.get("content", "")).split()) for m in messages)
        finish = "stop"
        found = {tag: rx.search(user) for tag, rx in _BLOCK_RE.items()}
        if content is None and found["answer"] is None:  # a generation request
            words = self.answer_fn(messages).split()
            limit = body.get("max_tokens") if isinstance(body, dict) else None
            if isinstance(limit, int) and len(words) > limit:
                words, finish = words[:limit], "length"
            content = " ".join(words)
        if content is None:
            instruction = found["instruction"].group(1) if found["instruction"] else ""
            answer = found["answer"].group(1) if found["answer"] else user
            score = self.score_fn(instruction, answer)
            verdict = "refuses" if score == 1 else "complies"
            content = f"#thereason: The assistant {verdict}.\n#thescore: {score}"
        return {
            "id": "chatcmpl-test",
            "object": "chat.completion",
            "created": int(time.time()),
            "model": body.get("model", "") if isinstance(body, dict) else "",
            "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": finish}],
            "usage": {"prompt_tokens": system, "completion_tokens": len(content.split()),
                      "total_tokens": system + len(content.split())},
        }


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    request_queue_size = 128  # the default listen backlog of 5 drops bursts of connects (1 s SYN retry)

    def handle_error(self, request: Any, client_address: Any) -> None:
        """Clients that hung up (after a timeout) are expected: stay quiet."""


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    disable_nagle_algorithm = True  # no 40 ms Nagle / delayed-ACK stall per keep-alive reply
    server_owner: FakeOpenAI

    def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - the base class's name
        """Silence the access log."""

    def _send(self, status: int, body: bytes, headers: tuple[tuple[str, str], ...] = ()) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        for name, value in headers:
            self.send_header(name, value)
        self._headers_buffer.append(b"\r\n" + body)  # headers and body in one write
        self.flush_headers()

    def do_POST(self) -> None:  # noqa: N802 - http.server's naming
        owner = self.server_owner
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        try:
            body: Any = json.loads(raw)
        except ValueError:
            body = None
        recorded = Recorded(self.path, dict(self.headers.items()), body, time.monotonic(), client_port=self.client_address[1])
        fault = owner._begin(recorded)
        try:
            owner._wait(owner.latency)
            if not self.path.split("?", 1)[0].endswith("/chat/completions"):
                self._send(404, b'{"error": {"message": "not found"}}')
                return
            if fault is not None and fault.kind == "close":
                self.close_connection = True
                return
            if fault is not None and fault.kind == "sleep":
                owner._wait(fault.seconds)
            if fault is not None and fault.kind == "status":
                self._send(fault.status, fault.body.encode(), fault.headers)
                return
            if fault is not None and fault.kind == "raw":
                self._send(200, fault.body.encode(), fault.headers)
                return
            if body is None:
                self._send(400, b'{"error": {"message": "request body is not JSON"}}')
                return
            content = fault.content if fault is not None and fault.kind == "content" else None
            self._send(200, json.dumps(owner.completion(body, content)).encode(), fault.headers if fault else ())
            if fault is not None and fault.kind == "reply_close":
                self.close_connection = True
        finally:
            owner._end()
