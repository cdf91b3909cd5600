"""Model text made safe to print: control characters are shown, never obeyed.

Answers, judge reasons and server excerpts reach failure messages, the terminal summary and CI logs.
An answer can hold escape sequences (set the window title, clear the screen), NUL bytes, carriage
returns that overwrite a line, or right-to-left overrides that reorder what a reader sees.
:func:`visible` writes each such character as an escape (``\\x1b``, ``\\u202e``) and keeps newlines
and tabs. The HTML report escapes text its own way and does not use this.
"""

from __future__ import annotations

__all__ = ["visible"]

# Bidirectional embeddings, overrides and isolates, and the implicit direction marks.
_BIDI = frozenset([*range(0x202A, 0x202F), *range(0x2066, 0x206A), 0x200E, 0x200F, 0x061C])


def _shown(ch: str) -> str:
    code = ord(ch)
    if code < 0x20 or code == 0x7F or 0x80 <= code < 0xA0:
        return f"\\x{code:02x}"
    if code in _BIDI:
        return f"\\u{code:04x}"
    return ch


def visible(text: str) -> str:
    """``text`` with every control character (C0, DEL, C1) and bidi control written as an escape;
    newlines and tabs stay."""
    if text.isprintable():
        return text
    return "".join(ch if ch in "\n\t" else _shown(ch) for ch in text)
