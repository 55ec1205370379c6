"""The bench's PNG chart: one bar panel per measure (TTFT, decode speed, peak RSS and, where jtop read
the board's power, mean power and energy per answer), a bar per system and question.

matplotlib is the `eval` extra's and is imported here only, lazily (the Jetson image need not carry it).
"""
from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, List, Tuple

from server.bench.protocol import BenchError

_PANELS: Tuple[Tuple[str, str], ...] = (
    ("ttft_ms", "time to first token (ms)"),
    ("decode_tokens_per_s", "decode (tokens/s)"),
    ("peak_rss_mb", "peak RSS (MiB)"),
    ("power_w", "mean power (W)"),
    ("energy_j", "energy per answer (J)"),
)
_QUESTION_NAMES = {"first": "first", "followup": "follow-up"}


def panels(report: Dict[str, Any]) -> List[Tuple[str, str]]:
    """The (key, title) panels this report has data for: power and energy only where they were measured."""
    return [(k, t) for k, t in _PANELS if any(k in row for row in report["rows"])]


def write_chart(report: Dict[str, Any], path: Path) -> List[str]:
    """Write the PNG; returns the panel titles drawn."""
    try:
        import matplotlib

        matplotlib.use("Agg")  # files only: no display on a server or a Jetson
        import matplotlib.pyplot as plt
    except ImportError:
        raise BenchError("the chart needs matplotlib: pip install 'tinyllava-med[eval]'") from None
    chosen = panels(report)
    rows = report["rows"]
    labels = ["%s\n%s" % (r["system"], _QUESTION_NAMES.get(r["question"], r["question"])) for r in rows]
    fig, axes = plt.subplots(1, len(chosen), figsize=(3.2 * len(chosen), 3.6), squeeze=False)
    for ax, (key, title) in zip(axes[0], chosen):
        values = [float(r[key]) if key in r else 0.0 for r in rows]
        bars = ax.bar(range(len(rows)), values, color=["#3b6ea8" if r["system"] == "ours" else "#b0b0b0"
                                                       for r in rows])
        for bar, r in zip(bars, rows):
            if key not in r:
                bar.set_hatch("//")  # not measured for this system
        ax.set_xticks(range(len(rows)))
        ax.set_xticklabels(labels, fontsize=7)
        ax.set_title(title, fontsize=9)
    fig.suptitle("tinyllava-med bench: %s (%s), %d new tokens" % (report["model"], report["precision"],
                                                                  report["new_tokens"]), fontsize=10)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(str(path), format="png", dpi=120)
    plt.close(fig)
    return [t for _, t in chosen]


__all__ = ["panels", "write_chart"]
