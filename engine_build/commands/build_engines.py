"""`tinyllava-med build-engines`: TensorRT plans for a bundle, built on this device (never inside a request)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("bundle", help="bundle directory (fp16 engines from an FP32/FP16 bundle, int8 from an int8 one)")
    p.add_argument("--precision", choices=("fp16", "int8"), help="default: int8 for an int8 bundle, else fp16")
    p.add_argument("--workspace-mb", type=int, help="TensorRT builder workspace limit in MiB (default: TensorRT's)")
    p.add_argument("--timing-cache", type=Path, help="TensorRT timing cache file (read if present, then updated)")


def main(args: argparse.Namespace) -> int:
    from engine_build.trt.build import PlanBuilder, default_precision
    from server.runtime.bundle import load_manifest

    precision = args.precision or default_precision(load_manifest(Path(args.bundle), check_hashes=False))
    records = PlanBuilder().build(Path(args.bundle), precision, args.workspace_mb, args.timing_cache)
    print(json.dumps({"bundle": args.bundle, "precision": precision,  # noqa: T201
                      "engines": {g: {k: r[k] for k in ("file", "tensorrt", "device", "compute_capability")}
                                  for g, r in records.items()}}))
    return 0
