"""OpenAIJudge against a real local HTTP server (tests/openai_server.py) with injected faults."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Iterator

import pytest

from openai_server import FakeOpenAI, Fault
from safety_gate.judges import Case, JudgeError, JudgeOptions, get_judge
from safety_gate.judges.openai import OpenAIJudge, backoff_delay, excerpt, retry_after_seconds
from safety_gate.judges.rubric import RUBRIC_VERSION

KEY = "sk-test-0123456789abcdefSECRET"
REFUSAL = "I can't help with that."
COMPLIANCE = "Sure, here is how to do it. Step 1: gather what you need."


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI() as srv:
        yield srv


def make_judge(server: FakeOpenAI, **kwargs: Any) -> OpenAIJudge:
    """A judge on ``server`` with fast backoff (tests must not sleep for seconds)."""
    options: dict[str, Any] = {"base_url": server.base_url, "concurrency": 4, "timeout": 2.0, "max_retries": 3,
                               "backoff_base": 0.01, "backoff_cap": 0.05}
    options.update(kwargs)
    return OpenAIJudge("judge-model", **options)


def cases(n: int) -> list[Case]:
    """``n`` cases alternating refusal (score 1) and compliance (score 5)."""
    return [Case(f"Instruction number {i}.", REFUSAL if i % 2 == 0 else COMPLIANCE, "malware") for i in range(n)]


def expected(n: int) -> list[int]:
    return [1 if i % 2 == 0 else 5 for i in range(n)]


# --- the happy path and the request itself --------------------------------------------------------


def test_scores_and_request_shape(server: FakeOpenAI) -> None:
    judge = make_judge(server, api_key=KEY)
    verdicts = judge.judge(cases(4))
    assert [v.score for v in verdicts] == expected(4)
    assert all(v.error is None for v in verdicts)
    assert verdicts[0].reason == "The assistant refuses."
    requests = server.requests
    assert len(requests) == 4
    for req in requests:
        assert req.path == "/v1/chat/completions"
        assert req.headers["Authorization"] == f"Bearer {KEY}"
        assert req.headers["Content-Type"] == "application/json"
        assert req.body["model"] == "judge-model"
        assert req.body["temperature"] == 0
        assert set(req.body) == {"model", "messages", "temperature"}
        assert [m["role"] for m in req.body["messages"]] == ["system", "user"]
    user_messages = sorted(r.body["messages"][1]["content"] for r in requests)
    assert any("Instruction number 1." in m and COMPLIANCE in m for m in user_messages)
    stats = judge.stats()
    assert stats["calls"] == 4 and stats["retries"] == 0 and stats["errors"] == 0 and stats["reasks"] == 0
    assert stats["prompt_tokens"] > 0 and stats["completion_tokens"] > 0


def test_no_key_sends_no_authorization(server: FakeOpenAI) -> None:
    judge = make_judge(server, api_key=None)
    assert [v.score for v in judge.judge(cases(2))] == [1, 5]
    assert all("Authorization" not in r.headers for r in server.requests)


def test_empty_input_and_blank_answer(server: FakeOpenAI) -> None:
    judge = make_judge(server)
    assert judge.judge([]) == []
    [verdict] = judge.judge([Case("Do X.", "   ")])
    assert verdict.score is None and verdict.error == "empty answer"
    assert server.requests == []


def test_order_preserved_under_concurrency(server: FakeOpenAI) -> None:
    # Scores depend on the case; varied latency makes requests finish out of order.
    server.score_fn = lambda instruction, answer: int(instruction.split()[-1].rstrip(".")) % 5 + 1
    server.latency = 0.01
    items = [Case(f"Case {i}.", COMPLIANCE) for i in range(40)]
    verdicts = make_judge(server, concurrency=8).judge(items)
    assert [v.score for v in verdicts] == [i % 5 + 1 for i in range(40)]


def test_concurrency_is_used_and_bounded(server: FakeOpenAI) -> None:
    server.latency = 0.2
    verdicts = make_judge(server, concurrency=16).judge(cases(32))
    assert [v.score for v in verdicts] == expected(32)
    # 16 workers each hold a request for 0.2 s: the server sees them all at once, never more.
    assert 12 <= server.max_in_flight <= 16
    assert len(server.requests) == 32


def test_keep_alive_connections_are_reused(server: FakeOpenAI) -> None:
    make_judge(server, concurrency=2).judge(cases(10))
    # Each worker keeps one connection for the whole call: 10 requests arrive on at most 2 client ports.
    assert len(server.requests) == 10
    assert len({r.client_port for r in server.requests}) <= 2


# --- faults ---------------------------------------------------------------------------------------


def test_timeout_is_retried(server: FakeOpenAI) -> None:
    server.push(Fault.sleep(1.0))
    judge = make_judge(server, timeout=0.2)
    [verdict] = judge.judge(cases(1))
    assert verdict.score == 1 and verdict.error is None
    assert judge.stats()["calls"] == 2 and judge.stats()["retries"] == 1


def test_429_retry_after_is_honoured(server: FakeOpenAI) -> None:
    server.push(Fault.http(429, retry_after="1"))
    judge = make_judge(server)  # backoff 0.01 s: only Retry-After explains a 1 s wait
    started = time.monotonic()
    [verdict] = judge.judge(cases(1))
    elapsed = time.monotonic() - started
    assert verdict.score == 1
    first, second = server.requests
    assert 0.9 <= second.at - first.at < 2.0
    assert 0.9 <= elapsed < 3.0
    assert judge.stats()["retries"] == 1


def test_429_without_retry_after_uses_backoff(server: FakeOpenAI) -> None:
    server.push(Fault.http(429))
    judge = make_judge(server)
    started = time.monotonic()
    assert judge.judge(cases(1))[0].score == 1
    assert time.monotonic() - started < 0.5


def test_500_is_retried(server: FakeOpenAI) -> None:
    server.push(Fault.http(500), Fault.http(503))
    judge = make_judge(server)
    [verdict] = judge.judge(cases(1))
    assert verdict.score == 1
    assert judge.stats()["calls"] == 3 and judge.stats()["retries"] == 2


def test_malformed_json_is_retried(server: FakeOpenAI) -> None:
    server.push(Fault.bad_json(), Fault.bad_json('{"choices": []}'), Fault.bad_json('{"choices": [{"message": {}}]}'))
    judge = make_judge(server)
    [verdict] = judge.judge(cases(1))
    assert verdict.score == 1
    assert judge.stats()["retries"] == 3


def test_dropped_connection_is_retried(server: FakeOpenAI) -> None:
    server.push(Fault.drop(), Fault.drop())
    judge = make_judge(server)
    assert judge.judge(cases(1))[0].score == 1


def test_stale_keep_alive_connection_is_reopened_silently(server: FakeOpenAI) -> None:
    server.push(Fault.reply_then_close(), Fault.reply_then_close())
    judge = make_judge(server, concurrency=1)
    assert [v.score for v in judge.judge(cases(4))] == expected(4)
    assert judge.stats()["retries"] == 0 and judge.stats()["calls"] == 4
    assert len({r.client_port for r in server.requests}) == 3


def test_unparsable_score_is_asked_again(server: FakeOpenAI) -> None:
    server.push(Fault.reply("I think this answer is quite harmful."))
    judge = make_judge(server)
    [verdict] = judge.judge(cases(1))
    assert verdict.score == 1 and verdict.error is None
    assert judge.stats()["reasks"] == 1 and judge.stats()["calls"] == 2


def test_markdown_score_is_read(server: FakeOpenAI) -> None:
    server.push(Fault.reply("The assistant gave partial instructions.\nScore: **4**"))
    [verdict] = make_judge(server).judge(cases(1))
    assert verdict.score == 4
    assert verdict.reason == "The assistant gave partial instructions."


def test_persistent_unparsable_score_is_an_error(server: FakeOpenAI) -> None:
    server.always = Fault.reply("#thereason: unsure.\n#thescore: 7")
    judge = make_judge(server)
    [verdict] = judge.judge(cases(1))
    assert verdict.score is None
    assert verdict.error is not None and verdict.error.startswith("judge output had no score: ")
    assert "#thescore: 7" in verdict.error
    assert judge.stats() | {"prompt_tokens": 0, "completion_tokens": 0} == {
        "calls": 3, "retries": 0, "errors": 1, "reasks": 2, "prompt_tokens": 0, "completion_tokens": 0}


def test_persistent_500_is_an_error_after_max_retries(server: FakeOpenAI) -> None:
    server.always = Fault.http(500, body='{"error": "overloaded"}')
    judge = make_judge(server, max_retries=2)
    verdicts = judge.judge(cases(3))
    assert all(v.score is None for v in verdicts)
    assert all("HTTP 500" in (v.error or "") and "overloaded" in (v.error or "") and "3 attempts" in (v.error or "")
               for v in verdicts)
    assert len(server.requests) == 9
    assert judge.stats()["calls"] == 9 and judge.stats()["retries"] == 6 and judge.stats()["errors"] == 3


def test_4xx_is_not_retried(server: FakeOpenAI) -> None:
    server.push(Fault.http(404, body='{"error": {"message": "model judge-model does not exist"}}'))
    judge = make_judge(server)
    verdicts = judge.judge(cases(2))
    failed = [v for v in verdicts if v.score is None]
    assert len(failed) == 1 and "HTTP 404" in (failed[0].error or "") and "does not exist" in (failed[0].error or "")
    assert len(server.requests) == 2 and judge.stats()["retries"] == 0


def test_one_bad_case_does_not_fail_the_batch(server: FakeOpenAI) -> None:
    server.push(Fault.http(400))
    verdicts = make_judge(server, concurrency=1).judge(cases(5))
    assert verdicts[0].score is None and [v.score for v in verdicts[1:]] == expected(5)[1:]


def test_unreachable_server_is_an_error_verdict() -> None:
    with FakeOpenAI() as srv:
        url = srv.base_url
    judge = OpenAIJudge("m", base_url=url, timeout=0.5, max_retries=1, backoff_base=0.01)
    [verdict] = judge.judge(cases(1))
    assert verdict.score is None and "connection error" in (verdict.error or "")
    assert judge.stats()["calls"] == 2


# --- the key never leaks ------------------------------------------------------------------------


def test_api_key_never_leaks(server: FakeOpenAI) -> None:
    echo = f'{{"error": {{"message": "Incorrect API key provided: {KEY}"}}}}'
    server.push(Fault.http(401, body=echo), Fault.http(500, body=echo), Fault.reply(f"#thereason: key {KEY}\n#thescore: 2"))
    server.always = Fault.http(503, body=echo)
    judge = make_judge(server, api_key=KEY, concurrency=1, max_retries=1)
    verdicts = judge.judge(cases(3))
    assert any("HTTP 401" in (v.error or "") for v in verdicts)
    text = json.dumps([vars(v) for v in verdicts]) + json.dumps(judge.stats()) + repr(judge) + str(judge.describe())
    text += judge.version + repr(JudgeOptions(api_key=KEY)) + json.dumps(JudgeOptions(api_key=KEY).describe())
    assert KEY not in text
    assert "[redacted]" in text
    assert all(r.headers.get("Authorization") == f"Bearer {KEY}" for r in server.requests)


def test_key_not_in_exceptions_or_repr() -> None:
    judge = OpenAIJudge("m", base_url="http://user:pw@127.0.0.1:9/v1", api_key=KEY, timeout=0.2, max_retries=0)
    assert KEY not in repr(judge) and "pw" not in repr(judge)
    [verdict] = judge.judge(cases(1))
    assert verdict.score is None and KEY not in (verdict.error or "") and "user:pw" not in (verdict.error or "")
    with pytest.raises(JudgeError) as info:
        OpenAIJudge("m", base_url="ftp://x", api_key=KEY)
    assert KEY not in str(info.value)
    with pytest.raises(JudgeError) as info:
        OpenAIJudge("m", base_url="http://user:pw@host:bad/v1", api_key=KEY)
    assert "user:pw" not in str(info.value) and "host:bad" in str(info.value)


# --- building the judge -------------------------------------------------------------------------


def test_get_judge_with_model_in_spec(server: FakeOpenAI) -> None:
    judge = get_judge("openai:some-model", JudgeOptions(base_url=server.base_url, concurrency=3, timeout=5, max_retries=1))
    assert isinstance(judge, OpenAIJudge)
    assert judge.name == "openai" and judge.version == f"{RUBRIC_VERSION}:some-model"
    assert judge.concurrency == 3 and judge.timeout == 5 and judge.max_retries == 1
    assert [v.score for v in judge.judge(cases(2))] == [1, 5]
    assert server.requests[0].body["model"] == "some-model"


def test_model_from_options_and_defaults() -> None:
    judge = get_judge("openai", JudgeOptions(model="gpt-x"))
    assert isinstance(judge, OpenAIJudge)
    assert judge.model == "gpt-x" and judge.base_url == "https://api.openai.com/v1"
    assert judge.version != get_judge("openai:gpt-y").version


def test_missing_model_is_a_judge_error() -> None:
    with pytest.raises(JudgeError, match="needs a model"):
        get_judge("openai", JudgeOptions(base_url="http://127.0.0.1:1/v1"))


@pytest.mark.parametrize("url", ["not a url", "ftp://host/v1", "http://host:notaport/v1"])
def test_bad_base_url_is_a_judge_error(url: str) -> None:
    with pytest.raises(JudgeError):
        get_judge("openai:m", JudgeOptions(base_url=url))


def test_full_endpoint_url_is_accepted(server: FakeOpenAI) -> None:
    judge = make_judge(server, base_url=server.base_url + "/chat/completions/")
    assert judge.judge(cases(1))[0].score == 1
    assert server.requests[0].path == "/v1/chat/completions"


def test_construction_is_cheap() -> None:
    # No connection is opened before judge(): a port nobody listens on is fine to build with.
    judge = get_judge("openai:m", JudgeOptions(base_url="http://127.0.0.1:9/v1"))
    assert judge.stats()["calls"] == 0


# --- pure helpers -------------------------------------------------------------------------------


def test_backoff_delay_grows_and_is_capped() -> None:
    delays = [backoff_delay(n, rand=lambda: 0.0) for n in range(1, 8)]
    assert delays[:4] == [0.5, 1.0, 2.0, 4.0] and max(delays) == 8.0
    assert 0.5 <= backoff_delay(1, rand=lambda: 1.0) <= 0.55


@pytest.mark.parametrize(
    ("headers", "seconds"),
    [
        ({"retry-after": "1"}, 1.0),
        ({"retry-after": " 2.5 "}, 2.5),
        ({"retry-after": "3600"}, 60.0),
        ({"retry-after": "-1"}, None),
        ({"retry-after": "soon"}, None),
        ({"retry-after-ms": "250", "retry-after": "9"}, 0.25),
        ({}, None),
        ({"retry-after": "Wed, 21 Oct 2015 07:28:10 GMT"}, 0.0),
    ],
)
def test_retry_after_seconds(headers: dict[str, str], seconds: float | None) -> None:
    assert retry_after_seconds(headers) == seconds


def test_retry_after_http_date_in_the_future() -> None:
    import email.utils

    now = 1_700_000_000.0
    date = email.utils.formatdate(now + 5, usegmt=True)
    assert retry_after_seconds({"retry-after": date}, now=lambda: now) == pytest.approx(5.0)


def test_excerpt() -> None:
    assert excerpt("a\n  b") == "a b"
    assert len(excerpt("x" * 1000)) == 200 and excerpt("x" * 1000).endswith("...")


# --- end to end: the plugin with --judge=openai against the local server -----------------------

FAST = ["--max-new-tokens=6", "--benign=none", "-p", "no:cacheprovider", "-W", "ignore::pytest.PytestAssertRewriteWarning"]


def test_plugin_end_to_end(pytester: pytest.Pytester, tiny_model: Path, sample_jsonl: Path, server: FakeOpenAI,
                           monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("OPENAI_API_KEY", KEY)
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    server.push(Fault.http(500))
    args = ["--pyargs", "safety_tests", *FAST, f"--model={tiny_model}", f"--benchmark={sample_jsonl}",
            "--judge=openai", "--judge-model=m", f"--judge-base-url={server.base_url}", "--judge-concurrency=4"]
    result = pytester.runpytest(*args)
    # The tiny model writes random tokens, which the server scores 5: every prompt fails.
    result.stdout.fnmatch_lines([
        f"model {tiny_model} (hf), judge openai v{RUBRIC_VERSION}:m, benchmark sample.jsonl: 11 prompts",
        "*verdicts: 0 cached, 11 judged",
        "judge: calls 12, retries 1, errors 0, reasks 0, prompt_tokens *, completion_tokens *",
        "safety gate: FAILED*",
    ])
    assert result.ret == pytest.ExitCode.TESTS_FAILED
    assert len(server.requests) == 12
    assert all(r.body["model"] == "m" and r.headers["Authorization"] == f"Bearer {KEY}" for r in server.requests)
    report = pytester.path / "reports" / "safety-report.json"
    data = json.loads(report.read_text())
    assert data["judge"]["name"] == "openai" and data["judge"]["version"] == f"{RUBRIC_VERSION}:m"
    stats = data["judge"]["stats"]
    assert stats["calls"] == 12 and stats["retries"] == 1 and stats["errors"] == 0 and stats["prompt_tokens"] > 0
    assert data["overall"]["n"] == 11 and data["overall"]["n_errors"] == 0
    assert data["score_histogram"].get("5") == 11
    for path in (report, report.with_suffix(".html")):
        assert KEY not in path.read_text()
    # A rerun is fully cached: the judge is built but never asked.
    again = pytester.runpytest(*args)
    again.stdout.fnmatch_lines(["*verdicts: 11 cached, 0 judged"])
    assert len(server.requests) == 12


def test_another_endpoint_rejudges_instead_of_reading_the_cache(
    pytester: pytest.Pytester, tiny_model: Path, sample_jsonl: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 21's silent pass: a run against a server that scores everything 1, then the same command
    # against one that scores everything 5, must judge again (and fail), not pass from the cache.
    monkeypatch.delenv("OPENAI_BASE_URL", raising=False)
    monkeypatch.delenv("OPENAI_API_KEY", raising=False)
    args = ["--pyargs", "safety_tests", *FAST, f"--model={tiny_model}", f"--benchmark={sample_jsonl}",
            "--judge=openai", "--judge-model=m"]
    with FakeOpenAI(score_fn=lambda instruction, answer: 1) as lenient:
        first = pytester.runpytest(*args, f"--judge-base-url={lenient.base_url}")
        first.stdout.fnmatch_lines(["*verdicts: 0 cached, 11 judged"])
        assert first.ret == pytest.ExitCode.OK
    with FakeOpenAI(score_fn=lambda instruction, answer: 5) as strict:
        second = pytester.runpytest(*args, f"--judge-base-url={strict.base_url}")
        second.stdout.fnmatch_lines(["*verdicts: 0 cached, 11 judged", "safety gate: FAILED*"])
        assert second.ret == pytest.ExitCode.TESTS_FAILED
        assert len(strict.requests) == 11
    with FakeOpenAI(score_fn=lambda instruction, answer: 1) as same_again:
        # Same endpoint address as neither (a new port): judged again; the old verdicts stay stored.
        third = pytester.runpytest(*args, f"--judge-base-url={same_again.base_url}")
        third.stdout.fnmatch_lines(["*verdicts: 0 cached, 11 judged"])


def test_cache_identity_names_endpoint_and_rubric() -> None:
    from safety_gate.judges import cache_identity
    from safety_gate.judges.rubric import RUBRIC_FINGERPRINT

    a = OpenAIJudge("m", base_url="http://127.0.0.1:9/v1")
    b = OpenAIJudge("m", base_url="http://127.0.0.1:10/v1")
    assert a.version == b.version  # the report's name of the reading is the same ...
    assert cache_identity(a) != cache_identity(b)  # ... but the verdicts are keyed apart
    assert RUBRIC_FINGERPRINT in cache_identity(a)
