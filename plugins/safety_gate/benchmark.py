"""Prompt sets: the embedded 330-instruction benchmark and loaders for HEx-PHI folders, JSONL and CSV.

Every loader decodes files itself as strict UTF-8 (a leading UTF-8 byte-order mark is accepted) and
turns every malformed input into a :class:`BenchmarkError` that names the file and, where it
applies, the 1-based physical line (for CSV, the line the bad row starts on). Line breaks are
``\\r\\n``, ``\\n`` or a bare ``\\r`` everywhere, as in Python's universal newlines.

Prompts always come back in the canonical category order of :data:`~safety_gate.categories.CATEGORIES`,
stable within a category.
"""

from __future__ import annotations

import csv
import io
import json
import re
from dataclasses import dataclass, field
from importlib.resources import files
from pathlib import Path
from typing import Any, Iterable, Iterator

from .categories import CATEGORIES, Category, category_by_name

__all__ = ["Benchmark", "BenchmarkError", "Prompt", "first_of_each", "load_benchmark", "load_embedded", "read_embedded"]


@dataclass(frozen=True)
class Prompt:
    """One benchmark instruction with a stable id such as ``malware-07`` and its category slug.

    ``system``: this prompt's own system prompt, used instead of ``--system-prompt`` where set (a
    trigger placed in the system prompt); None for every loaded benchmark prompt."""

    id: str
    category: str
    instruction: str
    system: str | None = None


@dataclass(frozen=True)
class Benchmark:
    """A loaded prompt set. ``notes`` holds facts the user should see (e.g. a missing category file)."""

    name: str
    source: str
    prompts: tuple[Prompt, ...]
    notes: tuple[str, ...] = field(default=())


class BenchmarkError(ValueError):
    """A malformed prompt set; the message names the file and, where known, the line."""

    def __init__(self, path: str | Path, message: str, line: int | None = None) -> None:
        self.path = str(path)
        self.line = line
        where = f"{self.path}:{line}" if line is not None else self.path
        super().__init__(f"{where}: {message}")


# Values of ``load_benchmark(path)`` that mean the built-in set.
EMBEDDED_NAMES: frozenset[str] = frozenset({"embedded", "default"})

_UTF8_BOM = b"\xef\xbb\xbf"
_UTF16_BOMS = (b"\xff\xfe", b"\xfe\xff")
_LINE_BREAK = re.compile(r"\r\n|\r|\n")
_LINE_BREAK_BYTES = re.compile(rb"\r\n|\r|\n")
_HEXPHI_FILE = re.compile(r"category_([0-9]+)\.csv")
_ORDER: dict[str, int] = {c.slug: i for i, c in enumerate(CATEGORIES)}
_BY_NUMBER: dict[int, Category] = {c.number: c for c in CATEGORIES}
_VALID_SLUGS = ", ".join(c.slug for c in CATEGORIES)
_SHOW_LIMIT = 60


@dataclass(frozen=True)
class _Record:
    """A validated row before ids are assigned: where it came from and what it holds."""

    line: int
    category: Category
    instruction: str
    id: str | None


# --------------------------------------------------------------------------- public loaders


def read_embedded(name: str, what: str) -> tuple[str, str]:
    """(label, decoded text) of the package data file ``safety_gate/data/<name>``; ``what`` names it
    in the error a missing or unreadable file raises."""
    resource = files("safety_gate") / "data" / name
    label = str(resource)
    if not resource.is_file():
        raise BenchmarkError(label, f"the embedded {what} data file is missing; reinstall safety-gate")
    try:
        data = resource.read_bytes()
    except OSError as exc:
        raise BenchmarkError(label, f"cannot read the embedded {what}: {_os_reason(exc)}") from None
    return label, _decode(label, data)


def first_of_each(prompts: Iterable[Prompt], per_group: int | None) -> list[Prompt]:
    """The first ``per_group`` prompts of each category (in order); all of them when None."""
    seen: dict[str, int] = {}
    picked = []
    for prompt in prompts:
        seen[prompt.category] = seen.get(prompt.category, 0) + 1
        if per_group is None or seen[prompt.category] <= per_group:
            picked.append(prompt)
    return picked


def load_embedded() -> Benchmark:
    """The built-in benchmark: ``safety_gate/data/benchmark.jsonl``, validated like any JSONL file."""
    label, text = read_embedded("benchmark.jsonl", "benchmark")
    return Benchmark(name="embedded", source="embedded", prompts=_load_jsonl_text(label, text))


def load_benchmark(path: str | Path | None) -> Benchmark:
    """Load a prompt set.

    ``None``, ``"embedded"`` or ``"default"`` give :func:`load_embedded`. Otherwise ``path`` is a
    HEx-PHI folder (``category_1.csv`` ... ``category_11.csv``, one instruction per row, no header),
    a ``.jsonl`` file (objects with ``instruction``, ``category`` and optional ``id``) or a ``.csv``
    file with a header naming ``instruction``, ``category`` and optionally ``id``.

    Raises :class:`BenchmarkError` for anything malformed.
    """
    if path is None or (isinstance(path, str) and path in EMBEDDED_NAMES):
        return load_embedded()
    if isinstance(path, str) and not path.strip():
        raise BenchmarkError(repr(path), "empty benchmark path (use 'embedded' for the built-in set)")
    given = Path(path).expanduser()
    kind = _classify(given)
    resolved = given.resolve()
    name = given.name or resolved.name or str(resolved)
    notes: tuple[str, ...] = ()
    if kind == "folder":
        prompts, notes = _load_hexphi(given)
    else:
        text = _decode(given, _read_bytes(given))
        prompts = _load_jsonl_text(given, text) if kind == "jsonl" else _load_csv_text(given, text)
    return Benchmark(name=name, source=str(resolved), prompts=prompts, notes=notes)


# --------------------------------------------------------------------------- paths and bytes


def _classify(path: Path) -> str:
    """``"folder"``, ``"jsonl"`` or ``"csv"``; a BenchmarkError for a missing or unsupported path."""
    try:
        exists, is_dir, is_file = path.exists(), path.is_dir(), path.is_file()
    except OSError as exc:
        raise BenchmarkError(path, f"cannot access: {_os_reason(exc)}") from None
    if not exists:
        hint = " (use 'embedded' for the built-in set)" if str(path).lower() in EMBEDDED_NAMES else ""
        raise BenchmarkError(path, f"no such file or folder{hint}")
    if is_dir:
        return "folder"
    suffix = path.suffix.lower()
    if is_file and suffix in (".jsonl", ".csv"):
        return suffix[1:]
    if not is_file:
        what = "(not a regular file)"
    else:
        what = f"'{suffix}'" if suffix else "(no file extension)"
    raise BenchmarkError(
        path, f"unsupported benchmark format {what}: expected a HEx-PHI folder, .jsonl or .csv"
    )


def _read_bytes(path: Path) -> bytes:
    """The file's bytes, or a BenchmarkError saying why they cannot be read."""
    try:
        return path.read_bytes()
    except OSError as exc:
        raise BenchmarkError(path, f"cannot read file: {_os_reason(exc)}") from None


def _os_reason(exc: OSError) -> str:
    """A one-line reason for an OS error, without the path the caller already names."""
    return exc.strerror or str(exc).splitlines()[0]


def _decode(path: str | Path, data: bytes) -> str:
    """Strict UTF-8 text of ``data`` without a leading byte-order mark; errors name line and offset."""
    skip = len(_UTF8_BOM) if data.startswith(_UTF8_BOM) else 0
    try:
        return data[skip:].decode("utf-8")
    except UnicodeDecodeError as exc:
        if data.startswith(_UTF16_BOMS):
            raise BenchmarkError(path, "file is UTF-16 encoded; re-save it as UTF-8", 1) from None
        offset = skip + exc.start
        line, column = _byte_position(data, offset)
        raise BenchmarkError(
            path,
            f"not valid UTF-8 ({exc.reason}): byte 0x{data[offset]:02x} at byte offset {offset} "
            f"(column {column}); re-save the file as UTF-8",
            line,
        ) from None


def _byte_position(data: bytes, offset: int) -> tuple[int, int]:
    """The 1-based (line, byte column) of ``offset`` in ``data``."""
    breaks = list(_LINE_BREAK_BYTES.finditer(data, 0, offset))
    line_start = breaks[-1].end() if breaks else 0
    return len(breaks) + 1, offset - line_start + 1


# --------------------------------------------------------------------------- field validation


def _show(value: object) -> str:
    """A short one-line rendering of a user value for an error message."""
    text = repr(value)
    return text if len(text) <= _SHOW_LIMIT else text[: _SHOW_LIMIT - 3] + "..."


def _type_name(value: object) -> str:
    """How a parsed JSON value reads in a message: ``a number``, ``null``, ``an array``..."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "a boolean"
    if isinstance(value, (int, float)):
        return "a number"
    if isinstance(value, str):
        return "a string"
    if isinstance(value, list):
        return "an array"
    if isinstance(value, dict):
        return "an object"
    return type(value).__name__


def _check_unicode(path: str | Path, line: int, what: str, text: str) -> None:
    """Reject text that cannot be written back as UTF-8 (lone surrogates from ``\\ud800`` escapes)."""
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        message = f"{what} contains a lone surrogate escape (not valid Unicode)"
        raise BenchmarkError(path, message, line) from None


def _check_instruction(path: str | Path, line: int, value: object) -> str:
    """The instruction, which must be a non-blank string."""
    if not isinstance(value, str):
        raise BenchmarkError(path, f"instruction must be a string, got {_type_name(value)}", line)
    if not value.strip():
        raise BenchmarkError(path, "instruction is blank", line)
    _check_unicode(path, line, "instruction", value)
    return value


def _check_category(path: str | Path, line: int, value: object) -> Category:
    """The category a slug, title, alias or number names."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BenchmarkError(path, f"category must be a string, got {_type_name(value)}", line)
    category = category_by_name(str(value))
    if category is None:
        raise BenchmarkError(
            path, f"unknown category {_show(value)}; valid categories: {_VALID_SLUGS} (or their titles)", line
        )
    return category


def _check_id(path: str | Path, line: int, value: object) -> str | None:
    """The explicit id, or None when it is absent, null or blank (one is generated then)."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise BenchmarkError(path, f"id must be a string, got {_type_name(value)}", line)
    text = str(value).strip()
    if not text:
        return None
    if not text.isprintable():
        raise BenchmarkError(path, f"id {_show(text)} must be one line of printable text", line)
    _check_unicode(path, line, "id", text)
    return text


# --------------------------------------------------------------------------- ids and order


def _prompt_id(category: Category, ordinal: int) -> str:
    """The generated id of the ``ordinal``-th (1-based) prompt of a category: ``malware-07``."""
    return f"{category.slug}-{ordinal:02d}"


def _assign_ids(path: str | Path, records: Iterable[_Record]) -> list[Prompt]:
    """Prompts with explicit ids kept and missing ones numbered per category in file order.

    Raises BenchmarkError naming both lines when an id repeats.
    """
    counts: dict[str, int] = {}
    first_line: dict[str, int] = {}
    prompts: list[Prompt] = []
    for record in records:
        slug = record.category.slug
        counts[slug] = counts.get(slug, 0) + 1
        pid = record.id if record.id is not None else _prompt_id(record.category, counts[slug])
        if pid in first_line:
            message = f"duplicate id {_show(pid)}: first on line {first_line[pid]}, again on line {record.line}"
            raise BenchmarkError(path, message, record.line)
        first_line[pid] = record.line
        prompts.append(Prompt(id=pid, category=slug, instruction=record.instruction))
    return prompts


def _canonical(prompts: Iterable[Prompt]) -> tuple[Prompt, ...]:
    """Prompts sorted into the canonical category order, stable within a category."""
    return tuple(sorted(prompts, key=lambda prompt: _ORDER[prompt.category]))


def _require_prompts(path: str | Path, prompts: list[Prompt], why: str = "empty file: no prompts") -> None:
    """Raise when a file yielded no prompts at all."""
    if not prompts:
        raise BenchmarkError(path, why)


# --------------------------------------------------------------------------- JSONL


def _load_jsonl_text(path: str | Path, text: str) -> tuple[Prompt, ...]:
    """Prompts of a JSONL document (already decoded)."""
    records = [_jsonl_record(path, number, raw) for number, raw in _jsonl_lines(text)]
    prompts = _assign_ids(path, records)
    _require_prompts(path, prompts)
    return _canonical(prompts)


def _jsonl_lines(text: str) -> Iterator[tuple[int, str]]:
    """(1-based line number, line) for every non-blank physical line."""
    for number, raw in enumerate(_LINE_BREAK.split(text), start=1):
        if raw.strip():
            yield number, raw


def _parse_json(path: str | Path, line: int, raw: str) -> object:
    """One line's JSON value; invalid JSON becomes a BenchmarkError with the parser's reason."""
    try:
        return json.loads(raw)
    except json.JSONDecodeError as exc:
        raise BenchmarkError(path, f"invalid JSON: {exc.msg} (column {exc.colno})", line) from None
    except (ValueError, RecursionError) as exc:  # e.g. too many digits, too deeply nested
        reason = (str(exc).splitlines() or ["cannot parse"])[0]
        raise BenchmarkError(path, f"invalid JSON: {reason}", line) from None


def _json_object(path: str | Path, line: int, raw: str, required: tuple[str, ...]) -> dict[str, Any]:
    """One JSONL line parsed as an object holding the ``required`` keys (an optional "id" beside)."""
    value = _parse_json(path, line, raw)
    if not isinstance(value, dict):
        raise BenchmarkError(path, f"expected a JSON object, got {_type_name(value)}", line)
    missing = [key for key in required if key not in value]
    if missing:
        keys = " and ".join(f'"{key}"' for key in missing)
        needs = " and ".join(f'"{key}"' for key in required)
        raise BenchmarkError(path, f'missing key {keys}: each line needs {needs} (optional "id")', line)
    return value


def _jsonl_record(path: str | Path, line: int, raw: str) -> _Record:
    """Validate one JSONL line."""
    value = _json_object(path, line, raw, ("instruction", "category"))
    return _Record(
        line=line,
        category=_check_category(path, line, value["category"]),
        instruction=_check_instruction(path, line, value["instruction"]),
        id=_check_id(path, line, value.get("id")),
    )


# --------------------------------------------------------------------------- CSV


def _csv_rows(path: str | Path, text: str) -> Iterator[tuple[int, list[str]]]:
    """(line the row starts on, fields) for every non-empty row; CSV syntax errors name the line."""
    reader = csv.reader(io.StringIO(text, newline=""), strict=True)
    start = 1
    while True:
        try:
            row = next(reader)
        except StopIteration:
            return
        except csv.Error as exc:
            raise BenchmarkError(path, f"malformed CSV: {exc}", start) from None
        if row:
            yield start, row
        start = reader.line_num + 1


def _load_csv_text(path: str | Path, text: str) -> tuple[Prompt, ...]:
    """Prompts of a CSV document with a header row (already decoded)."""
    rows = _csv_rows(path, text)
    header = next(rows, None)
    if header is None:
        raise BenchmarkError(path, "empty file: no header and no prompts")
    header_line, header_row = header
    columns = _csv_columns(path, header_line, header_row)
    records = [_csv_record(path, line, row, columns, len(header_row)) for line, row in rows]
    prompts = _assign_ids(path, records)
    _require_prompts(path, prompts, "no prompts: the file has a header row but no data rows")
    return _canonical(prompts)


def _csv_columns(path: str | Path, line: int, header: list[str]) -> dict[str, int]:
    """Column index by lower-case header name; requires ``instruction`` and ``category``."""
    columns: dict[str, int] = {}
    for index, name in enumerate(header):
        key = name.strip().lower()
        if key in columns and key:
            raise BenchmarkError(path, f"duplicate column {_show(key)} in the header", line)
        columns[key] = index
    missing = [key for key in ("instruction", "category") if key not in columns]
    if missing:
        found = ", ".join(_show(name) for name in header)
        raise BenchmarkError(
            path,
            f"header is missing column {' and '.join(missing)}: the first row must name the columns "
            f"instruction and category (optional id); found {found}",
            line,
        )
    return columns


def _csv_record(path: str | Path, line: int, row: list[str], columns: dict[str, int], width: int) -> _Record:
    """Validate one CSV data row against the header's columns (``width`` of them)."""
    if len(row) != width:
        raise BenchmarkError(path, f"row has {len(row)} fields but the header has {width}", line)
    id_index = columns.get("id")
    return _Record(
        line=line,
        category=_check_category(path, line, row[columns["category"]]),
        instruction=_check_instruction(path, line, row[columns["instruction"]]),
        id=_check_id(path, line, row[id_index] if id_index is not None else None),
    )


# --------------------------------------------------------------------------- HEx-PHI folder


def _load_hexphi(folder: Path) -> tuple[tuple[Prompt, ...], tuple[str, ...]]:
    """Prompts and notes of a HEx-PHI folder; a missing category file is a note, not an error."""
    found = _hexphi_files(folder)
    prompts: list[Prompt] = []
    notes: list[str] = []
    for category in CATEGORIES:
        file = found.get(category.number)
        if file is None:
            notes.append(_missing_note(folder, category, len(found)))
        else:
            prompts.extend(_hexphi_category(file, category))
    return _canonical(prompts), tuple(notes)


def _hexphi_files(folder: Path) -> dict[int, Path]:
    """``category_N.csv`` files of a folder by number; stray numbers and an empty folder are errors."""
    try:
        entries = sorted(folder.iterdir())
    except OSError as exc:
        raise BenchmarkError(folder, f"cannot list folder: {_os_reason(exc)}") from None
    found: dict[int, Path] = {}
    for entry in entries:
        match = _HEXPHI_FILE.fullmatch(entry.name)
        if match is None:
            continue
        digits = match.group(1)
        number = int(digits)
        if number not in _BY_NUMBER or str(number) != digits:
            expected = f"category_1.csv ... category_{len(CATEGORIES)}.csv"
            raise BenchmarkError(entry, f"unexpected file {entry.name}: HEx-PHI files are {expected}")
        if not entry.is_file():
            raise BenchmarkError(entry, "not a regular file")
        found[number] = entry
    if not found:
        raise BenchmarkError(
            folder,
            f"not a HEx-PHI folder: none of category_1.csv ... category_{len(CATEGORIES)}.csv is in it",
        )
    return found


def _missing_note(folder: Path, category: Category, loaded: int) -> str:
    """The note for a category file absent from a HEx-PHI folder."""
    what = f"category_{category.number}.csv ({category.title}) is missing from {folder}"
    tally = f"{loaded} of {len(CATEGORIES)} categories loaded"
    if category.slug == "harm_children":
        return f"{what}: the public HEx-PHI release withholds it; {tally}"
    return f"{what}; {tally}"


def _hexphi_category(path: Path, category: Category) -> list[Prompt]:
    """Prompts of one header-less, one-column HEx-PHI category file."""
    text = _decode(path, _read_bytes(path))
    records = [_hexphi_record(path, line, row, category) for line, row in _csv_rows(path, text)]
    prompts = _assign_ids(path, records)
    _require_prompts(path, prompts)
    return prompts


def _hexphi_record(path: Path, line: int, row: list[str], category: Category) -> _Record:
    """Validate one HEx-PHI row: exactly one column, the instruction."""
    if len(row) != 1:
        raise BenchmarkError(
            path,
            f"expected one column (the instruction), found {len(row)}; "
            "quote instructions that contain commas",
            line,
        )
    return _Record(line=line, category=category, instruction=_check_instruction(path, line, row[0]), id=None)
