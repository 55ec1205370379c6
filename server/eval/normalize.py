"""Answer normalisation with the semantics of LLaVA-Med's evaluator (VQA-v2 style).

Written here, not copied; it reproduces what `normalize_word` in LLaVA-Med's
`llava/eval/eval_metrics/glossary.py` (commit b9a98a7) does to a lower-cased answer, quirks included,
so that scores are comparable with published LLaVA-Med / TinyLLaVA-Med numbers:
- the 21 punctuation marks are deleted when one of them touches a space anywhere in the answer (or the
  answer has a digit-comma-digit group), otherwise each becomes a space: "x-ray" -> "x ray",
  "left - sided" -> "left sided", "1,000" -> "1000";
- a period is deleted unless a digit follows it ("3.5 cm." -> "3.5 cm"), at most 32 of them (the reference
  passes re.UNICODE, which is 32, as the `count` argument of `sub`);
- "none" and "zero".."ten" become digits ("none" -> "0", "two" -> "2"); a, an, the are dropped;
- contractions written without an apostrophe get one ("isnt" -> "isn't").
"""
from __future__ import annotations

import re
from typing import Dict, List

# VQA-v2 evaluation punctuation list, as used by LLaVA-Med glossary.py (no period, colon or apostrophe).
_PUNCT = (";", "/", "[", "]", '"', "{", "}", "(", ")", "=", "+", "\\", "_", "-", ">", "<", "@", "`", ",", "?", "!")
_DIGIT_COMMA = re.compile(r"\d,\d")
_PERIOD = re.compile(r"\.(?!\d)")
_MAX_PERIODS = 32  # re.UNICODE == 32, passed as `count` by the reference (see module docstring)
# VQA-v2 / LLaVA-Med manual_map and articles.
_NUMBER_WORDS = {
    "none": "0", "zero": "0", "one": "1", "two": "2", "three": "3", "four": "4",
    "five": "5", "six": "6", "seven": "7", "eight": "8", "nine": "9", "ten": "10",
}
_ARTICLES = frozenset(("a", "an", "the"))

# The contractions of the VQA-v2 table (vqaEval.py, also LLaVA-Med glossary.py). The table's keys are these
# forms with exactly one apostrophe left out ("couldn't've" <- "couldnt've", "couldn'tve"); its entries for
# "I'd've", "I'm", "I've" have capitalised keys that never match a lower-cased word, so they are omitted.
_CONTRACTED = (
    "ain't aren't can't could've couldn't couldn't've didn't doesn't don't hadn't hadn't've hasn't haven't "
    "he'd he'd've he's how'd how'll how's isn't it'd it'd've it'll ma'am mightn't mightn't've might've "
    "mustn't must've needn't not've o'clock oughtn't 'ow's'at shan't she'd've should've shouldn't "
    "shouldn't've somebody'd've somebody'll somebody's someone'd someone'd've someone'll someone's "
    "something'd something'd've something'll that's there'd there'd've there're there's they'd they'd've "
    "they'll they're they've 'twas wasn't we'd've we've weren't what'll what're what's what've when's "
    "where'd where's where've who'd who'd've who'll who's who've why'll why're why's won't would've "
    "wouldn't wouldn't've y'all y'all'll y'all'd've you'd you'd've you'll you're you've"
).split()


def _contraction_table() -> Dict[str, str]:
    table: Dict[str, str] = {}
    for word in _CONTRACTED:
        for i, ch in enumerate(word):
            if ch == "'":
                table[word[:i] + word[i + 1:]] = word
    # The reference table maps this one the other way round; kept for identical scores.
    table["somebody'd"] = "somebodyd"
    return table


_CONTRACTIONS = _contraction_table()


def normalize_answer(text: object) -> str:
    """Lower-case and normalise an answer or prediction; numbers (VQA-RAD stores some as JSON numbers) are
    formatted with str() first. The result is space-separated tokens, possibly empty."""
    s = str(text).lower()
    delete = _DIGIT_COMMA.search(s) is not None
    out = s
    for p in _PUNCT:
        # The test looks at the answer as given, not at the partly rewritten one (as the reference does).
        if delete or (p + " ") in s or (" " + p) in s:
            out = out.replace(p, "")
        else:
            out = out.replace(p, " ")
    out = _PERIOD.sub("", out, count=_MAX_PERIODS)
    words: List[str] = []
    for word in out.split():
        word = _NUMBER_WORDS.get(word, word)
        if word not in _ARTICLES:
            words.append(_CONTRACTIONS.get(word, word))
    return " ".join(words).replace(",", "")

