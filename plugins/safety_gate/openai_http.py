"""A small client for OpenAI-compatible chat-completions endpoints (stdlib only), shared by the
``openai`` judge and the ``openai`` generation engine.

``ChatClient`` POSTs ``{base_url}/chat/completions``:

* each worker thread keeps one keep-alive connection (``http.client``) for a whole batch;
* a request times out after ``timeout`` seconds (per socket operation);
* timeouts, connection errors, HTTP 429 and 5xx, and a 200 whose body is not JSON or has no
  ``choices[0].message.content`` are retried up to ``max_retries`` times, with exponential backoff
  (0.5 s, 1 s, 2 s, ... capped at 8 s, plus up to 10 % jitter); a 429's ``Retry-After`` (seconds or
  an HTTP date; also ``retry-after-ms``) is honoured instead, capped at 60 s;
* other 4xx answers (a wrong key, an unknown model) are not retried.

``map_concurrent`` runs one function over many items on ``concurrency`` such workers and hands the
results back to the calling thread as they arrive (so a caller can write them to SQLite at once).

The API key (None for local servers, which then get no ``Authorization`` header) is sent only in
that header. It never appears in ``repr()``, ``stats()`` or a message: ``redact`` removes it from
server text that echoes it, and URLs are shown without any ``user:password@`` part.
"""

from __future__ import annotations

import email.utils
import http.client
import json
import queue
import random
import re
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import Any, Callable, Mapping, Sequence, TypeVar
from urllib.parse import urlsplit

from safety_gate import __version__

__all__ = [
    "ChatClient", "Connection", "DEFAULT_BASE_URL", "EndpointError", "Reply", "RequestFailed", "backoff_delay",
    "display_url", "excerpt", "map_concurrent", "read_reply", "retry_after_seconds",
]

DEFAULT_BASE_URL = "https://api.openai.com/v1"
BACKOFF_BASE = 0.5  # seconds before the first retry
BACKOFF_CAP = 8.0  # longest backoff between two attempts
JITTER = 0.1  # up to this fraction of the delay is added at random
RETRY_AFTER_CAP = 60.0  # longest Retry-After honoured
EXCERPT_CHARS = 200
_REDACTED = "[redacted]"

# Errors worth another attempt: timeouts (socket.timeout is TimeoutError), refused or reset
# connections, DNS failures (all OSError) and protocol errors such as a truncated response.
_TRANSIENT_ERRORS = (OSError, http.client.HTTPException)
# What a server that closed an idle keep-alive connection looks like on the next request.
_STALE_ERRORS = (http.client.RemoteDisconnected, ConnectionResetError, BrokenPipeError, ConnectionAbortedError)

T = TypeVar("T")
R = TypeVar("R")


class EndpointError(ValueError):
    """A base URL or client setting that cannot be used."""


def backoff_delay(attempt: int, base: float = BACKOFF_BASE, cap: float = BACKOFF_CAP, jitter: float = JITTER,
                  rand: Callable[[], float] = random.random) -> float:
    """Seconds to wait before retry number ``attempt`` (1, 2, ...): base * 2**(attempt-1), capped, plus jitter."""
    delay = min(cap, base * 2 ** max(0, attempt - 1))
    return delay + delay * jitter * rand()


def retry_after_seconds(headers: Mapping[str, str], cap: float = RETRY_AFTER_CAP,
                        now: Callable[[], float] = time.time) -> float | None:
    """The wait a 429 asks for (``retry-after-ms``, or ``Retry-After`` in seconds or as an HTTP date), capped;
    None when absent or unreadable. ``headers`` keys must be lower case."""
    millis = headers.get("retry-after-ms")
    if millis is not None:
        try:
            value = float(millis) / 1000
        except ValueError:
            value = -1.0
        if value == value and value >= 0:  # not NaN, not negative
            return min(cap, value)
    text = headers.get("retry-after")
    if text is None:
        return None
    text = text.strip()
    try:
        value = float(text)
    except ValueError:
        try:
            when = email.utils.parsedate_to_datetime(text)
        except (TypeError, ValueError, IndexError):
            return None
        if when is None:
            return None
        value = max(0.0, when.timestamp() - now())
    if value != value or value < 0:
        return None
    return min(cap, value)


_USERINFO_RE = re.compile(r"(//)[^/@\s]*@")


def display_url(url: str) -> str:
    """``url`` without any ``user:password@`` part or query (either may carry a key), for messages."""
    return _USERINFO_RE.sub(r"\1", url).split("?", 1)[0]


def excerpt(text: str, limit: int = EXCERPT_CHARS) -> str:
    """``text`` on one line, cut to ``limit`` characters."""
    flat = " ".join(text.split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


class RequestFailed(Exception):
    """A request that failed; ``retry`` says whether another attempt may help, ``wait`` overrides the backoff."""

    def __init__(self, message: str, retry: bool, wait: float | None = None) -> None:
        super().__init__(message)
        self.retry = retry
        self.wait = wait


@dataclass(frozen=True)
class Reply:
    """A chat completion's text, why it stopped (None if not said) and the token counts the server reported."""

    content: str
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0


def read_reply(body: bytes) -> Reply:
    """The content, finish reason and usage of a chat-completions response body; raises RequestFailed
    (retryable) if it is malformed."""
    try:
        data = json.loads(body)
        choice = data["choices"][0]
        content = choice["message"]["content"]
    except (ValueError, KeyError, IndexError, TypeError):
        raise RequestFailed(f"malformed response: {excerpt(body.decode('utf-8', 'replace'))}", retry=True) from None
    if not isinstance(content, str):
        raise RequestFailed(f"response without message content: {excerpt(body.decode('utf-8', 'replace'))}",
                            retry=True)
    usage = data.get("usage") if isinstance(data, dict) else None
    usage = usage if isinstance(usage, dict) else {}

    def count(key: str) -> int:
        value = usage.get(key)
        return value if isinstance(value, int) and value >= 0 else 0

    finish = choice.get("finish_reason") if isinstance(choice, dict) else None
    return Reply(content, finish if isinstance(finish, str) else None, count("prompt_tokens"),
                 count("completion_tokens"))


class Connection:
    """One keep-alive HTTP(S) connection to an endpoint, reopened as needed (one per worker thread)."""

    def __init__(self, scheme: str, host: str, port: int, timeout: float) -> None:
        if scheme == "https":
            self._conn: http.client.HTTPConnection = http.client.HTTPSConnection(
                host, port, timeout=timeout, context=ssl.create_default_context()
            )
        else:
            self._conn = http.client.HTTPConnection(host, port, timeout=timeout)
        self._used = False
        self._aborted = False

    def post(self, path: str, body: bytes, headers: dict[str, str]) -> tuple[int, dict[str, str], bytes]:
        """POST ``body``; returns (status, lower-cased headers, body). A stale keep-alive connection is
        reopened once, silently; any other failure closes the connection and propagates."""
        for fresh in (False, True):
            reused = self._used and self._conn.sock is not None
            try:
                self._connect()
                self._conn.request("POST", path, body=body, headers=headers)
                response = self._conn.getresponse()
                data = response.read()
            except _STALE_ERRORS:
                self.close()
                if reused and not fresh and not self._aborted:
                    continue
                raise
            except BaseException:
                self.close()
                raise
            self._used = True
            if response.will_close:
                self.close()
            return response.status, {k.lower(): v for k, v in response.getheaders()}, data
        raise AssertionError("unreachable")  # pragma: no cover

    def _connect(self) -> None:
        """Open the socket now, unless aborted: ``abort`` either sees the socket or is seen here."""
        if self._aborted:
            raise ConnectionAbortedError("cancelled")
        if self._conn.sock is None:
            self._conn.connect()
            if self._aborted:
                raise ConnectionAbortedError("cancelled")

    def close(self) -> None:
        """Close the socket; the next request opens a new one."""
        self._conn.close()
        self._used = False

    def abort(self) -> None:
        """From another thread: end a request in flight at once (its thread sees a connection error)."""
        self._aborted = True
        sock = self._conn.sock
        if sock is not None:
            try:
                sock.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class ChatClient:
    """Chat-completions requests to one endpoint, with retries (see the module docstring).

    ``what`` names the user in messages ("judge 'openai'", "engine 'openai'"). Counts ``calls``
    (HTTP requests sent), ``retries`` and the ``prompt_tokens`` / ``completion_tokens`` servers reported.
    """

    def __init__(
        self, base_url: str, *, api_key: str | None = None, timeout: float = 60.0, max_retries: int = 4,
        backoff_base: float = BACKOFF_BASE, backoff_cap: float = BACKOFF_CAP, retry_after_cap: float = RETRY_AFTER_CAP,
        what: str = "endpoint",
    ) -> None:
        parts = urlsplit(base_url.strip())
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise EndpointError(f"{what}: base URL {display_url(base_url)!r} is not an http(s) URL")
        try:
            port = parts.port
        except ValueError:
            raise EndpointError(f"{what}: base URL {display_url(base_url)!r} has a bad port") from None
        if timeout <= 0:
            raise EndpointError(f"{what}: timeout must be positive (got {timeout})")
        # Shown in messages and repr: without any user:password@ part (which is never sent either).
        self.base_url = display_url(base_url.strip()).rstrip("/")
        path = parts.path.rstrip("/")
        if not path.endswith("/chat/completions"):
            path += "/chat/completions"
        self._target = (parts.scheme, parts.hostname, port or (443 if parts.scheme == "https" else 80))
        self._path = path + (f"?{parts.query}" if parts.query else "")
        # The endpoint without credentials or query (which may carry a key): what identifies the server.
        self.endpoint = f"{parts.scheme}://{parts.hostname}:{self._target[2]}{path}"
        self._key = api_key or None
        self.timeout = float(timeout)
        self.max_retries = max(0, int(max_retries))
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
        self.retry_after_cap = retry_after_cap
        self._lock = threading.Lock()
        self._stats = {"calls": 0, "retries": 0, "prompt_tokens": 0, "completion_tokens": 0}

    @property
    def has_key(self) -> bool:
        """Whether requests carry an ``Authorization`` header."""
        return self._key is not None

    def stats(self) -> dict[str, int]:
        """Counters since construction: calls, retries, prompt_tokens, completion_tokens."""
        with self._lock:
            return dict(self._stats)

    def _count(self, **deltas: int) -> None:
        with self._lock:
            for key, delta in deltas.items():
                self._stats[key] += delta

    def redact(self, text: str) -> str:
        """``text`` with the API key (if one is set) replaced."""
        if self._key and len(self._key) >= 4:
            return text.replace(self._key, _REDACTED)
        return text

    def connection(self) -> Connection:
        """A new keep-alive connection to the endpoint (opened on its first request)."""
        return Connection(*self._target, timeout=self.timeout)

    def _headers(self) -> dict[str, str]:
        headers = {
            "Content-Type": "application/json",
            "Accept": "application/json",
            "User-Agent": f"safety-gate/{__version__}",
        }
        if self._key:
            headers["Authorization"] = f"Bearer {self._key}"
        return headers

    def _attempt(self, conn: Connection, body: bytes) -> Reply:
        """One HTTP request; raises RequestFailed saying whether to retry."""
        self._count(calls=1)
        try:
            status, headers, data = conn.post(self._path, body, self._headers())
        except TimeoutError:
            raise RequestFailed(f"timed out after {self.timeout:g} s", retry=True) from None
        except _TRANSIENT_ERRORS as exc:
            raise RequestFailed(f"connection error: {type(exc).__name__}: {exc}", retry=True) from None
        if status == 200:
            return read_reply(data)
        message = f"HTTP {status} from {self.base_url}: {excerpt(data.decode('utf-8', 'replace'))}"
        if status == 429:
            raise RequestFailed(message, retry=True, wait=retry_after_seconds(headers, self.retry_after_cap))
        raise RequestFailed(message, retry=status >= 500)

    def complete(self, conn: Connection, payload: Mapping[str, Any], stop: threading.Event) -> Reply:
        """The reply to one request, after up to ``max_retries`` retries; raises RequestFailed (its
        message redacted). Setting ``stop`` (the batch was interrupted) ends a backoff wait at once."""
        body = json.dumps(payload).encode("utf-8")
        attempt = 0
        while True:
            try:
                reply = self._attempt(conn, body)
            except RequestFailed as failure:
                if not failure.retry or attempt >= self.max_retries:
                    message = str(failure)
                    if failure.retry and attempt:
                        message += f" (gave up after {attempt + 1} attempts)"
                    raise RequestFailed(self.redact(message), retry=False) from None
                attempt += 1
                self._count(retries=1)
                wait = failure.wait
                if wait is None:
                    wait = backoff_delay(attempt, self.backoff_base, self.backoff_cap)
                if stop.wait(wait):
                    raise RequestFailed("cancelled", retry=False) from None
                continue
            self._count(prompt_tokens=reply.prompt_tokens, completion_tokens=reply.completion_tokens)
            return reply


def map_concurrent(
    client: ChatClient, items: Sequence[T], concurrency: int,
    work: Callable[[Connection, T, threading.Event], R], on_done: Callable[[list[tuple[int, R]]], None],
    thread_name: str = "safety-gate-http",
) -> None:
    """Run ``work(conn, item, stop)`` for every item on ``concurrency`` worker threads, each with its
    own keep-alive connection. ``on_done([(index, result), ...])`` is called in the calling thread
    with whatever has arrived since its last call, so results can be stored as they come. ``work``
    should turn its failures into results; an exception it raises anyway stops the batch and is
    raised here. On an interrupt (or an exception from ``on_done``) no new request starts, those in
    flight are cut off (a generation may take minutes), and the exception propagates."""
    if not items:
        return
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for index in range(len(items)):
        todo.put(index)
    done: queue.SimpleQueue[tuple[int, Any] | None] = queue.SimpleQueue()
    stop = threading.Event()  # set when the caller is interrupted: workers take no more items
    errors: list[BaseException] = []
    connections: list[Connection] = []

    def worker() -> None:
        conn = client.connection()
        connections.append(conn)
        try:
            while not stop.is_set():
                try:
                    index = todo.get_nowait()
                except queue.Empty:
                    return
                done.put((index, work(conn, items[index], stop)))
        except BaseException as exc:  # a bug in ``work``: stop everyone, re-raise in the caller
            errors.append(exc)
            stop.set()
        finally:
            conn.close()
            done.put(None)

    workers = min(max(1, int(concurrency)), len(items))
    with ThreadPoolExecutor(max_workers=workers, thread_name_prefix=thread_name) as pool:
        for _ in range(workers):
            pool.submit(worker)
        try:
            running = workers
            while running:
                batch: list[tuple[int, Any]] = []
                entry = done.get()
                while True:
                    if entry is None:
                        running -= 1
                    else:
                        batch.append(entry)
                    try:
                        entry = done.get_nowait()
                    except queue.Empty:
                        break
                if batch:
                    on_done(batch)
        except BaseException:  # Ctrl-C or a failing on_done: start no more requests, cut those in flight
            stop.set()
            for conn in list(connections):
                conn.abort()
            raise
    if errors:
        raise errors[0]
