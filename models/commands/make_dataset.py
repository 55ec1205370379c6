"""`tinyllava-med make-dataset`: the synthetic medical VQA set (models/synthetic) in an eval layout."""
from __future__ import annotations

import argparse
import json

from models.synthetic.dataset import FORMATS


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output directory (created; must be empty or absent)")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same bytes)")
    p.add_argument("--train", type=int, default=1000, help="training images (each has 6-11 questions)")
    p.add_argument("--test", type=int, default=50, help="held-out test images (different scenes)")
    p.add_argument("--format", choices=FORMATS, default="llava-med", dest="fmt",
                   help="vqa-rad / slake: those data sets' layouts; llava-med: instruction conversations "
                        "(train.json) and LLaVA-Med's VQA format (test.json); all read by `eval --dataset`")
    p.add_argument("--dicom-every", type=int, default=8, metavar="N",
                   help="write every N-th image as DICOM instead of PNG (0: none)")


def main(args: argparse.Namespace) -> int:
    from models.synthetic.dataset import make_dataset

    root = make_dataset(args.out, seed=args.seed, train=args.train, test=args.test, fmt=args.fmt,
                        dicom_every=args.dicom_every)
    print(json.dumps({"data": str(root), "format": args.fmt, "seed": args.seed}))  # noqa: T201
    return 0
