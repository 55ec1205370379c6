"""`tinyllava-med make-checkpoint`: a random-weight checkpoint in one of the real on-disk layouts."""
from __future__ import annotations

import argparse
import json

from models.checkpoint.layouts import LAYOUTS
from models.config import preset_names


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("out", help="output directory (created; must be empty or absent)")
    p.add_argument("--preset", required=True, choices=preset_names(), help="model shape")
    p.add_argument("--format", required=True, choices=LAYOUTS, dest="fmt",
                   help="llava: LLaVA/bczhou as TinyLLaVA-Med ships; factory: TinyLLaVA_Factory; "
                        "hf: transformers LlavaForConditionalGeneration")
    p.add_argument("--seed", type=int, default=0, help="random seed (same seed, same weights)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="stored dtype")


def main(args: argparse.Namespace) -> int:
    from models.checkpoint.writer import make_checkpoint

    path = make_checkpoint(args.out, args.preset, args.fmt, seed=args.seed, dtype=args.dtype)
    print(json.dumps({"checkpoint": str(path), "preset": args.preset, "format": args.fmt}))  # noqa: T201
    return 0
