"""`tinyllava-med validate`: how closely a bundle follows its reference (checkpoint or bundle)."""
from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory to check")
    p.add_argument("--reference", required=True, help="checkpoint directory (PyTorch) or bundle directory")
    p.add_argument("--images", type=Path, help="extra probe images (PNG/JPEG) besides the built-in ones")
    p.add_argument("--max-tokens", type=int, default=32, help="generated positions compared per probe (default 32)")
    p.add_argument("--min-greedy", type=float, default=0.0, help="fail below this greedy-sequence agreement (0..1)")
    p.add_argument("--min-top1", type=float, default=0.0, help="fail below this per-position top-1 agreement (0..1)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="onnxruntime",
                   help="how BUNDLE runs: onnxruntime (default) or its TensorRT plans for this device")
    p.add_argument("--json", action="store_true", help="print one JSON object")


def main(args: argparse.Namespace) -> int:
    from engine_build.validate import dumps, format_report, validate

    report = validate(args.bundle, args.reference, images=args.images, max_tokens=args.max_tokens,
                      progress=not args.json, backend=args.backend)
    print(dumps(report) if args.json else format_report(report))  # noqa: T201
    failed = []
    if report.greedy_agreement < args.min_greedy:
        failed.append("greedy agreement %.3f < %.3f" % (report.greedy_agreement, args.min_greedy))
    if report.top1_agreement < args.min_top1:
        failed.append("top-1 agreement %.4f < %.4f" % (report.top1_agreement, args.min_top1))
    if failed:
        sys.stderr.write("validation FAILED: %s\n" % "; ".join(failed))
        return 1
    return 0
