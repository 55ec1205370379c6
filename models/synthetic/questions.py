"""Questions about a Scene, with their answers and the data sets' category fields.

Closed questions are yes/no and balanced (the asked-about value is the true one half the time);
open ones have a small answer vocabulary (CT / MRI / X-ray, brain / lung / liver / spleen, left /
right, small / large, 0-3). Answers are one word, as in VQA-RAD and SLAKE. `content_type` is
SLAKE's field, `question_type` VQA-RAD's.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import List

import numpy as np

from models.synthetic.scene import MODALITIES, ORGAN_OF, SIDES, SIZES, Scene


@dataclass(frozen=True)
class QA:
    question: str
    answer: str
    answer_type: str  # "CLOSED" | "OPEN"
    content_type: str  # SLAKE: Abnormality, Position, Modality, Organ, Size, Quantity
    question_type: str  # VQA-RAD: ABN, POS, MODALITY, ORGAN, SIZE, COUNT, PRES


_ORGANS = tuple(sorted(set(ORGAN_OF.values())))


def _yes(flag: bool) -> str:
    return "yes" if flag else "no"


def _pick(rng: np.random.Generator, options: List[str]) -> str:
    return options[int(rng.integers(len(options)))]


def _asked(rng: np.random.Generator, truth: str, values: tuple) -> str:
    """The true value half the time, else another one: balanced yes/no answers."""
    if rng.random() < 0.5:
        return truth
    others = [v for v in values if v != truth]
    return others[int(rng.integers(len(others)))]


def questions(scene: Scene, rng: np.random.Generator) -> List[QA]:
    """Every question type that applies to the scene, one phrasing each."""
    qs: List[QA] = []
    if rng.random() < 0.5:
        qs.append(QA(_pick(rng, ["Is there an abnormality in this image?", "Is there a lesion?",
                                 "Does this image show an abnormality?"]),
                     _yes(scene.abnormal), "CLOSED", "Abnormality", "ABN"))
    else:
        qs.append(QA(_pick(rng, ["Is this image normal?", "Does this image look normal?"]),
                     _yes(not scene.abnormal), "CLOSED", "Abnormality", "ABN"))
    m = _asked(rng, scene.modality, MODALITIES)
    qs.append(QA("Is this %s %s image?" % ("an" if m[0] in "AEIMX" else "a", m), _yes(m == scene.modality),
                 "CLOSED", "Modality", "MODALITY"))
    o = _asked(rng, scene.organ, _ORGANS)
    qs.append(QA("Does this image show the %s?" % o, _yes(o == scene.organ), "CLOSED", "Organ", "ORGAN"))
    qs.append(QA(_pick(rng, ["What imaging modality was used?", "What modality is this?"]), scene.modality,
                 "OPEN", "Modality", "MODALITY"))
    qs.append(QA(_pick(rng, ["Which organ is shown in this image?", "What organ is shown?"]), scene.organ,
                 "OPEN", "Organ", "ORGAN"))
    qs.append(QA(_pick(rng, ["How many lesions are there?", "How many lesions are seen?"]), str(scene.count),
                 "OPEN", "Quantity", "COUNT"))
    if scene.abnormal:
        s = _asked(rng, scene.side, SIDES)
        qs.append(QA("Is the lesion on the %s side?" % s, _yes(s == scene.side), "CLOSED", "Position", "POS"))
        z = _asked(rng, scene.size, SIZES)
        qs.append(QA("Is the lesion %s?" % z, _yes(z == scene.size), "CLOSED", "Size", "SIZE"))
        qs.append(QA(_pick(rng, ["Where is the lesion?", "On which side is the lesion?"]), scene.side,
                     "OPEN", "Position", "POS"))
        qs.append(QA("Which organ is abnormal?", scene.abnormal_organ, "OPEN", "Organ", "ORGAN"))
        qs.append(QA("What is the size of the lesion?", scene.size, "OPEN", "Size", "SIZE"))
    return qs


def caption(scene: Scene) -> str:
    """A one-sentence description (the instruction-tuning stage's first answer)."""
    view = {"CT": "Axial CT", "MRI": "Axial MRI", "X-ray": "Frontal X-ray"}[scene.modality]
    where = {"head": "of the head", "chest": "of the chest", "abdomen": "of the abdomen"}[scene.region]
    if not scene.abnormal:
        return "%s %s. The %s looks normal, with no lesion." % (view, where, scene.organ)
    n = {1: "one", 2: "two", 3: "three"}[scene.count]
    noun = "lesion" if scene.count == 1 else "lesions"
    return "%s %s. There %s %s %s %s in the %s %s." % (
        view, where, "is" if scene.count == 1 else "are", n, scene.size, noun, scene.side, scene.abnormal_organ)


__all__ = ["QA", "caption", "questions"]
