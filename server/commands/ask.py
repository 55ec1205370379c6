"""`tinyllava-med ask`: one question about one image, from a checkpoint (PyTorch) or a bundle (runtime)."""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from models.processor.templates import TEMPLATES


def add_arguments(p: argparse.ArgumentParser) -> None:
    src = p.add_mutually_exclusive_group()
    src.add_argument("--checkpoint", help="checkpoint directory (llava, factory or hf layout): PyTorch")
    src.add_argument("--bundle", help="bundle directory from `tinyllava-med export`: ONNX Runtime (default: the "
                     "embedded synthetic-image demo bundle)")
    p.add_argument("--image", required=True, help="image file (PNG or JPEG)")
    p.add_argument("--question", required=True, help="the question")
    p.add_argument("--max-tokens", type=int, default=64, help="most tokens to generate (default 64)")
    p.add_argument("--template", choices=sorted(TEMPLATES), help="prompt template (default: the model's)")
    p.add_argument("--temperature", type=float, default=0.0, help="0 = greedy (default)")
    p.add_argument("--top-p", type=float, default=1.0)
    p.add_argument("--top-k", type=int, default=0)
    p.add_argument("--seed", type=int, default=None)
    p.add_argument("--ignore-eos", action="store_true", help="generate --max-tokens tokens through end-of-sequence "
                   "(timing and parity checks)")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    image_path = Path(args.image)
    if not image_path.is_file():
        print("error: image file %s not found" % image_path, file=sys.stderr)  # noqa: T201
        return 2
    if args.max_tokens < 1:
        print("error: --max-tokens must be at least 1", file=sys.stderr)  # noqa: T201
        return 2
    image = image_path.read_bytes()
    if args.checkpoint:
        from models.pipeline import TorchPipeline

        pipe = TorchPipeline(args.checkpoint, template=args.template)
    else:
        from server.runtime.pipeline import BundlePipeline
        from server.service.settings import DEFAULT_BUNDLE

        pipe = BundlePipeline(args.bundle or DEFAULT_BUNDLE, template=args.template)
    result = pipe.ask(image, args.question, max_tokens=args.max_tokens, temperature=args.temperature,
                      top_p=args.top_p, top_k=args.top_k, seed=args.seed, ignore_eos=args.ignore_eos)
    if args.json:
        print(json.dumps(result))  # noqa: T201
    else:
        print(result["answer"])  # noqa: T201
    return 0
