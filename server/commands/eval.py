"""`tinyllava-med eval`: score a model on VQA-RAD, SLAKE, PathVQA or LLaVA-Med's converted files.

`--bundle DIR` runs a bundle here and `--url URL` asks a running server; both write the answer file (LLaVA-Med's
jsonl form) as answers arrive, resume it on a rerun, then score it. `--predictions FILE` scores an existing
answer file without any model, and `--compare A.json B.json` prints the delta table of two reports.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

from server.eval.datasets import DATASETS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--dataset", choices=DATASETS, help="test set layout")
    p.add_argument("--data", metavar="DIR", help="the data set's directory as distributed (llava-med: also a file)")
    p.add_argument("--split", default="test", help="split to score (default test)")
    src = p.add_mutually_exclusive_group()
    src.add_argument("--bundle", metavar="DIR", help="run a bundle locally (ONNX Runtime / TensorRT)")
    src.add_argument("--url", help="ask a running tinyllava-med server")
    src.add_argument("--predictions", metavar="FILE",
                     help="score an existing answer file: jsonl, one {\"question_id\", \"text\"} per line")
    p.add_argument("--api-key", metavar="KEY", default=os.environ.get("TINYLLAVA_API_KEY"),
                   help="API key for --url (default: $TINYLLAVA_API_KEY, which keeps it out of the process list)")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N questions of the split")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="requests in flight with --url")
    p.add_argument("--out", metavar="DIR", help="write report.json, report.md, per_question.jsonl, accuracy.png "
                   "(and answers.jsonl with --bundle/--url)")
    p.add_argument("--answers", metavar="FILE", help="answer file of --bundle/--url (default OUT/answers.jsonl); "
                   "a rerun asks only the questions it does not answer yet")
    p.add_argument("--fresh", action="store_true", help="start the answer file over instead of resuming it")
    p.add_argument("--max-tokens", type=int, default=128, metavar="N", help="most tokens per answer (default 128)")
    p.add_argument("--temperature", type=float, default=0.0,
                   help="0 = greedy (default); LLaVA-Med's own evaluation sampled at 0.7")
    p.add_argument("--seed", type=int, metavar="S", help="sampling seed; question i uses S + i")
    p.add_argument("--timeout", type=float, default=300.0, metavar="SECONDS", help="per request with --url")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--all-languages", action="store_true", help="SLAKE: keep the Chinese questions too")
    p.add_argument("--candidates", metavar="FILE",
                   help="LLaVA-Med train_open_answers.json: adds run_eval.py's candidate accuracy for open questions")
    p.add_argument("--allow-missing", action="store_true", help="score a partial answer file")
    p.add_argument("--no-chart", action="store_true", help="do not draw accuracy.png")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print the delta table of two reports")


def _fail(message: str, code: int = 2) -> int:
    print("error: %s" % message, file=sys.stderr)  # noqa: T201
    return code


def _read_candidates(path: str) -> Sequence[str]:
    from server.eval.errors import EvalError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EvalError("cannot read candidates %s: %s" % (path, e)) from e
    # LLaVA-Med's file is {"0": [answers]}; a plain list is accepted too.
    values = data.get("0") if isinstance(data, dict) else data
    if not isinstance(values, list) or not values:
        raise EvalError("%s: expected {\"0\": [answers]} or a non-empty list of answers" % path)
    from server.eval.metrics import normalize_candidates

    return normalize_candidates(values)  # once for the whole run


def _compare(paths: List[str]) -> int:
    from server.eval.report import load_report, render_comparison

    a, b = load_report(paths[0]), load_report(paths[1])
    print(render_comparison(a, b, name_a=paths[0], name_b=paths[1]), end="")  # noqa: T201
    return 0


def _language(args: argparse.Namespace) -> Optional[str]:
    return None if args.all_languages else "en"


def _score_file(args: argparse.Namespace) -> int:
    from server.eval.datasets import load_dataset
    from server.eval.errors import PredictionsError
    from server.eval.predictions import read_predictions

    items = load_dataset(args.dataset, args.data, args.split, language=_language(args), check_images=False)
    predictions = read_predictions(args.predictions)
    if args.limit is not None:
        known = {item.qid for item in items}
        unknown = [p.question_id for p in predictions if p.question_id not in known]
        if unknown:
            raise PredictionsError("%d answers have ids that are not in this data set split (e.g. %s)"
                                   % (len(unknown), unknown[0]))
        items = items[:args.limit]
        kept = {item.qid for item in items}
        predictions = [p for p in predictions if p.question_id in kept]
    return _report(args, items, predictions, {"source": "predictions", "predictions": str(args.predictions)},
                   allow_missing=args.allow_missing)


def _report(args: argparse.Namespace, items: List[Any], predictions: List[Any], source_meta: Dict[str, Any],
            allow_missing: bool) -> int:
    """Score, print the Markdown report, write the report files with --out."""
    from server.eval.report import render_markdown, write_report
    from server.eval.scoring import score_rows, summarize

    candidates = _read_candidates(args.candidates) if args.candidates else None
    rows = score_rows(items, predictions, candidates=candidates, allow_missing=allow_missing)
    meta: Dict[str, Any] = {"dataset": args.dataset, "split": args.split, "language": _language(args) or "all"}
    meta.update(source_meta)
    if args.limit is not None:
        meta["limit"] = args.limit
    report = summarize(rows, n_items=len(items), meta=meta)
    print(render_markdown(report), end="")  # noqa: T201
    if args.out:
        written = write_report(report, args.out, rows=rows, chart=not args.no_chart)
        for kind, path in written.items():
            print("wrote %s: %s" % (kind, path), file=sys.stderr)  # noqa: T201
    return 0


def main(args: argparse.Namespace) -> int:
    from server.eval.errors import EvalError

    if args.limit is not None and args.limit < 1:
        return _fail("--limit must be at least 1")
    if args.concurrency < 1:
        return _fail("--concurrency must be at least 1")
    try:
        if args.compare:
            return _compare(args.compare)
        if not args.dataset or not args.data:
            return _fail("--dataset and --data are required (or --compare A.json B.json)")
        if args.bundle or args.url:
            return _run_model(args)
        if not args.predictions:
            return _fail("give one of --bundle DIR, --url URL or --predictions FILE")
        return _score_file(args)
    except EvalError as e:
        return _fail(str(e), code=1)


def _run_model(args: argparse.Namespace) -> int:
    """--bundle / --url: answer the questions (resuming the answer file), then score the answers."""
    from server.eval.client import VQAClient
    from server.eval.datasets import load_dataset
    from server.eval.predictions import read_predictions
    from server.eval.runner import BundleSource, GenerationSettings, URLSource, run_eval

    if args.max_tokens < 1:
        return _fail("--max-tokens must be at least 1")
    if args.temperature < 0:
        return _fail("--temperature must be 0 (greedy) or more")
    if not args.answers and not args.out:
        return _fail("give --out DIR (answers go to DIR/answers.jsonl as they arrive) or --answers FILE")
    answers = Path(args.answers) if args.answers else Path(args.out) / "answers.jsonl"
    items = load_dataset(args.dataset, args.data, args.split, language=_language(args), check_images=True)
    if args.limit is not None:
        items = items[:args.limit]
    if args.bundle:
        if args.concurrency > 1:
            print("note: --bundle runs one engine in this process, which answers one question at a time; "  # noqa: T201
                  "--concurrency %d is ignored (it applies to --url)" % args.concurrency, file=sys.stderr)  # noqa: T201
        source: Any = BundleSource(args.bundle)
        source_meta: Dict[str, Any] = {"source": "bundle", "bundle": str(args.bundle)}
    else:
        source = URLSource(VQAClient(args.url, api_key=args.api_key, timeout_s=args.timeout))
        source_meta = {"source": "url", "url": args.url}
    settings = GenerationSettings(max_tokens=args.max_tokens, temperature=args.temperature, seed=args.seed)
    summary = run_eval(items, source, answers, settings, concurrency=args.concurrency, fresh=args.fresh,
                       progress=not args.no_progress)
    print("answered %d questions (%d from an earlier run) in %.1f s; answers: %s"  # noqa: T201
          % (summary.asked, summary.resumed, summary.seconds, answers), file=sys.stderr)
    wanted = {item.qid for item in items}
    preds = [p for p in read_predictions(answers) if p.question_id in wanted]
    failed = [p for p in preds if "error" in p.extra]
    source_meta.update(answers=str(answers), max_tokens=settings.max_tokens, temperature=settings.temperature,
                       seed=settings.seed, errors=len(failed))
    if failed:
        print("warning: %d questions failed (e.g. %s: %s); they are left out of the scores, and a rerun asks them "  # noqa: T201
              "again" % (len(failed), failed[0].question_id, failed[0].extra["error"].get("message")),
              file=sys.stderr)  # noqa: T201
    code = _report(args, items, [p for p in preds if "error" not in p.extra], source_meta, allow_missing=True)
    return 1 if failed else code
