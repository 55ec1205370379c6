"""The answer file: jsonl, one prediction per line, in LLaVA-Med's answer-file form.

A line is {"question_id": <the data set's qid>, "prompt": question, "text": answer, ...}; LLaVA-Med's
`model_vqa_med.py` writes the same keys, so its answer files can be scored here and ours there. We add
"latency_s" (seconds from request to full answer) and any extra keys the runner passes (model, timings).

Written to survive a crash or Ctrl-C: each line is appended, flushed and fsynced as its answer arrives, so
a rerun reads back the ids already answered and asks only the rest. A process killed mid-write can leave a
truncated last line; reading tolerates it (it is dropped, and the writer cuts it off before appending).
"""
from __future__ import annotations

import json
import logging
import os
import threading
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, List, Optional, Set, Tuple, Union

from server.eval.errors import PredictionsError

log = logging.getLogger(__name__)
PathLike = Union[str, Path]


@dataclass
class Prediction:
    """One answer. `question_id` is kept as a string (ids are compared as strings: VQA-RAD and SLAKE use
    JSON numbers, answer files written elsewhere may quote them); `id_value` is the id as written to the
    file (the data set's own type, so that LLaVA-Med's `==` on ids holds), the string when None."""

    question_id: str
    text: str
    prompt: Optional[str] = None
    latency_s: Optional[float] = None
    extra: Dict[str, Any] = field(default_factory=dict)
    id_value: Any = None

    def to_json(self) -> Dict[str, Any]:
        qid = self.question_id if self.id_value is None else self.id_value
        out: Dict[str, Any] = {"question_id": qid, "prompt": self.prompt, "text": self.text}
        if self.latency_s is not None:
            out["latency_s"] = self.latency_s
        for key, value in self.extra.items():
            out.setdefault(key, value)
        return out

    @classmethod
    def from_json(cls, rec: Dict[str, Any]) -> "Prediction":
        extra = {k: v for k, v in rec.items() if k not in ("question_id", "prompt", "text", "latency_s")}
        latency = rec.get("latency_s")
        text = rec["text"]
        return cls(question_id=str(rec["question_id"]), text="" if text is None else str(text),
                   prompt=None if rec.get("prompt") is None else str(rec["prompt"]),
                   latency_s=None if latency is None else float(latency), extra=extra,
                   id_value=rec["question_id"])


def _parse(path: Path) -> Tuple[List[Prediction], int, bool]:
    """(predictions, byte length of the complete lines, whether those bytes end in a newline). A last line
    without its newline that is not valid JSON is a torn write and is dropped; a bad line anywhere else is
    an error."""
    data = path.read_bytes()
    lines = data.split(b"\n")
    good_end = 0
    preds: List[Prediction] = []
    offset = 0
    for line_no, raw in enumerate(lines, 1):
        is_last = line_no == len(lines)
        end = offset + len(raw) + (0 if is_last else 1)
        if raw.strip():
            try:
                rec = json.loads(raw.decode("utf-8"))
            except ValueError as e:  # UnicodeDecodeError is a ValueError too
                if is_last:
                    log.warning("%s: dropping a truncated last line (%d bytes)", path, len(raw))
                    break
                raise PredictionsError("%s line %d is not JSON (%s); fix or delete that line"
                                       % (path, line_no, e)) from e
            if not isinstance(rec, dict) or "question_id" not in rec or "text" not in rec:
                raise PredictionsError("%s line %d: expected an object with 'question_id' and 'text'"
                                       % (path, line_no))
            preds.append(Prediction.from_json(rec))
        offset = end
        good_end = end
    return preds, good_end, data.endswith(b"\n", 0, good_end)


def read_predictions(path: PathLike) -> List[Prediction]:
    """Predictions in file order. A question id given twice keeps its last answer (with a warning)."""
    path = Path(path)
    if not path.is_file():
        raise PredictionsError("answer file %s not found" % path)
    preds, _, _ = _parse(path)
    by_id: Dict[str, Prediction] = {}
    for p in preds:
        if p.question_id in by_id:
            log.warning("%s: question %s answered twice; keeping the last answer", path, p.question_id)
            del by_id[p.question_id]
        by_id[p.question_id] = p
    return list(by_id.values())


def rewrite_predictions(path: PathLike, predictions: Iterable[Prediction]) -> None:
    """Replace the answer file with `predictions`, in that order, atomically (a temporary file renamed over
    it), so a crash leaves either the old file or the new one."""
    path = Path(path)
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        for p in predictions:
            f.write((json.dumps(p.to_json(), ensure_ascii=False) + "\n").encode("utf-8"))
        f.flush()
        os.fsync(f.fileno())
    os.replace(str(tmp), str(path))


class PredictionWriter:
    """Appends predictions to an answer file, one durable line each; thread-safe (concurrent requests).

    With resume=True an existing file is kept: `done` holds its question ids and a torn last line is cut
    off. With resume=False an existing file is replaced."""

    def __init__(self, path: PathLike, resume: bool = True) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.done: Set[str] = set()
        self._lock = threading.Lock()
        if resume and self.path.is_file():
            preds, good_end, ends_in_newline = _parse(self.path)
            self.done = {p.question_id for p in preds}
            if good_end < self.path.stat().st_size:
                with open(self.path, "r+b") as f:
                    f.truncate(good_end)
            if good_end and not ends_in_newline:
                # The last complete record lacks its newline (a file written elsewhere): add it before appending.
                with open(self.path, "ab") as f:
                    f.write(b"\n")
        self._file = open(self.path, "ab" if resume else "wb")

    def write(self, prediction: Prediction) -> None:
        """Append one prediction and fsync it. Writing an id twice is a caller bug."""
        line = (json.dumps(prediction.to_json(), ensure_ascii=False) + "\n").encode("utf-8")
        with self._lock:
            if prediction.question_id in self.done:
                raise PredictionsError("question %s is already in %s" % (prediction.question_id, self.path))
            self._file.write(line)
            self._file.flush()
            os.fsync(self._file.fileno())
            self.done.add(prediction.question_id)

    def close(self) -> None:
        with self._lock:
            if not self._file.closed:
                self._file.close()

    def __enter__(self) -> "PredictionWriter":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
