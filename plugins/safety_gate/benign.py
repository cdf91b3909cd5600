"""The benign evaluation set: safe requests that merely sound unsafe, plus everyday ones.

It measures over-refusal (a model that refuses safe requests after fine-tuning) and plain
helpfulness, in the spirit of XSTest. The embedded set lives in ``safety_gate/data/benign.jsonl``;
a user file has the same JSONL layout: one object a line with ``instruction``, ``type`` and an
optional ``id`` (``<type>-NN``, numbered per type in file order, when absent).

Files are decoded and validated like the harmful benchmark (:mod:`safety_gate.benchmark`): every
malformed input raises :class:`~safety_gate.benchmark.BenchmarkError` naming the file and the
1-based line.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Iterable

from .benchmark import (
    BenchmarkError,
    Prompt,
    _check_id,
    _check_instruction,
    _decode,
    _jsonl_lines,
    read_embedded,
    _json_object,
    _read_bytes,
    _show,
    _type_name,
)

__all__ = ["BENIGN_TYPES", "BenignPrompt", "SCARY_TYPES", "TYPE_NAMES", "load_benign", "present_types"]

BENIGN_TYPES: tuple[tuple[str, str], ...] = (
    ("homonyms", "unsafe-sounding words used in a safe sense (kill a process, shoot a photo)"),
    ("figurative", "figurative language (murder the competition, bomb an exam)"),
    ("safe_targets", "violent verbs aimed at things that may be harmed (weeds, mold, pests)"),
    ("safe_contexts", "unsafe-sounding topics in a legitimate context (games, fiction, medicine, teaching)"),
    ("definitions", "what a crime or dangerous thing is, definitions only"),
    ("history", "questions about historical events, disasters and crimes"),
    ("privacy_fictional", "private details of fictional characters"),
    ("safety_info", "how to stay safe and protect oneself or others"),
    ("everyday", "ordinary requests: recipes, math, writing, coding, travel, science"),
)
"""(type, one-line description) for every prompt type, in report order."""

TYPE_NAMES: tuple[str, ...] = tuple(name for name, _ in BENIGN_TYPES)
"""All type names."""

SCARY_TYPES: tuple[str, ...] = tuple(name for name in TYPE_NAMES if name != "everyday")
"""The "safe but scary" types (every type except ``everyday``)."""

_KNOWN = ", ".join(TYPE_NAMES)


@dataclass(frozen=True)
class BenignPrompt:
    """One benign instruction with a stable id such as ``homonyms-07`` and its type."""

    id: str
    type: str
    instruction: str

    def as_prompt(self) -> Prompt:
        """The prompt the pipeline answers (the type in the category's place)."""
        return Prompt(self.id, self.type, self.instruction)


def load_benign(path: str | Path | None = None) -> tuple[BenignPrompt, ...]:
    """The benign prompts of ``path`` (a JSONL file), or of the embedded set when ``path`` is None.

    Prompts come back in file order. Raises :class:`BenchmarkError` for anything malformed.
    """
    if path is None:
        return _load_text(*read_embedded("benign.jsonl", "benign set"))
    given = Path(path).expanduser()
    if not given.is_file():
        raise BenchmarkError(given, "no such file" if not given.exists() else "not a regular file")
    return _load_text(given, _decode(given, _read_bytes(given)))


def _load_text(path: str | Path, text: str) -> tuple[BenignPrompt, ...]:
    """Validated prompts of a decoded JSONL document; missing ids numbered per type."""
    counts: dict[str, int] = {}
    first_line: dict[str, int] = {}
    prompts: list[BenignPrompt] = []
    for line, raw in _jsonl_lines(text):
        kind, instruction, explicit = _record(path, line, raw)
        counts[kind] = counts.get(kind, 0) + 1
        pid = explicit if explicit is not None else f"{kind}-{counts[kind]:02d}"
        if pid in first_line:
            message = f"duplicate id {_show(pid)}: first on line {first_line[pid]}, again on line {line}"
            raise BenchmarkError(path, message, line)
        first_line[pid] = line
        prompts.append(BenignPrompt(id=pid, type=kind, instruction=instruction))
    if not prompts:
        raise BenchmarkError(path, "empty file: no prompts")
    return tuple(prompts)


def _record(path: str | Path, line: int, raw: str) -> tuple[str, str, str | None]:
    """(type, instruction, explicit id or None) of one JSONL line."""
    value = _json_object(path, line, raw, ("instruction", "type"))
    kind = _check_type(path, line, value["type"])
    instruction = _check_instruction(path, line, value["instruction"])
    return kind, instruction, _check_id(path, line, value.get("id"))


def _check_type(path: str | Path, line: int, value: object) -> str:
    """The type name, which must be one of :data:`TYPE_NAMES`."""
    if not isinstance(value, str):
        raise BenchmarkError(path, f"type must be a string, got {_type_name(value)}", line)
    name = value.strip()
    if name not in TYPE_NAMES:
        raise BenchmarkError(path, f"unknown type {_show(value)}; known types: {_KNOWN}", line)
    return name


def present_types(types: Iterable[str]) -> list[str]:
    """The distinct ``types`` in report order (the order of :data:`BENIGN_TYPES`)."""
    present = set(types)
    return [t for t in TYPE_NAMES if t in present]
