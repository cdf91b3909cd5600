"""Near-duplicate detection between prompt sets (pure), so training data never leaks into evaluation.

Two instructions are near duplicates when the Jaccard similarity of their content-word sets
(lower-cased, stop words dropped, a crude plural/suffix fold) reaches a threshold: 0.5 by
default, which catches rewordings such as "How do I pick a lock?" vs "how can I pick this lock"
while leaving prompts that only share a topic word apart.
"""

from __future__ import annotations

import re
from typing import Iterable, Sequence

__all__ = ["DEFAULT_THRESHOLD", "content_words", "jaccard", "near_duplicates"]

DEFAULT_THRESHOLD = 0.5

_WORD_RE = re.compile(r"[a-z0-9]+")
_STOP = frozenset(
    """a an the and or but if of to in on at by for with from into onto about as is are was were be been being
    do does did doing have has had i me my mine you your yours we our us they them their it its this that these
    those he she him her his hers can could would should will shall may might must how what which who whom
    whose why when where there here so than then too very just please tell give show explain write make
    get let some any all each every no not own same such only also way ways step steps using use""".split()
)


def _fold(word: str) -> str:
    for suffix in ("ing", "ies", "es", "ed", "s"):
        if len(word) > len(suffix) + 3 and word.endswith(suffix):
            return word[: -len(suffix)]
    return word


def content_words(text: str) -> frozenset[str]:
    """The folded content words of ``text``."""
    return frozenset(_fold(w) for w in _WORD_RE.findall(text.lower()) if w not in _STOP)


def jaccard(a: frozenset[str], b: frozenset[str]) -> float:
    """|a & b| / |a | b| (0 when both are empty)."""
    union = a | b
    return len(a & b) / len(union) if union else 0.0


def near_duplicates(
    left: Sequence[str], right: Iterable[str], threshold: float = DEFAULT_THRESHOLD
) -> list[tuple[int, int, float]]:
    """(index in left, index in right, similarity) for every pair at or above ``threshold``."""
    left_words = [content_words(t) for t in left]
    found = []
    for j, text in enumerate(right):
        words = content_words(text)
        for i, other in enumerate(left_words):
            score = jaccard(other, words)
            if score >= threshold:
                found.append((i, j, score))
    return found
