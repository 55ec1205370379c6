"""`tinyllava-med export`: checkpoint -> ONNX bundle, gated for TensorRT 8.5."""
from __future__ import annotations

import argparse
import json

from models.processor.templates import TEMPLATES


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("checkpoint", help="checkpoint directory (llava, factory or hf layout)")
    p.add_argument("--out", required=True, help="bundle directory to create (must be empty or absent)")
    p.add_argument("--opset", type=int, choices=(16, 17), default=16,
                   help="ONNX opset (default 16: TensorRT 8.5 has no LayerNormalization)")
    p.add_argument("--max-context", type=int, default=None,
                   help="KV cache length in tokens (default: the model's max positions, 2048 for TinyLlama)")
    p.add_argument("--dtype", choices=("float32", "float16"), default="float32", help="weights and activations")
    p.add_argument("--template", choices=sorted(TEMPLATES), help="prompt template to record (default: the layout's)")


def main(args: argparse.Namespace) -> int:
    from engine_build.export import export_bundle

    out = export_bundle(args.checkpoint, args.out, opset=args.opset, max_context=args.max_context,
                        dtype=args.dtype, template=args.template)
    print(json.dumps({"bundle": str(out)}))  # noqa: T201
    return 0
