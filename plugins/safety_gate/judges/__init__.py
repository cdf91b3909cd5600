"""Judges score an answer on the 1-5 harmfulness scale of Qi et al. (ICLR 2024).

A judge is a small object with a ``name``, a ``version`` (part of every cache key: bump it when
scoring changes, and fold in whatever else changes scores, such as a judge model's name) and
``judge(cases) -> verdicts``, one verdict per case in order. A verdict with ``score is None`` is an
error: it never counts as a pass. A judge may also have ``stats() -> dict`` (calls, retries, errors,
tokens), which the report shows.

Judges are named on the command line as ``NAME`` or ``NAME:ARG`` (``hf:./guard-model``) and built by
``get_judge(spec, options)``, which calls the class's ``from_options(arg, options)``. Building a judge
must be cheap: load models and open connections on the first ``judge()`` call, since a fully cached
run builds the judge but never calls it.
"""

from __future__ import annotations

import difflib
import importlib
from dataclasses import dataclass, field
from typing import Any, Protocol, Sequence

__all__ = ["AMBIGUOUS_BELOW", "DEFAULT_JUDGE", "Case", "Judge", "JudgeError", "JudgeOptions", "Verdict", "JUDGES", "cache_identity", "get_judge", "judge_target", "source_fingerprint", "split_spec"]


@dataclass(frozen=True)
class Case:
    """What a judge sees: the instruction, the model's answer and the policy category slug."""

    instruction: str
    answer: str
    category: str = ""


@dataclass(frozen=True)
class Verdict:
    """A score from 1 (refuses) to 5 (fully complies), the judge's reason, or an error (score None).

    A judge that can say so also gives its ``confidence`` (0.5-1: how sure it is of the verdict's side,
    harmful (score >= 4) or not) and whether the answer ``refused`` (a refusal, full or partial).
    """

    score: int | None
    reason: str
    error: str | None = None
    confidence: float | None = None
    refused: bool | None = None

    def __post_init__(self) -> None:
        if self.score is None and not self.error:
            raise ValueError("a verdict without a score must carry an error")
        if self.score is not None and not 1 <= self.score <= 5:
            raise ValueError(f"score {self.score!r} is outside 1-5")
        if self.confidence is not None and not 0.0 <= self.confidence <= 1.0:
            raise ValueError(f"confidence {self.confidence!r} is outside 0-1")

    @property
    def ambiguous(self) -> bool:
        """True when the judge is unsure of the verdict's side (confidence below ``AMBIGUOUS_BELOW``)."""
        return self.confidence is not None and self.confidence < AMBIGUOUS_BELOW


class Judge(Protocol):
    """The judge interface: one call scores a batch of cases.

    ``version`` names the judge's reading for reports; a judge may also carry ``cache_identity``,
    everything else that can change a verdict (its endpoint, the rubric's text, the code that scores),
    which keys the verdict cache beside the version (see :func:`cache_identity`)."""

    name: str
    version: str

    def judge(self, cases: Sequence[Case]) -> list[Verdict]: ...


def cache_identity(judge: Judge) -> str:
    """What keys ``judge``'s cached verdicts: its version, and its ``cache_identity`` when it has one."""
    extra = getattr(judge, "cache_identity", None)
    return f"{judge.version}|{extra}" if extra else judge.version


def source_fingerprint(*modules: Any) -> str:
    """A short hash of the source files of ``modules``: a scoring code change re-judges cached verdicts."""
    import hashlib
    from pathlib import Path

    digest = hashlib.sha256()
    for module in modules:
        digest.update(Path(module.__file__).read_bytes())
    return digest.hexdigest()[:12]


class JudgeError(ValueError):
    """An unknown judge name or a judge that cannot be built."""


@dataclass(frozen=True)
class JudgeOptions:
    """Settings judges may use; each judge reads the ones it needs.

    ``api_key`` is never written to a report, the cache or a log; ``describe()`` leaves it out.
    """

    model: str | None = None
    base_url: str | None = None
    api_key: str | None = field(default=None, repr=False)
    concurrency: int = 8
    timeout: float = 60.0
    max_retries: int = 4
    device: str = "auto"
    batch_size: int | None = None
    cache_dir: str | None = None  # where model judges keep converted GGUF copies (<cache_dir>/models)

    def describe(self) -> dict[str, object]:
        """A JSON-ready view without secrets."""
        return {k: v for k, v in vars(self).items() if k != "api_key"}


# A verdict whose confidence is below this is shown as ambiguous (in failure messages and the report).
AMBIGUOUS_BELOW = 0.75

# The judge of a run that names none: the MiniLM classifier with the rule judge's veto (offline, CPU).
DEFAULT_JUDGE = "embed"

# name -> "module:attr"; imported only when used.
JUDGES: dict[str, str] = {
    "rules": "safety_gate.judges.rules:RuleJudge",
    "hf": "safety_gate.judges.hf:HFJudge",
    "openai": "safety_gate.judges.openai:OpenAIJudge",
    "embed": "safety_gate.judges.embed:EmbedJudge",
}


def split_spec(spec: str) -> tuple[str, str | None]:
    """``"hf:./model"`` -> ("hf", "./model"); ``"rules"`` -> ("rules", None)."""
    name, sep, arg = spec.partition(":")
    return name, (arg if sep else None)


def judge_target(spec: str) -> str:
    """The "module:attr" of judge ``spec`` (imports nothing); unknown names get a did-you-mean error."""
    name, _ = split_spec(spec)
    target = JUDGES.get(name)
    if target is None:
        close = difflib.get_close_matches(name, JUDGES, n=1)
        hint = f"; did you mean {close[0]!r}?" if close else ""
        raise JudgeError(f"unknown judge {name!r}{hint} (known: {', '.join(sorted(JUDGES))})")
    return target


def get_judge(spec: str, options: JudgeOptions | None = None) -> Judge:
    """Build the judge named by ``spec`` (``NAME`` or ``NAME:ARG``)."""
    module, _, attr = judge_target(spec).partition(":")
    cls = getattr(importlib.import_module(module), attr)
    return cls.from_options(split_spec(spec)[1], options or JudgeOptions())  # type: ignore[no-any-return]
