"""Per-answer scores for closed (yes/no and other short-list) and open questions, and their means.

Compatible with LLaVA-Med's evaluator (microsoft/LLaVA-Med at b9a98a7, `llava/eval/run_eval.py`,
`run_eval_batch.py`, `eval_metrics/evaluate_metrics.py`); written here, not copied. Both sides are
normalised with `normalize_answer` first, as run_eval.py's `evaluate` does; the reference's
calculate_f1score, calculate_exactmatch and calculate_appearance_with_normalization normalise their
inputs a second time, and normalising is not idempotent (the 32-period cap), so the open scores taken
from them (`recall`, `precision`, `f1`, `llava_med_exact_match`, `candidate_accuracy`) see the prediction
and ground truth normalised twice, the candidates once. What each score means, and where it is misleading:

closed questions
- `llava_med_gated` (run_eval.py after fix 8faf5ec): correct when the prediction contains the substring
  "yes" or "no" *and* the ground truth is a substring of it. "Normal" and "I cannot determine" contain "no";
  "The eyes are normal." contains "yes"; a closed answer such as "left" always scores 0.
- `substring` (run_eval_batch.py, and TinyLLaVA-Med-F's copy): the ground truth is a substring of the
  prediction, no gate. "Yes, there is no fracture" is right for both "yes" and "no".
- `strict` (ours): for a yes/no ground truth, the first whole word "yes" or "no" of the prediction must
  equal it; for any other closed answer, its tokens must appear as whole words, in order.

open questions
- `recall` (the papers' headline), `precision`, `f1`: token counts as in `calculate_f1score`, quirk
  included: a shared word counts as often as it occurs in the *prediction* (so "kidney kidney liver"
  against "kidney" has precision 2/3, recall 1).
- `exact_match` (ours): normalised prediction == normalised ground truth.
- `llava_med_exact_match`: the reference's "exact match score", which is a precision: distinct
  ground-truth words found in the prediction / prediction tokens.
- `substring`: run_eval_batch.py's open accuracy (ground truth is a substring of the prediction).
- `candidate_accuracy`: run_eval.py's open accuracy: the prediction is mapped to the candidate answer
  (LLaVA-Med's train_open_answers.json) sharing the largest fraction of the candidate's words, and that
  candidate must equal the ground truth. Only when candidates are given.
"""
from __future__ import annotations

import re
from collections import Counter
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from server.eval.normalize import normalize_answer

CLOSED_METRICS = ("llava_med_gated", "substring", "strict")
OPEN_METRICS = ("recall", "precision", "f1", "exact_match", "llava_med_exact_match", "substring")
_YES_NO = re.compile(r"\b(yes|no)\b")


def closed_scores(prediction: object, ground_truth: object) -> Dict[str, float]:
    """Scores of one closed-question answer: each of CLOSED_METRICS, 0.0 or 1.0."""
    pred = normalize_answer(prediction)
    gt = normalize_answer(ground_truth)
    hit = gt in pred
    gate = "yes" in pred or "no" in pred
    if gt in ("yes", "no"):
        first = _YES_NO.search(pred)
        strict = first is not None and first.group(1) == gt
    else:
        strict = bool(gt) and (" %s " % gt) in (" %s " % pred)
    return {"llava_med_gated": float(gate and hit), "substring": float(hit), "strict": float(strict)}


def token_prf(prediction: object, ground_truth: object) -> Tuple[float, float, float]:
    """(precision, recall, f1) of normalised tokens, counted as LLaVA-Med's calculate_f1score does;
    all three are 0 when either side is empty or no token is shared."""
    return _token_prf(normalize_answer(prediction), normalize_answer(ground_truth))


def _token_prf(pred_norm: str, gt_norm: str) -> Tuple[float, float, float]:
    # Works on strings already normalised as many times as the caller's reference does.
    pred = Counter(pred_norm.split())
    gt = Counter(gt_norm.split())
    if not pred or not gt:
        return 0.0, 0.0, 0.0
    tp = sum(c for w, c in pred.items() if w in gt)
    fp = sum(c for w, c in pred.items() if w not in gt)
    fn = sum(c for w, c in gt.items() if w not in pred)
    if tp == 0:
        return 0.0, 0.0, 0.0
    precision = tp / (tp + fp)
    recall = tp / (tp + fn)
    return precision, recall, 2 * precision * recall / (precision + recall)


class CandidateSet(tuple):
    """Candidate answers normalised once (a tuple of normalised strings), for scoring many questions."""

    __slots__ = ()


def normalize_candidates(candidates: Sequence[object]) -> CandidateSet:
    """The candidates normalised, in order; a CandidateSet is returned as it is (never normalised twice)."""
    if isinstance(candidates, CandidateSet):
        return candidates
    return CandidateSet(normalize_answer(c) for c in candidates)


def choose_candidate(prediction: object, candidates: Sequence[object]) -> Optional[str]:
    """The normalised candidate whose distinct words the prediction covers best (first one on ties), as
    run_eval.py's calculate_appearance_with_normalization picks it; None without candidates."""
    return _choose_candidate(normalize_answer(prediction), normalize_candidates(candidates))


def _choose_candidate(pred_norm: str, candidates: CandidateSet) -> Optional[str]:
    # Both sides already normalised (see _token_prf); candidates once, as the reference does.
    pred_words = set(pred_norm.split())
    best: Optional[str] = None
    best_score = -1.0
    for norm in candidates:
        words = set(norm.split())
        score = len(pred_words & words) / len(words) if words else 0.0
        if score > best_score:
            best, best_score = norm, score
    return best


def open_scores(prediction: object, ground_truth: object,
                candidates: Optional[Sequence[object]] = None) -> Dict[str, float]:
    """Scores of one open-question answer: each of OPEN_METRICS (fractions in 0..1), plus
    `candidate_accuracy` when candidates are given (raw, or a CandidateSet from normalize_candidates to
    normalise them once for many questions)."""
    pred = normalize_answer(prediction)  # run_eval.py's evaluate(), and run_eval_batch.py's substring
    gt = normalize_answer(ground_truth)
    pred2, gt2 = normalize_answer(pred), normalize_answer(gt)  # again inside the reference's calculate_* functions
    precision, recall, f1 = _token_prf(pred2, gt2)
    pred_tokens = pred2.split()
    found = sum(1 for w in set(gt2.split()) if w in pred_tokens)
    scores = {
        "recall": recall,
        "precision": precision,
        "f1": f1,
        "exact_match": float(pred == gt),
        "llava_med_exact_match": found / len(pred_tokens) if pred_tokens else 0.0,
        "substring": float(gt in pred),
    }
    if candidates:
        scores["candidate_accuracy"] = float(_choose_candidate(pred2, normalize_candidates(candidates)) == gt2)
    return scores


def mean_scores(rows: Iterable[Dict[str, float]], keys: Sequence[str]) -> Dict[str, Optional[float]]:
    """{"n": count, key: mean over the rows that have key} for each key; a mean over no rows is None
    (not 0: an empty category has no accuracy)."""
    rows = list(rows)
    out: Dict[str, Optional[float]] = {"n": len(rows)}
    for key in keys:
        values: List[float] = [r[key] for r in rows if key in r]
        out[key] = sum(values) / len(values) if values else None
    return out
