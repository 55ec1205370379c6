"""`tinyllava-med eval`: score a model on VQA-RAD, SLAKE, PathVQA or LLaVA-Med's converted files.

Now: `--predictions FILE` scores an existing answer file (LLaVA-Med's jsonl form) without any model, and
`--compare A.json B.json` prints the delta table of two reports. `--bundle` and `--url` (running the model)
are declared here so the command line is stable, and answer with a clear error until the runner lands.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import List, Optional

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
    p.add_argument("--api-key", metavar="KEY", help="API key for --url")
    p.add_argument("--limit", type=int, metavar="N", help="only the first N questions of the split")
    p.add_argument("--concurrency", type=int, default=1, metavar="N", help="requests in flight with --url")
    p.add_argument("--out", metavar="DIR", help="write report.json, report.md, per_question.jsonl, accuracy.png")
    p.add_argument("--all-languages", action="store_true", help="SLAKE: keep the Chinese questions too")
    p.add_argument("--candidates", metavar="FILE",
                   help="LLaVA-Med train_open_answers.json: adds run_eval.py's candidate accuracy for open questions")
    p.add_argument("--allow-missing", action="store_true", help="score a partial answer file")
    p.add_argument("--no-chart", action="store_true", help="do not draw accuracy.png")
    p.add_argument("--compare", nargs=2, metavar=("A.json", "B.json"), help="print the delta table of two reports")


def _fail(message: str, code: int = 2) -> int:
    print("error: %s" % message, file=sys.stderr)  # noqa: T201
    return code


def _read_candidates(path: str) -> List[object]:
    from server.eval.errors import EvalError

    try:
        data = json.loads(Path(path).read_text(encoding="utf-8"))
    except (OSError, ValueError) as e:
        raise EvalError("cannot read candidates %s: %s" % (path, e)) from e
    # LLaVA-Med's file is {"0": [answers]}; a plain list is accepted too.
    values = data.get("0") if isinstance(data, dict) else data
    if not isinstance(values, list) or not values:
        raise EvalError("%s: expected {\"0\": [answers]} or a non-empty list of answers" % path)
    return values


def _compare(paths: List[str]) -> int:
    from server.eval.report import load_report, render_comparison

    a, b = load_report(paths[0]), load_report(paths[1])
    print(render_comparison(a, b, name_a=paths[0], name_b=paths[1]), end="")  # noqa: T201
    return 0


def _score_file(args: argparse.Namespace) -> int:
    from server.eval.datasets import load_dataset
    from server.eval.errors import PredictionsError
    from server.eval.predictions import read_predictions
    from server.eval.report import render_markdown, write_report
    from server.eval.scoring import score_rows, summarize

    language: Optional[str] = None if args.all_languages else "en"
    items = load_dataset(args.dataset, args.data, args.split, language=language, check_images=False)
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
    candidates = _read_candidates(args.candidates) if args.candidates else None
    rows = score_rows(items, predictions, candidates=candidates, allow_missing=args.allow_missing)
    meta = {"dataset": args.dataset, "split": args.split, "source": "predictions",
            "predictions": str(args.predictions), "language": language or "all"}
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
            flag = "--bundle" if args.bundle else "--url"
            return _fail("%s is not available yet in this version; run the model elsewhere and score its answer "
                         "file with --predictions FILE" % flag)
        if not args.predictions:
            return _fail("give one of --bundle DIR, --url URL or --predictions FILE")
        return _score_file(args)
    except EvalError as e:
        return _fail(str(e), code=1)
