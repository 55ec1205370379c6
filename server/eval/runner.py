"""Runs a model over a test set and writes LLaVA-Med-form answers as they arrive (what `eval --bundle/--url` do).

A source answers one question: BundleSource runs a bundle in this process (one engine, one question at a time),
URLSource asks a running service. `run_eval` drives either over the items with a thread pool, appends each
answer to the answer file as it completes, and on a rerun asks only the questions without an answer (a question
whose request failed is asked again). Once every question is answered the file is put in data set order, since
LLaVA-Med's evaluator pairs answers with questions by position.
"""
from __future__ import annotations

import logging
import time
from concurrent.futures import FIRST_COMPLETED, Future, ThreadPoolExecutor, wait
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any, Dict, Iterator, List, Optional, Sequence, Set, Tuple, Union

from server.eval.client import VQAClient
from server.eval.datasets import EvalItem
from server.eval.errors import PredictionsError, RequestError, ServiceError
from server.eval.predictions import Prediction, PredictionWriter, read_predictions, rewrite_predictions

log = logging.getLogger(__name__)
PathLike = Union[str, Path]
# Answer-file keys that must match on resume: answers made with other settings would mix two runs.
_RESUME_KEYS = ("max_tokens", "temperature", "seed")


@dataclass(frozen=True)
class GenerationSettings:
    """Greedy by default; LLaVA-Med's own evaluation sampled at temperature 0.7 (model_vqa_med.py at b9a98a7)."""

    max_tokens: int = 128
    temperature: float = 0.0
    seed: Optional[int] = None

    def seed_for(self, index: int) -> Optional[int]:
        """Question `index` (its position in the data set) gets seed + index: its answer does not depend on the
        order answers arrive in, the concurrency, or which questions a resumed run still had to ask."""
        return None if self.seed is None else self.seed + index


class BundleSource:
    """A bundle on the local runtime. One engine serves one request at a time, so concurrency is 1."""

    kind = "bundle"
    max_concurrency = 1

    def __init__(self, bundle: PathLike, **pipeline_options: Any) -> None:
        from server.runtime.pipeline import BundlePipeline

        self.pipeline = BundlePipeline(bundle, **pipeline_options)
        self.model_id: Optional[str] = self.pipeline.runtime.manifest.model.name  # what the service calls it too

    def answer(self, image: bytes, question: str, settings: GenerationSettings, seed: Optional[int]) -> Dict[str, Any]:
        from models.processor.image import ImageError
        from models.processor.templates import PromptError
        from server.runtime.errors import RequestError as RuntimeRequestError

        try:
            r = self.pipeline.ask(image, question, max_tokens=settings.max_tokens,
                                  temperature=settings.temperature, seed=seed)
        except (ImageError, PromptError, RuntimeRequestError) as e:
            raise RequestError(str(e), error_type=type(e).__name__) from e
        return {"text": r["answer"], "model_id": self.model_id, "finish_reason": r["finish_reason"],
                "usage": {"prompt_tokens": len(r["prompt_token_ids"]),
                          "completion_tokens": len(r["output_token_ids"])},
                "timings": r["timings"]}


class URLSource:
    """A running tinyllava-med service, asked over HTTP by several threads at once."""

    kind = "url"
    max_concurrency: Optional[int] = None

    def __init__(self, client: VQAClient) -> None:
        self.client = client
        self.model_id: Optional[str] = None  # the service names its model in each answer

    def answer(self, image: bytes, question: str, settings: GenerationSettings, seed: Optional[int]) -> Dict[str, Any]:
        r = self.client.vqa(image, question, max_tokens=settings.max_tokens, temperature=settings.temperature,
                            seed=seed)
        out = {"text": r["answer"].strip(), "model_id": r.get("model")}
        for key in ("finish_reason", "usage", "timings", "request_id"):
            if r.get(key) is not None:
                out[key] = r[key]
        return out


@dataclass
class RunSummary:
    total: int  # questions in the run
    resumed: int  # already answered in the answer file
    asked: int  # asked in this run
    errors: int  # questions whose request failed (in the file with an "error", asked again next run)
    seconds: float


def run_eval(items: Sequence[EvalItem], source: Any, answers: PathLike, settings: GenerationSettings, *,
             concurrency: int = 1, fresh: bool = False, progress: bool = True) -> RunSummary:
    """Answer every item not yet in the `answers` file (all of them with fresh=True), appending each answer as
    it arrives. A ServiceError stops the run after the requests in flight finish (their answers are kept)."""
    from tqdm import tqdm

    path = Path(answers)
    _prepare_file(path, settings, source.model_id, fresh)
    workers = max(1, min(concurrency, source.max_concurrency or concurrency))
    t0 = time.perf_counter()
    with PredictionWriter(path, resume=True) as writer:
        todo = [(i, item) for i, item in enumerate(items) if item.qid not in writer.done]
        with tqdm(total=len(items), initial=len(items) - len(todo), unit="q", desc="eval", disable=not progress,
                  dynamic_ncols=True) as bar, ThreadPoolExecutor(max_workers=workers) as pool:
            queue: Iterator[Tuple[int, EvalItem]] = iter(todo)
            pending: Set["Future[Prediction]"] = set()
            try:
                failure, errors = _drive(pool, source, settings, queue, pending, workers, writer, bar)
            except BaseException:
                for fut in pending:  # Ctrl-C: do not start what is queued; requests in flight finish
                    fut.cancel()
                raise
    seconds = time.perf_counter() - t0
    if failure is not None:
        raise failure
    _put_in_order(path, items)
    return RunSummary(total=len(items), resumed=len(items) - len(todo), asked=len(todo), errors=errors,
                      seconds=seconds)


def _drive(pool: ThreadPoolExecutor, source: Any, settings: GenerationSettings,
           queue: Iterator[Tuple[int, EvalItem]], pending: Set["Future[Prediction]"], workers: int,
           writer: PredictionWriter, bar: Any) -> Tuple[Optional[ServiceError], int]:
    """Keep `workers` questions in flight and write answers as they complete: (first ServiceError, errors)."""
    failure: Optional[ServiceError] = None
    errors = 0
    while True:
        # At most two questions per worker are queued: a stop (error, Ctrl-C) leaves little to drain.
        while failure is None and len(pending) < 2 * workers:
            nxt = next(queue, None)
            if nxt is None:
                break
            pending.add(pool.submit(_ask, source, nxt[1], settings, nxt[0]))
        if not pending:
            return failure, errors
        finished, still = wait(pending, return_when=FIRST_COMPLETED)
        pending.clear()
        pending.update(still)
        for fut in finished:
            try:
                pred = fut.result()
            except ServiceError as e:
                failure = failure or e
                continue
            writer.write(pred)
            if "error" in pred.extra:
                errors += 1
                bar.set_postfix(errors=errors)
            bar.update(1)


def _ask(source: Any, item: EvalItem, settings: GenerationSettings, index: int) -> Prediction:
    seed = settings.seed_for(index)
    meta = dict(asdict(settings), source=source.kind)
    base: Dict[str, Any] = {"model_id": source.model_id, "metadata": meta}
    try:
        image = item.image_path.read_bytes()
    except OSError as e:
        return _failed(item, base, RequestError("cannot read the image %s: %s" % (item.image_path, e)))
    t0 = time.perf_counter()
    try:
        out = source.answer(image, item.question, settings, seed)
    except RequestError as e:
        return _failed(item, base, e)
    latency = time.perf_counter() - t0
    text = out.pop("text")
    extra = dict(base, **out)
    return Prediction(question_id=item.qid, text=text, prompt=item.question, latency_s=round(latency, 6),
                      extra=extra, id_value=item.qid_value)


def _failed(item: EvalItem, base: Dict[str, Any], error: RequestError) -> Prediction:
    log.warning("question %s failed: %s", item.qid, error)
    return Prediction(question_id=item.qid, text="", prompt=item.question, extra=dict(base, error=error.to_json()),
                      id_value=item.qid_value)


def _prepare_file(path: Path, settings: GenerationSettings, model_id: Optional[str], fresh: bool) -> None:
    """Empty `path` (fresh, or no file yet) or keep its answers for a resumed run. Failed answers are removed
    (asked again); answers written with other settings or by another model are an error, since the file would
    mix two runs."""
    if fresh or not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(b"")
        return
    existing = read_predictions(path)
    want = asdict(settings)
    for p in existing:
        meta = p.extra.get("metadata") or {}
        differs = [k for k in _RESUME_KEYS if k in meta and meta[k] != want[k]]
        if differs or (model_id and p.extra.get("model_id") not in (None, model_id)):
            what = ", ".join("%s=%r (now %r)" % (k, meta[k], want[k]) for k in differs) or \
                "model %r (now %r)" % (p.extra.get("model_id"), model_id)
            raise PredictionsError("%s holds answers made with %s (question %s): pass --fresh to start over, or "
                                   "another --answers file" % (path, what, p.question_id))
    kept = [p for p in existing if "error" not in p.extra]
    rewrite_predictions(path, kept)  # also drops duplicate ids and a torn last line


def _put_in_order(path: Path, items: Sequence[EvalItem]) -> None:
    """Rewrite the answer file in data set order; answers for questions outside `items` (a run with a larger
    --limit) are kept, after them."""
    preds = {p.question_id: p for p in read_predictions(path)}
    ordered: List[Prediction] = [preds.pop(item.qid) for item in items if item.qid in preds]
    rewrite_predictions(path, ordered + list(preds.values()))
