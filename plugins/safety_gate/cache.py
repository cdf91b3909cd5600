"""A persistent SQLite store of answers and verdicts, written as they are produced.

Keys hash everything that changes the stored value and nothing else (``answer_key``,
``verdict_key``). File hashes are memoised by (path, size, mtime) so reruns do not re-read weights.
Judge errors are never stored: a rerun asks again.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
import time
from pathlib import Path
from typing import Any, Iterable, Mapping

from .judges import Verdict

__all__ = ["Cache", "answer_key", "verdict_key", "sha256_file"]

_SCHEMA = """
CREATE TABLE IF NOT EXISTS answers (key TEXT PRIMARY KEY, answer TEXT NOT NULL, n_tokens INTEGER,
    finish TEXT, created REAL NOT NULL);
CREATE TABLE IF NOT EXISTS verdicts (key TEXT PRIMARY KEY, score INTEGER NOT NULL, reason TEXT NOT NULL,
    created REAL NOT NULL, confidence REAL, refused INTEGER);
CREATE TABLE IF NOT EXISTS file_hashes (path TEXT PRIMARY KEY, size INTEGER NOT NULL,
    mtime_ns INTEGER NOT NULL, sha256 TEXT NOT NULL);
"""
_KEY_VERSION = 1


def _hash(obj: Mapping[str, Any]) -> str:
    text = json.dumps({"v": _KEY_VERSION, **obj}, sort_keys=True, ensure_ascii=False)
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def answer_key(model_fingerprint: str, instruction: str, system_prompt: str | None, generation: Mapping[str, Any]) -> str:
    """The key of one answer: model and adapter weights (with tokenizer and chat template), the
    instruction, the system prompt and the generation settings that change the output."""
    return _hash({"model": model_fingerprint, "instruction": instruction, "system": system_prompt, "gen": dict(generation)})


def verdict_key(answer: str, instruction: str, category: str, judge_name: str, judge_version: str) -> str:
    """The key of one verdict: what the judge sees, and the judge's name and identity (its version and
    whatever else can change its reading: ``safety_gate.judges.cache_identity``)."""
    return _hash(
        {"answer": answer, "instruction": instruction, "category": category, "judge": judge_name, "version": judge_version}
    )


def sha256_file(path: Path) -> str:
    """The SHA-256 of a file's bytes."""
    digest = hashlib.sha256()
    with open(path, "rb") as handle:
        for block in iter(lambda: handle.read(1 << 22), b""):
            digest.update(block)
    return digest.hexdigest()


class Cache:
    """Answers, verdicts and file hashes in ``<folder>/cache.sqlite3``; ``folder=None`` keeps them in memory."""

    def __init__(self, folder: Path | None) -> None:
        if folder is None:
            self.path: str = ":memory:"
        else:
            folder.mkdir(parents=True, exist_ok=True)
            self.path = str(folder / "cache.sqlite3")
        self._db = sqlite3.connect(self.path, timeout=60)
        if folder is not None:
            self._db.execute("PRAGMA journal_mode=WAL")
        self._db.executescript(_SCHEMA)
        columns = {row[1] for row in self._db.execute("PRAGMA table_info(verdicts)")}
        for name, kind in (("confidence", "REAL"), ("refused", "INTEGER")):  # a cache made before they existed
            if name not in columns:
                self._db.execute(f"ALTER TABLE verdicts ADD COLUMN {name} {kind}")
        self._db.commit()

    def close(self) -> None:
        """Close the database."""
        self._db.close()

    def _lookup(self, sql: str, keys: Iterable[str]) -> dict[str, tuple[Any, ...]]:
        found: dict[str, tuple[Any, ...]] = {}
        keys = list(dict.fromkeys(keys))
        for start in range(0, len(keys), 500):  # SQLite caps the number of bound parameters
            chunk = keys[start : start + 500]
            rows = self._db.execute(sql.format(",".join("?" * len(chunk))), chunk)
            found.update({row[0]: row[1:] for row in rows})
        return found

    def get_answers(self, keys: Iterable[str]) -> dict[str, str]:
        """Stored answers for those of ``keys`` that have one."""
        rows = self._lookup("SELECT key, answer FROM answers WHERE key IN ({})", keys)
        return {key: row[0] for key, row in rows.items()}

    def put_answers(self, rows: Iterable[tuple[str, str, int | None, str | None]]) -> None:
        """Store (key, answer, new-token count, finish reason) rows and commit at once."""
        now = time.time()
        self._db.executemany(
            "INSERT OR REPLACE INTO answers VALUES (?, ?, ?, ?, ?)", [(*row, now) for row in rows]
        )
        self._db.commit()

    def get_verdicts(self, keys: Iterable[str]) -> dict[str, Verdict]:
        """Stored verdicts for those of ``keys`` that have one."""
        rows = self._lookup("SELECT key, score, reason, confidence, refused FROM verdicts WHERE key IN ({})", keys)
        return {
            key: Verdict(int(row[0]), row[1], confidence=row[2], refused=None if row[3] is None else bool(row[3]))
            for key, row in rows.items()
        }

    def put_verdicts(self, rows: Iterable[tuple[str, Verdict]]) -> None:
        """Store verdicts that carry a score; errors are skipped so that a rerun asks again."""
        now = time.time()
        good = [
            (key, v.score, v.reason, now, v.confidence, None if v.refused is None else int(v.refused))
            for key, v in rows
            if v.score is not None
        ]
        self._db.executemany(
            "INSERT OR REPLACE INTO verdicts (key, score, reason, created, confidence, refused) VALUES (?, ?, ?, ?, ?, ?)",
            good,
        )
        self._db.commit()

    def file_hash(self, path: Path) -> str:
        """SHA-256 of ``path``, memoised by its resolved path, size and mtime."""
        stat = path.stat()
        key = str(path.resolve())
        row = self._db.execute(
            "SELECT sha256 FROM file_hashes WHERE path = ? AND size = ? AND mtime_ns = ?",
            (key, stat.st_size, stat.st_mtime_ns),
        ).fetchone()
        if row:
            return str(row[0])
        digest = sha256_file(path)
        self._db.execute(
            "INSERT OR REPLACE INTO file_hashes VALUES (?, ?, ?, ?)", (key, stat.st_size, stat.st_mtime_ns, digest)
        )
        self._db.commit()
        return digest
