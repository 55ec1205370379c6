"""`tinyllava-med quantize`: FP32 bundle -> fp16 / int8 (TensorRT QDQ) / int8-cpu bundle."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="FP32 bundle directory (from `tinyllava-med export`)")
    p.add_argument("--precision", required=True, choices=("fp16", "int8", "int8-cpu"),
                   help="fp16: FP16 with FP32 norms/softmax/rotary; int8: explicit QDQ for TensorRT (W8A8, "
                        "calibrated); int8-cpu: dynamic W8A8 for ONNX Runtime CPU only")
    p.add_argument("--out", required=True, help="bundle directory to create (must be empty or absent)")
    p.add_argument("--calibration", type=Path, help="int8: directory of PNG/JPEG calibration images "
                                                    "(default: the built-in probe set)")
    p.add_argument("--calibration-samples", type=int, default=128,
                   help="int8: most decoder calls recorded for calibration (memory grows with it; default 128)")
    p.add_argument("--exclude", nargs="+", default=[], metavar="PATTERN",
                   help="more node-name patterns (fnmatch) kept in float, e.g. '/language_model/layers.1/*'")
    p.add_argument("--no-default-exclude", action="store_true",
                   help="int8: also quantize the first decoder block and lm_head (kept float by default)")
    p.add_argument("--no-vision", dest="vision", action="store_false", help="keep the vision graph FP32")
    p.add_argument("--no-decoder", dest="decoder", action="store_false", help="keep the decoder graph FP32")

def main(args: argparse.Namespace) -> int:
    from engine_build.quantize import DEFAULT_EXCLUDE, QuantizeOptions, quantize_bundle

    graphs = [g for g, on in (("vision", args.vision), ("decoder", args.decoder)) if on]
    exclude = list(args.exclude)
    if args.precision != "fp16" and not args.no_default_exclude:
        exclude = list(DEFAULT_EXCLUDE) + exclude
    opts = QuantizeOptions(precision=args.precision, graphs=graphs, exclude=exclude, calibration=args.calibration,
                           max_decoder_samples=args.calibration_samples)
    out = quantize_bundle(args.bundle, args.out, opts)
    print(json.dumps({"bundle": str(out), "precision": args.precision, "graphs": graphs}))  # noqa: T201
    return 0
