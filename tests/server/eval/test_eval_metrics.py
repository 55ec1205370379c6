"""Golden values for the eval metrics: every expected number is worked out by hand in the comment beside it,
following the rules of LLaVA-Med's evaluator (b9a98a7) as documented in server/eval/metrics.py."""
from __future__ import annotations

import pytest

from server.eval.metrics import choose_candidate, closed_scores, mean_scores, open_scores, token_prf
from server.eval.normalize import normalize_answer


@pytest.mark.parametrize("raw, expected", [
    # lower-case; "." not followed by a digit removed; article "the" dropped
    ("The liver.", "liver"),
    # ", " touches a space, so every "," is deleted (not replaced by a space)
    ("Yes, there is no fracture", "yes there is no fracture"),
    # "-" touches no space: replaced by a space
    ("X-ray", "x ray"),
    # " -" and "- " occur: "-" deleted, the double space collapses on split
    ("left - sided", "left sided"),
    # digit,digit: every punctuation mark deleted, "1,000" -> "1000"
    ("1,000 cells", "1000 cells"),
    # a period followed by a digit stays; the final one goes
    ("3.5 cm.", "3.5 cm"),
    # number words become digits; "none" becomes "0" (not "no"!)
    ("Two", "2"), ("ten lesions", "10 lesions"), ("None", "0"),
    # "an" dropped, "(", ")" become spaces (no space touches them)
    ("An MRI(T2)", "mri t2"),
    # "?" touches a space? no ("it?" then end): replaced by a space; "isnt" gains its apostrophe
    ("Isnt it?", "isn't it"),
    # JSON numbers from VQA-RAD are formatted first
    (2, "2"),
    # only articles and punctuation: nothing left
    ("The ?", ""),
])
def test_normalize_answer(raw, expected):
    assert normalize_answer(raw) == expected


# (ground truth, prediction, llava_med_gated, substring, strict)
CLOSED_CASES = [
    # "normal" contains the substring "no": the gate passes and "no" in "normal" -> 1, 1; no word "no" -> strict 0
    ("no", "Normal", 1.0, 1.0, 0.0),
    # "cannot" contains "no": gate passes, "no" is a substring -> 1, 1; strict finds no yes/no word -> 0
    ("no", "I cannot determine", 1.0, 1.0, 0.0),
    # normalised "eyes are normal": "yes" inside "eyes" passes the gate and matches -> 1, 1; strict 0
    ("yes", "The eyes are normal.", 1.0, 1.0, 0.0),
    # "yes there is no fracture": both "yes" and "no" are substrings -> right for both ground truths;
    # strict takes the first yes/no word, "yes"
    ("yes", "Yes, there is no fracture", 1.0, 1.0, 1.0),
    ("no", "Yes, there is no fracture", 1.0, 1.0, 0.0),
    # "not sure" contains "no" -> gated and substring both 1; strict 0
    ("no", "Not sure", 1.0, 1.0, 0.0),
    # a non-yes/no closed answer: the gate (no "yes"/"no" in "left") gives 0 even for the exact answer;
    # substring 1; strict = whole-word match 1
    ("left", "Left", 0.0, 1.0, 1.0),
    # "left side": gate 0, substring 1, whole word "left" present -> strict 1
    ("left", "The left side.", 0.0, 1.0, 1.0),
    # "leftward": substring 1 but not a whole word -> strict 0
    ("left", "leftward", 0.0, 1.0, 0.0),
    # numbers written as words: "two" -> "2", "2" -> "2"; no yes/no so gate 0; substring 1; strict 1
    (2, "two", 0.0, 1.0, 1.0),
    # "1" is a substring of "10": substring 1, strict 0 (whole word "10" != "1"); gate 0
    ("1", "10", 0.0, 1.0, 0.0),
    # a plain wrong answer: "no." -> "no"; "yes" not in it -> 0 everywhere
    ("yes", "No.", 0.0, 0.0, 0.0),
    # "yes/no" -> "yes no" ("/" touches no space -> " "); gate passes, "no" substring -> 1, 1; first word yes -> 0
    ("no", "yes/no", 1.0, 1.0, 0.0),
]


@pytest.mark.parametrize("gt, pred, gated, substring, strict", CLOSED_CASES)
def test_closed_pitfalls(gt, pred, gated, substring, strict):
    assert closed_scores(pred, gt) == {"llava_med_gated": gated, "substring": substring, "strict": strict}


def test_token_prf_counts_shared_words_as_often_as_the_prediction_has_them():
    # pred kidney x2, liver x1; gt kidney. tp = 2 (kidney's count in the prediction), fp = 1, fn = 0
    # precision 2/3, recall 2/2 = 1, F1 = 2 * (2/3) / (5/3) = 0.8
    p, r, f = token_prf("kidney kidney liver", "kidney")
    assert (p, r, f) == pytest.approx((2 / 3, 1.0, 0.8))


def test_open_scores_partial_answer():
    # "the right kidney" -> tokens right kidney; pred "Kidney." -> kidney
    # tp 1, fp 0, fn 1 (right): precision 1, recall 1/2, F1 2*1*0.5/1.5 = 2/3
    # exact match 0; LLaVA-Med "exact match score" = distinct gt words in pred (1) / pred tokens (1) = 1
    # substring: "right kidney" in "kidney"? no -> 0
    s = open_scores("Kidney.", "the right kidney")
    assert s == pytest.approx({"recall": 0.5, "precision": 1.0, "f1": 2 / 3, "exact_match": 0.0,
                               "llava_med_exact_match": 1.0, "substring": 0.0})


def test_open_scores_verbose_answer():
    # gt "left lung"; pred "The lesion is in the left lung." -> lesion is in left lung (5 tokens)
    # tp 2, fp 3, fn 0: precision 2/5, recall 1, F1 = 2*0.4*1/1.4 = 4/7
    # exact 0; LLaVA-Med score 2/5; substring "left lung" in "lesion is in left lung" -> 1
    s = open_scores("The lesion is in the left lung.", "Left lung")
    assert s == pytest.approx({"recall": 1.0, "precision": 0.4, "f1": 4 / 7, "exact_match": 0.0,
                               "llava_med_exact_match": 0.4, "substring": 1.0})


def test_open_scores_numbers_punctuation_and_articles():
    # "Two lesions." -> "2 lesions"; "2 lesions" -> "2 lesions": identical, everything 1
    s = open_scores("Two lesions.", "2 lesions")
    assert s == pytest.approx({"recall": 1.0, "precision": 1.0, "f1": 1.0, "exact_match": 1.0,
                               "llava_med_exact_match": 1.0, "substring": 1.0})


def test_open_scores_empty_prediction():
    # no prediction tokens: precision/recall/F1 all 0, LLaVA-Med score 0 (division by zero guarded);
    # "" == "liver"? no; "liver" in ""? no
    s = open_scores("", "liver")
    assert s == {"recall": 0.0, "precision": 0.0, "f1": 0.0, "exact_match": 0.0,
                 "llava_med_exact_match": 0.0, "substring": 0.0}


def test_open_scores_normalise_as_often_as_the_reference():
    # LLaVA-Med's run_eval.py (b9a98a7) normalises each side once in evaluate(), then calculate_f1score,
    # calculate_exactmatch and calculate_appearance_with_normalization normalise their inputs again.
    # normalize_answer deletes at most 32 periods (re.UNICODE passed as `count`), so once:
    # '.' * 40 + 'liver' -> '.' * 8 + 'liver', and twice -> 'liver'.
    pred = "." * 40 + "liver"
    assert normalize_answer(pred) == "." * 8 + "liver"
    assert normalize_answer(normalize_answer(pred)) == "liver"
    # Twice-normalised 'liver' vs 'liver': precision = recall = f1 = 1, the reference's exact match 1/1 = 1.
    # Ours (exact_match) compares the once-normalised strings: '........liver' != 'liver' -> 0. The open
    # substring is run_eval_batch.py's, on once-normalised strings: 'liver' in '........liver' -> 1.
    assert open_scores(pred, "liver") == {"recall": 1.0, "precision": 1.0, "f1": 1.0, "exact_match": 0.0,
                                          "llava_med_exact_match": 1.0, "substring": 1.0}
    # Candidates are normalised once (inside calculate_appearance_with_normalization), the prediction twice:
    # 'liver' covers all of "liver" and none of "kidney" -> "liver" == the twice-normalised ground truth -> 1.
    # choose_candidate on the raw prediction normalises it once: '........liver' covers nothing -> the first.
    cands = ["kidney", "liver"]
    assert choose_candidate(pred, cands) == "kidney"
    assert open_scores(pred, "liver", cands)["candidate_accuracy"] == 1.0


def test_candidate_accuracy():
    cands = ["left lung", "right lung", "liver"]
    # pred words {lesion, is, in, left, lung}: left lung covers 2/2, right lung 1/2, liver 0/1 -> "left lung"
    assert choose_candidate("The lesion is in the left lung", cands) == "left lung"
    assert open_scores("The lesion is in the left lung", "left lung", cands)["candidate_accuracy"] == 1.0
    # pred "lung": left lung 1/2 and right lung 1/2 tie; the first wins -> "left lung" != "right lung" -> 0
    assert open_scores("lung", "right lung", cands)["candidate_accuracy"] == 0.0


def test_mean_scores():
    rows = [{"a": 1.0, "b": 0.0}, {"a": 0.0, "b": 0.0}, {"a": 1.0, "b": 1.0}]
    # a: 2/3, b: 1/3
    assert mean_scores(rows, ("a", "b")) == pytest.approx({"n": 3, "a": 2 / 3, "b": 1 / 3})
    # no rows: n 0 and None, not 0
    assert mean_scores([], ("a",)) == {"n": 0, "a": None}
