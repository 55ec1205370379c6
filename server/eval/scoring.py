"""Joins a test set with an answer file and summarises the scores into a report dict.

The report (what report.json holds; every score a fraction in 0..1, None where there is nothing to average):
    {"schema_version": 1, "meta": {...}, "n": scored, "missing": unanswered,
     "closed": {"n", "llava_med_gated", "substring", "strict"},
     "open": {"n", "recall", "precision", "f1", "exact_match", "llava_med_exact_match", "substring",
              ["candidate_accuracy"]},
     "breakdown": {dimension: {category: {"n", ["closed": {...}], ["open": {...}]}}},
     "latency": {"n", "mean_s", "p50_s", "p90_s", "max_s"} or None}
Dimensions are answer_type, question_type, content_type and modality, each present when the data set has it.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, Iterable, List, Optional, Sequence

from server.eval.datasets import EvalItem
from server.eval.errors import PredictionsError
from server.eval.metrics import (
    CLOSED_METRICS,
    OPEN_METRICS,
    closed_scores,
    mean_scores,
    normalize_candidates,
    open_scores,
)
from server.eval.predictions import Prediction

SCHEMA_VERSION = 1
DIMENSIONS = ("answer_type", "question_type", "content_type", "modality")
_OPEN_KEYS = OPEN_METRICS + ("candidate_accuracy",)


def score_rows(items: Sequence[EvalItem], predictions: Iterable[Prediction], *,
               candidates: Optional[Sequence[object]] = None, allow_missing: bool = False) -> List[Dict[str, Any]]:
    """One row per answered item, in data set order: the item's fields, the prediction, its scores.

    An answer whose id is not in `items` is an error (wrong data set or split); so is an item without an
    answer unless allow_missing (a partial run), in which case it is left out of the rows."""
    by_id = {p.question_id: p for p in predictions}
    known = {item.qid for item in items}
    extra = [qid for qid in by_id if qid not in known]
    if extra:
        raise PredictionsError("%d answers have ids that are not in this data set split (e.g. %s): wrong "
                               "--dataset, --split or --limit?" % (len(extra), extra[0]))
    missing = [item.qid for item in items if item.qid not in by_id]
    if missing and not allow_missing:
        raise PredictionsError("%d of %d questions have no answer (e.g. %s); finish the run or score the partial "
                               "file with --allow-missing" % (len(missing), len(items), missing[0]))
    # Normalised once here, not once per question (a CandidateSet passes through unchanged).
    prepared = normalize_candidates(candidates) if candidates else None
    rows = []
    for item in items:
        pred = by_id.get(item.qid)
        if pred is None:
            continue
        if item.answer_type == "closed":
            scores = closed_scores(pred.text, item.answer)
        else:
            scores = open_scores(pred.text, item.answer, prepared)
        rows.append({
            "qid": item.qid, "answer_type": item.answer_type, "question_type": item.question_type,
            "content_type": item.content_type, "modality": item.modality, "question": item.question,
            "answer": item.answer, "prediction": pred.text, "latency_s": pred.latency_s, "scores": scores,
        })
    return rows


def summarize(rows: Sequence[Dict[str, Any]], *, n_items: Optional[int] = None,
              meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """The report dict of scored rows (see the module docstring). `n_items` is the size of the test set
    scored, so that `missing` counts unanswered questions."""
    report: Dict[str, Any] = OrderedDict()
    report["schema_version"] = SCHEMA_VERSION
    report["meta"] = dict(meta or {})
    report["n"] = len(rows)
    report["missing"] = (n_items - len(rows)) if n_items is not None else 0
    report.update(_group(rows, always=True))
    breakdown: Dict[str, Any] = OrderedDict()
    for dim in DIMENSIONS:
        cats = sorted({r[dim] for r in rows if r[dim] is not None})
        if cats:
            breakdown[dim] = OrderedDict((c, _group([r for r in rows if r[dim] == c])) for c in cats)
    report["breakdown"] = breakdown
    report["latency"] = latency_stats([r["latency_s"] for r in rows if r["latency_s"] is not None])
    return report


def score_predictions(items: Sequence[EvalItem], predictions: Iterable[Prediction], *,
                      candidates: Optional[Sequence[object]] = None, allow_missing: bool = False,
                      meta: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
    """Score an answer file against a test set without any model: the report dict."""
    rows = score_rows(items, predictions, candidates=candidates, allow_missing=allow_missing)
    return summarize(rows, n_items=len(items), meta=meta)


def _group(rows: Sequence[Dict[str, Any]], always: bool = False) -> Dict[str, Any]:
    closed = [r["scores"] for r in rows if r["answer_type"] == "closed"]
    opened = [r["scores"] for r in rows if r["answer_type"] == "open"]
    out: Dict[str, Any] = OrderedDict()
    if not always:
        out["n"] = len(rows)
    if closed or always:
        out["closed"] = mean_scores(closed, CLOSED_METRICS)
    if opened or always:
        keys = _OPEN_KEYS if any("candidate_accuracy" in r for r in opened) else OPEN_METRICS
        out["open"] = mean_scores(opened, keys)
    return out


def latency_stats(values: Sequence[float]) -> Optional[Dict[str, Any]]:
    """Mean, median, 90th percentile (linear interpolation between order statistics) and max, in seconds;
    None without values."""
    if not values:
        return None
    v = sorted(values)
    return OrderedDict([("n", len(v)), ("mean_s", sum(v) / len(v)), ("p50_s", _percentile(v, 0.5)),
                        ("p90_s", _percentile(v, 0.9)), ("max_s", v[-1])])


def _percentile(sorted_values: Sequence[float], q: float) -> float:
    pos = (len(sorted_values) - 1) * q
    lo = int(math.floor(pos))
    hi = min(lo + 1, len(sorted_values) - 1)
    return sorted_values[lo] + (sorted_values[hi] - sorted_values[lo]) * (pos - lo)
