"""Writes a report (report.json, report.md, per_question.jsonl, accuracy.png) and compares two reports.

JSON keeps fractions in 0..1; Markdown shows percentages with two decimals, the way papers quote them.
The chart needs matplotlib (optional); without it the other files are still written.
"""
from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from server.eval.errors import ReportError

log = logging.getLogger(__name__)
PathLike = Union[str, Path]

_CLOSED_LABELS = (("llava_med_gated", "LLaVA-Med (yes/no gated substring)"),
                  ("substring", "substring (no gate)"),
                  ("strict", "strict (first yes/no word)"))
_OPEN_LABELS = (("recall", "token recall (headline)"), ("precision", "token precision"), ("f1", "token F1"),
                ("exact_match", "exact match"), ("llava_med_exact_match", "LLaVA-Med \"exact match score\""),
                ("substring", "substring"), ("candidate_accuracy", "candidate accuracy (run_eval.py)"))
_LATENCY_LABELS = (("mean_s", "mean"), ("p50_s", "p50"), ("p90_s", "p90"), ("max_s", "max"))


def write_report(report: Dict[str, Any], out_dir: PathLike,
                 rows: Optional[Sequence[Dict[str, Any]]] = None, chart: bool = True) -> Dict[str, Path]:
    """Write report.json and report.md (and per_question.jsonl when rows are given, accuracy.png when
    chart and matplotlib is importable) into out_dir; returns {kind: path} of what was written."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    written = {"json": out / "report.json", "markdown": out / "report.md"}
    written["json"].write_text(json.dumps(report, indent=2) + "\n", encoding="utf-8")
    written["markdown"].write_text(render_markdown(report), encoding="utf-8")
    if rows is not None:
        written["per_question"] = out / "per_question.jsonl"
        with open(written["per_question"], "w", encoding="utf-8") as f:
            for row in rows:
                f.write(json.dumps(row, ensure_ascii=False) + "\n")
    if chart:
        png = write_chart(report, out / "accuracy.png")
        if png is not None:
            written["chart"] = png
    return written


def load_report(path: PathLike) -> Dict[str, Any]:
    """A report.json written by write_report."""
    path = Path(path)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise ReportError("cannot read report %s: %s" % (path, e)) from e
    if not isinstance(report, dict) or not all(isinstance(report.get(k), dict) for k in ("closed", "open")):
        raise ReportError("%s is not an eval report (no 'closed'/'open' sections); pass the report.json that "
                          "`tinyllava-med eval --out DIR` wrote" % path)
    return report


def _pct(value: Optional[float]) -> str:
    return "–" if value is None else "%.2f" % (100.0 * value)


def render_markdown(report: Dict[str, Any]) -> str:
    """The report as Markdown tables: closed, open, latency, then one table per breakdown dimension."""
    meta = report.get("meta", {})
    title = " ".join(str(meta[k]) for k in ("dataset", "split") if meta.get(k)) or "evaluation"
    lines = ["# Evaluation: %s" % title, ""]
    source = ", ".join("%s: %s" % (k, v) for k, v in meta.items() if k not in ("dataset", "split"))
    lines.append("%d questions scored, %d unanswered%s." % (report.get("n", 0), report.get("missing", 0),
                                                          ("; " + source) if source else ""))
    lines.append("")
    closed, opened = report["closed"], report["open"]
    lines += ["| Closed (n=%d) | %% |" % closed.get("n", 0), "|---|---:|"]
    lines += ["| %s | %s |" % (label, _pct(closed.get(key))) for key, label in _CLOSED_LABELS]
    lines += ["", "| Open (n=%d) | %% |" % opened.get("n", 0), "|---|---:|"]
    lines += ["| %s | %s |" % (label, _pct(opened.get(key))) for key, label in _OPEN_LABELS if key in opened]
    latency = report.get("latency")
    if latency:
        lines += ["", "| Latency per question (n=%d) | s |" % latency["n"], "|---|---:|"]
        lines += ["| %s | %.3f |" % (label, latency[key]) for key, label in _LATENCY_LABELS]
    for dim, cats in report.get("breakdown", {}).items():
        lines += ["", "## By %s" % dim.replace("_", " "), "",
                  "| %s | n | closed n | gated %% | substring %% | strict %% | open n | recall %% | F1 %% | exact %% |"
                  % dim, "|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|"]
        for cat, g in cats.items():
            c, o = g.get("closed", {}), g.get("open", {})
            lines.append("| %s | %d | %d | %s | %s | %s | %d | %s | %s | %s |" % (
                cat, g["n"], c.get("n", 0), _pct(c.get("llava_med_gated")), _pct(c.get("substring")),
                _pct(c.get("strict")), o.get("n", 0), _pct(o.get("recall")), _pct(o.get("f1")),
                _pct(o.get("exact_match"))))
    return "\n".join(lines) + "\n"


def _metric_rows(report: Dict[str, Any]) -> Dict[str, Tuple[Optional[float], str]]:
    """{row name: (value, unit)} for comparison: headline scores, latency, per-category scores."""
    rows: Dict[str, Tuple[Optional[float], str]] = {}
    for key, _ in _CLOSED_LABELS:
        rows["closed %s" % key] = (report["closed"].get(key), "%")
    for key, _ in _OPEN_LABELS:
        if key in report["open"]:
            rows["open %s" % key] = (report["open"].get(key), "%")
    for key, label in _LATENCY_LABELS:
        rows["latency %s" % label] = ((report.get("latency") or {}).get(key), "s")
    for dim, cats in report.get("breakdown", {}).items():
        for cat, g in cats.items():
            if "closed" in g:
                rows["%s=%s closed llava_med_gated" % (dim, cat)] = (g["closed"].get("llava_med_gated"), "%")
                rows["%s=%s closed strict" % (dim, cat)] = (g["closed"].get("strict"), "%")
            if "open" in g:
                rows["%s=%s open recall" % (dim, cat)] = (g["open"].get("recall"), "%")
    return rows


def compare_reports(a: Dict[str, Any], b: Dict[str, Any]) -> List[Tuple[str, Optional[float], Optional[float],
                                                                        Optional[float], str]]:
    """(metric, value in a, value in b, b - a, unit) for every metric in either report; scores are in
    percent (so deltas are percentage points), latencies in seconds; None where a side lacks the metric."""
    ra, rb = _metric_rows(a), _metric_rows(b)
    names = list(ra) + [n for n in rb if n not in ra]
    out = []
    for name in names:
        va, unit_a = ra.get(name, (None, ""))
        vb, unit_b = rb.get(name, (None, ""))
        unit = unit_a or unit_b
        scale = 100.0 if unit == "%" else 1.0
        sa = None if va is None else va * scale
        sb = None if vb is None else vb * scale
        out.append((name, sa, sb, None if sa is None or sb is None else sb - sa, unit))
    return out


def render_comparison(a: Dict[str, Any], b: Dict[str, Any], name_a: str = "A", name_b: str = "B") -> str:
    """A Markdown delta table of two reports (B - A)."""
    def fmt(v: Optional[float], unit: str, signed: bool = False) -> str:
        if v is None:
            return "–"
        digits = 2 if unit == "%" else 3
        return ("%+.*f" if signed else "%.*f") % (digits, v)

    lines = ["| metric | %s | %s | Δ (B−A) |" % (name_a, name_b), "|---|---:|---:|---:|"]
    for name, va, vb, delta, unit in compare_reports(a, b):
        label = name + (" (s)" if unit == "s" else " (%)")
        lines.append("| %s | %s | %s | %s |" % (label, fmt(va, unit), fmt(vb, unit), fmt(delta, unit, True)))
    return "\n".join(lines) + "\n"


def write_chart(report: Dict[str, Any], path: PathLike) -> Optional[Path]:
    """A PNG of accuracy per category (closed gated and strict, open recall), one panel per breakdown
    dimension; None (and nothing written) when matplotlib is not installed."""
    try:
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
    except ImportError:
        log.warning("matplotlib is not installed; skipping the accuracy chart (pip install matplotlib)")
        return None
    dims = [(d, cats) for d, cats in report.get("breakdown", {}).items() if cats]
    if not dims:
        return None
    series = (("closed", "llava_med_gated", "closed, LLaVA-Med gated"), ("closed", "strict", "closed, strict"),
              ("open", "recall", "open, token recall"))
    # Figure + Agg canvas, not pyplot: no global backend or figure state in library code.
    fig = Figure(figsize=(10, 3.2 * len(dims)))
    FigureCanvasAgg(fig)
    for i, (dim, cats) in enumerate(dims):
        ax = fig.add_subplot(len(dims), 1, i + 1)
        names = list(cats)
        width = 0.8 / len(series)
        for j, (section, key, label) in enumerate(series):
            values = [100.0 * (cats[c].get(section, {}).get(key) or 0.0) for c in names]
            ax.bar([k + (j - 1) * width for k in range(len(names))], values, width, label=label)
        ax.set_xticks(list(range(len(names))))
        ax.set_xticklabels(["%s\n(n=%d)" % (c, cats[c]["n"]) for c in names], fontsize=8)
        ax.set_ylim(0, 100)
        ax.set_ylabel("%")
        ax.set_title("by %s" % dim.replace("_", " "))
        ax.legend(fontsize=7, loc="upper right")
    fig.tight_layout()
    out = Path(path)
    fig.savefig(str(out), format="png", dpi=100)
    return out
