"""LLaVA conversation records -> (prompt ids with the image sentinel, labels) for training.

A record is LLaVA's training format: {"id", "image", "conversations": [{"from": "human" | "gpt",
"value"}, ...]} with "<image>\\n" in the first human turn (also spelled "conversatons", as some
LLaVA-Med files do). The text is the model's prompt template rendered over the whole conversation
(models.processor.templates, the same renderer inference uses), tokenised as inference tokenises a
prompt (LLaVA's tokenizer_image_token). As in LLaVA's preprocess, only the assistant's tokens are
learned: every label is IGNORE_INDEX except the tokens of each assistant answer and the separator
that ends it (</s> for Llama), so the model learns to answer and to stop, never to write questions.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

from models.config import IMAGE_TOKEN, IMAGE_TOKEN_INDEX
from models.processor.templates import Template
from models.processor.tokenizer import TextTokenizer

IGNORE_INDEX = -100  # LLaVA constants.IGNORE_INDEX (torch cross_entropy's default ignore_index)
_ROLES = {"human": 0, "user": 0, "gpt": 1, "assistant": 1}


class ConversationError(ValueError):
    """A training record is not a LLaVA conversation this trainer can use."""


@dataclass(frozen=True)
class Example:
    image: str  # path relative to the images directory
    input_ids: List[int]  # with IMAGE_TOKEN_INDEX where the image embeddings go
    labels: List[int]  # same length; IGNORE_INDEX where no loss is taken


def read_records(path: Union[str, Path]) -> List[Dict[str, Any]]:
    """A .json list or a .jsonl file of conversation records."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ConversationError("cannot read %s: %s" % (path, e)) from None
    try:
        if path.suffix == ".jsonl":
            records = [json.loads(line) for line in text.splitlines() if line.strip()]
        else:
            records = json.loads(text)
    except ValueError as e:
        raise ConversationError("%s is not JSON (%s)" % (path, e)) from None
    if not isinstance(records, list) or not all(isinstance(r, dict) for r in records):
        raise ConversationError("%s: expected a list of conversation objects" % path)
    if not records:
        raise ConversationError("%s holds no conversations" % path)
    return records


def turns_of(record: Dict[str, Any], index: int = 0) -> List[Tuple[int, str]]:
    """[(role 0 = user | 1 = assistant, text)], checked: alternating, user first, image marker first."""
    turns = record.get("conversations", record.get("conversatons"))
    if not isinstance(turns, list) or len(turns) < 2:
        raise ConversationError("record %d: needs a 'conversations' list of at least one human and one gpt turn"
                                % index)
    out: List[Tuple[int, str]] = []
    for k, turn in enumerate(turns):
        role = _ROLES.get(str(turn.get("from", "")).lower()) if isinstance(turn, dict) else None
        if role is None or not isinstance(turn.get("value"), str):
            raise ConversationError("record %d turn %d: expected {'from': 'human'|'gpt', 'value': text}" % (index, k))
        if role != k % 2:
            raise ConversationError("record %d turn %d: turns must alternate human, gpt, human, ..." % (index, k))
        out.append((role, turn["value"]))
    first = out[0][1]
    if IMAGE_TOKEN in first:  # LLaVA puts the marker at the start or the end of the first question
        out[0] = (0, IMAGE_TOKEN + "\n" + first.replace(IMAGE_TOKEN, "").strip())
    else:
        out[0] = (0, IMAGE_TOKEN + "\n" + first.strip())
    if any(IMAGE_TOKEN in text for _, text in out[1:]):
        raise ConversationError("record %d: only the first human turn may hold %s (one image per conversation)"
                                % (index, IMAGE_TOKEN))
    if out[-1][0] == 0:
        out = out[:-1]  # a trailing question has no answer to learn
    return out


def render_with_spans(template: Template, turns: Sequence[Tuple[int, str]]) -> Tuple[str, List[Tuple[int, int]]]:
    """The template's text of the conversation and the character spans [start, end) of each assistant
    answer, from the space before it to the separator after it (what LLaVA's preprocess leaves unmasked)."""
    messages = [(template.roles[role], text) for role, text in turns]
    spans = []
    for k, (role, text) in enumerate(turns):
        if role == 1:
            before = template.render(messages[:k])
            # The span starts at the space after "ASSISTANT:": inference prompts end at the colon, so
            # the model generates that space (SentencePiece's "▁", a token of its own before digits).
            start = len(before) + len(template.roles[1]) + 1
            spans.append((start, len(template.render(messages[:k + 1]))))
    return template.render(messages), spans


def encode(tokenizer: TextTokenizer, template: Template, record: Dict[str, Any], index: int = 0) -> Example:
    """One record -> Example. Ids equal TextTokenizer.encode_with_image of the same text (the prompt
    inference builds), so a single-turn record's ids up to the answer are exactly the served prompt."""
    text, spans = render_with_spans(template, turns_of(record, index))
    image = record.get("image")
    if not isinstance(image, str) or not image:
        raise ConversationError("record %d: no 'image' file name" % index)
    backend = tokenizer.backend
    ids: List[int] = []
    labels: List[int] = []
    base = 0
    for c, chunk in enumerate(text.split(IMAGE_TOKEN)):
        if c:
            ids.append(IMAGE_TOKEN_INDEX)
            labels.append(IGNORE_INDEX)
        enc = backend.encode(chunk, add_special_tokens=True)
        for k, (tid, (start, end)) in enumerate(zip(enc.ids, enc.offsets)):
            if k == 0 and tokenizer.bos_id is not None and tid == tokenizer.bos_id and enc.special_tokens_mask[0]:
                if c:  # tokenizer_image_token keeps one BOS, the first chunk's
                    continue
                ids.append(tid)
                labels.append(IGNORE_INDEX)
                continue
            ids.append(tid)
            a, b = base + start, base + end
            labels.append(tid if any(a < e and b > s for s, e in spans) else IGNORE_INDEX)
        base += len(chunk) + len(IMAGE_TOKEN)
    if all(label == IGNORE_INDEX for label in labels):
        raise ConversationError("record %d: no answer tokens to learn (empty gpt turns?)" % index)
    return Example(image, ids, labels)


def encode_all(tokenizer: TextTokenizer, template: Template, records: Sequence[Dict[str, Any]],
               max_positions: Optional[int] = None, num_image_tokens: int = 0) -> Tuple[List[Example], int]:
    """Encode every record; with max_positions, drop those whose expanded length exceeds it.
    Returns (examples, number dropped)."""
    examples, dropped = [], 0
    for i, rec in enumerate(records):
        ex = encode(tokenizer, template, rec, i)
        if max_positions is not None and len(ex.input_ids) - 1 + num_image_tokens > max_positions:
            dropped += 1
            continue
        examples.append(ex)
    return examples, dropped


__all__ = ["ConversationError", "Example", "IGNORE_INDEX", "encode", "encode_all", "read_records",
           "render_with_spans", "turns_of"]
