"""Render the safety-gate summary dict as a self-contained HTML page and write it to disk.

The summary dict is built by :mod:`safety_gate.report.data`; this module only presents it.
The HTML page has no external assets (inline CSS, no JavaScript, no web fonts), so it opens
offline.  Model answers and prompts are untrusted text: the Jinja environment autoescapes
everything, and nothing in the template marks data as safe.
"""

from __future__ import annotations

import functools
import json
import math
import os
import tempfile
from collections.abc import Mapping
from pathlib import Path, PurePath
from typing import Any

import jinja2

__all__ = ["ANSWER_PREVIEW_CHARS", "TEMPLATE_NAME", "render_html", "write_report"]

TEMPLATE_NAME = "report.html.j2"
"""File name of the page template inside ``safety_gate/report/templates``."""

ANSWER_PREVIEW_CHARS = 600
"""Answers longer than this show their first characters, the full text sits in a ``<details>``."""

NA = "n/a"
"""What a missing or non-numeric value renders as."""

_SCORES: tuple[str, ...] = ("1", "2", "3", "4", "5")


def _is_number(value: Any) -> bool:
    """True for a finite int/float (bools and NaN/inf count as missing)."""
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return False
    return math.isfinite(value)


def fmt_pct(value: Any, digits: int = 1) -> str:
    """A fraction in [0, 1] as a percentage (``0.42`` -> ``"42.0%"``), or ``"n/a"``."""
    if not _is_number(value):
        return NA
    return f"{value * 100:.{digits}f}%"


def fmt_num(value: Any, digits: int = 2) -> str:
    """A number with ``digits`` decimals (ints as they are), or ``"n/a"``."""
    if isinstance(value, int) and not isinstance(value, bool):
        return str(value)
    if not _is_number(value):
        return NA
    return f"{value:.{digits}f}"


def fmt_count(value: Any) -> str:
    """A count as an integer string, or ``"n/a"``."""
    if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
        return NA
    return str(int(value))


def fmt_ci(value: Any, digits: int = 1) -> str:
    """A ``[low, high]`` interval of fractions as ``"37.0–47.0%"``, or ``""`` when not available."""
    if not isinstance(value, (list, tuple)) or len(value) != 2:
        return ""
    low, high = value
    if not (_is_number(low) and _is_number(high)):
        return ""
    return f"{low * 100:.{digits}f}\u2013{high * 100:.{digits}f}%"


def verdict(value: Any) -> str:
    """``"PASS"`` only for ``True``, ``"FAIL"`` for ``False``, ``"n/a"`` for anything else."""
    if value is True:
        return "PASS"
    if value is False:
        return "FAIL"
    return NA


def verdict_class(value: Any) -> str:
    """CSS class matching :func:`verdict`."""
    if value is True:
        return "pass"
    if value is False:
        return "fail"
    return "na"


def fmt_value(value: Any) -> str:
    """A settings/model value for display: ``None`` -> ``"n/a"``, bools lower-case, lists joined."""
    if value is None:
        return NA
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, float):
        return f"{value:g}"
    if isinstance(value, (list, tuple)):
        return ", ".join(fmt_value(v) for v in value) or NA
    if isinstance(value, Mapping):
        return ", ".join(f"{k}={fmt_value(v)}" for k, v in value.items()) or NA
    return str(value)


def fmt_limits(limits: Any) -> str:
    """A limits dict as ``"rate ≤ 10.0%, mean ≤ 2.50"``; unknown keys are shown as ``key ≤ value``."""
    if not isinstance(limits, Mapping) or not limits:
        return NA
    parts: list[str] = []
    for key, value in limits.items():
        if value is None:
            continue
        if key == "max_harmfulness_rate":
            parts.append(f"rate \u2264 {fmt_pct(value)}")
        elif key == "max_mean_score":
            parts.append(f"mean \u2264 {fmt_num(value)}")
        else:
            parts.append(f"{str(key).removeprefix('max_').replace('_', ' ')} \u2264 {fmt_value(value)}")
    return ", ".join(parts) or NA


def score_label(item: Mapping[str, Any]) -> str:
    """The score of a failure item as text: ``"ERROR"`` when it errored or has no score."""
    score = item.get("score")
    if item.get("error") or score is None or isinstance(score, bool):
        return "ERROR"
    if not _is_number(score):
        return "ERROR"
    return str(int(score)) if float(score).is_integer() else f"{score:g}"


def score_class(item: Mapping[str, Any]) -> str:
    """CSS class for a failure item's score badge (``score-error`` or ``score-1`` … ``score-5``)."""
    label = score_label(item)
    if label == "ERROR":
        return "score-error"
    try:
        bucket = min(5, max(1, int(round(float(item["score"])))))
    except (TypeError, ValueError, KeyError):
        return "score-error"
    return f"score-{bucket}"


def _histogram_rows(histogram: Any) -> list[dict[str, Any]]:
    """Bars for the score histogram: scores 1-5 in order, then any other keys (e.g. errors)."""
    counts: dict[str, int] = {}
    if isinstance(histogram, Mapping):
        for key, value in histogram.items():
            if isinstance(value, bool) or not isinstance(value, (int, float)):
                continue
            counts[str(key)] = int(value)
    keys = list(_SCORES) + [k for k in counts if k not in _SCORES]
    total = sum(counts.get(k, 0) for k in keys)
    top = max((counts.get(k, 0) for k in keys), default=0)
    rows: list[dict[str, Any]] = []
    for key in keys:
        count = counts.get(key, 0)
        rows.append(
            {
                "key": key,
                "count": count,
                "share": fmt_pct(count / total) if total else NA,
                "width": round(100.0 * count / top, 2) if top else 0.0,
                "css": f"score-{key}" if key in _SCORES else "score-error",
            }
        )
    return rows


def layer_plot(activations: Mapping[str, Any], width: int = 640, height: int = 240) -> dict[str, Any] | None:
    """SVG coordinates for the probe-AUROC-per-layer plot: the model, and the baseline if any."""
    series = [("fine-tuned" if activations.get("baseline_layers") else "model", "#cf222e", activations.get("layers")),
              ("baseline", "#0969da", activations.get("baseline_layers"))]
    series = [(n, c, _as_list(rows)) for n, c, rows in series if _as_list(rows)]
    if not series:
        return None
    left, top, right, bottom = 44, 10, 10, 24
    inner_w, inner_h = width - left - right, height - top - bottom
    layers = [int(r["layer"]) for _, _, rows in series for r in rows if _is_number(r.get("layer"))]
    low, high = min(layers), max(max(layers), min(layers) + 1)
    y_low = 0.4  # AUROC 0.5 is chance; the axis starts a little below

    def x(layer: float) -> float:
        return round(left + inner_w * (layer - low) / (high - low), 1)

    def y(value: float) -> float:
        return round(top + inner_h * (1 - (max(value, y_low) - y_low) / (1 - y_low)), 1)

    lines = []
    for name, color, rows in series:
        points = " ".join(f"{x(r['layer'])},{y(r['auroc'])}" for r in rows if _is_number(r.get("auroc")))
        lines.append({"name": name, "color": color, "points": points})
    step = max(1, (high - low) // 8)
    return {
        "width": width, "height": height, "left": left, "top": top, "inner_width": inner_w, "inner_height": inner_h,
        "lines": lines,
        "x_ticks": [{"x": x(v), "label": str(v)} for v in range(low, high + 1, step)],
        "y_ticks": [{"y": y(v), "label": f"{v:.1f}"} for v in (0.4, 0.6, 0.8, 1.0)],
    }


def _as_list(value: Any) -> list[Any]:
    """``value`` if it is a list/tuple, else an empty list (tolerates missing or null sections)."""
    return list(value) if isinstance(value, (list, tuple)) else []


def _as_dict(value: Any) -> dict[str, Any]:
    """``value`` if it is a mapping, else an empty dict."""
    return dict(value) if isinstance(value, Mapping) else {}


@functools.lru_cache(maxsize=1)
def _environment() -> jinja2.Environment:
    """The (cached) Jinja environment: package templates, autoescape on, helper filters."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("safety_gate", "report/templates"),
        autoescape=True,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=True,
    )
    env.filters.update(
        pct=fmt_pct,
        num=fmt_num,
        count=fmt_count,
        ci=fmt_ci,
        verdict=verdict,
        verdict_class=verdict_class,
        value=fmt_value,
        limits=fmt_limits,
        score_label=score_label,
        score_class=score_class,
    )
    env.globals.update(NA=NA, ANSWER_PREVIEW_CHARS=ANSWER_PREVIEW_CHARS)
    return env


def render_html(summary: Mapping[str, Any], *, json_name: str | None = None) -> str:
    """Render ``summary`` (the dict from :mod:`safety_gate.report.data`) as one HTML page.

    ``json_name`` is the file name the page links to for the JSON summary; by default the
    base name of ``summary["report_paths"]["json"]`` (no link when neither is known).
    """
    report_paths = _as_dict(summary.get("report_paths"))
    if json_name is None and report_paths.get("json"):
        json_name = PurePath(str(report_paths["json"])).name
    categories = [_as_dict(c) for c in _as_list(summary.get("categories"))]
    failures = [_as_dict(g) for g in _as_list(summary.get("failures"))]
    failure_slugs = {str(g.get("slug")) for g in failures if _as_list(g.get("items"))}
    template = _environment().get_template(TEMPLATE_NAME)
    return template.render(
        s=summary,
        tool=_as_dict(summary.get("tool")),
        model=_as_dict(summary.get("model")),
        benchmark=_as_dict(summary.get("benchmark")),
        judge=_as_dict(summary.get("judge")),
        settings=_as_dict(summary.get("settings")),
        limits=_as_dict(summary.get("limits")),
        overall=_as_dict(summary.get("overall")),
        categories=categories,
        failures=failures,
        failure_slugs=failure_slugs,
        histogram=_histogram_rows(summary.get("score_histogram")),
        notes=[str(n) for n in _as_list(_as_dict(summary.get("benchmark")).get("notes"))],
        over_refusal=_as_dict(summary.get("over_refusal")),
        regression=_as_dict(summary.get("regression")),
        activations=_as_dict(summary.get("activations")),
        backdoor=_as_dict(summary.get("backdoor")),
        discovery=_as_dict(summary.get("discovery")),
        plot=layer_plot(_as_dict(summary.get("activations"))),
        json_name=json_name,
    )


def _json_default(value: Any) -> Any:
    """Serialise paths (and other ``os.PathLike``) as strings; anything else is a bug."""
    if isinstance(value, (PurePath, os.PathLike)):
        return os.fspath(value)
    if isinstance(value, (set, frozenset)):
        return sorted(value)
    raise TypeError(f"summary value of type {type(value).__name__} is not JSON serialisable")


def _write_atomic(path: Path, text: str) -> None:
    """Write ``text`` (UTF-8) to ``path`` via a temp file in the same directory and ``os.replace``."""
    fd, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8", newline="\n") as handle:
            handle.write(text)
            handle.flush()
            os.fsync(handle.fileno())
        os.chmod(tmp_name, 0o644)
        os.replace(tmp_name, path)
    except BaseException:
        try:
            os.unlink(tmp_name)
        except FileNotFoundError:
            pass
        raise


def write_report(summary: Mapping[str, Any], html_path: str | os.PathLike[str]) -> tuple[Path, Path]:
    """Write the HTML report to ``html_path`` and the JSON summary beside it (same stem, ``.json``).

    Parent directories are created; each file is written atomically.  The JSON is serialised
    first, so an unserialisable summary leaves neither file half-written.  Returns
    ``(html_path, json_path)``.
    """
    html_file = Path(html_path)
    json_file = html_file.with_suffix(".json")
    if json_file == html_file:
        raise ValueError(f"report path {html_file} must not end in .json")
    json_text = json.dumps(summary, indent=2, sort_keys=False, ensure_ascii=False, default=_json_default) + "\n"
    html_text = render_html(summary, json_name=json_file.name)
    html_file.parent.mkdir(parents=True, exist_ok=True)
    _write_atomic(json_file, json_text)
    _write_atomic(html_file, html_text)
    return html_file, json_file
