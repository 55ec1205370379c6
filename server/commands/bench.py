"""`tinyllava-med bench`: our ONNX Runtime path against transformers eager on the same weights.

The flags are read here; server/bench/runner.py runs each system in its own child process and builds the report.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from server.bench.protocol import BenchError
from server.bench.runner import DEFAULT_FOLLOWUP, DEFAULT_QUESTION, SAMPLE_IMAGE, format_report, run


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", required=True, help="bundle directory from `tinyllava-med export`")
    p.add_argument("--checkpoint", help="the checkpoint the bundle was exported from (for --baseline)")
    p.add_argument("--baseline", choices=("transformers",),
                   help="also time transformers eager on the checkpoint's weights (default when --checkpoint "
                        "is given)")
    p.add_argument("--new-tokens", type=int, default=32, help="tokens generated per question, through EOS "
                                                               "(default 32)")
    p.add_argument("--repeat", type=int, default=1, help="timed runs per system; medians are reported, after "
                                                         "one untimed warm-up run (default 1)")
    p.add_argument("--image", default=str(SAMPLE_IMAGE), help="image file (default: the bundled sample CT slice)")
    p.add_argument("--question", default=DEFAULT_QUESTION, help="first question")
    p.add_argument("--followup", default=DEFAULT_FOLLOWUP, help="second question on the same image")
    p.add_argument("--threads", type=int, default=0,
                   help="intra-op threads for both systems (default: each library's own, all physical cores)")
    p.add_argument("--disable-prepacking", action="store_true",
                   help="ONNX Runtime: no repacked weight copies (less memory, slower MatMuls)")
    p.add_argument("--no-cpu-arena", action="store_true", help="our runtime without ONNX Runtime's CPU memory arena")
    p.add_argument("--prefill-chunk", type=int, default=0,
                   help="ours: prefill at most this many positions per decoder call (bounds attention scratch "
                        "memory; default: the runtime's)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="onnxruntime",
                   help="ours: onnxruntime (default), or the bundle's TensorRT plans (tinyllava-med build-engines)")
    p.add_argument("--json", action="store_true", help="print one JSON object instead of the table")
    p.add_argument("--chart", metavar="FILE.png", help="also write a PNG chart of the figures (needs the eval extra)")


def main(args: argparse.Namespace) -> int:
    if args.new_tokens < 1 or args.repeat < 1 or args.prefill_chunk < 0:
        raise BenchError("--new-tokens and --repeat must be at least 1, --prefill-chunk at least 0")
    if args.baseline and not args.checkpoint:
        raise BenchError("--baseline transformers needs --checkpoint DIR: the checkpoint the bundle was exported from")
    baseline = args.baseline or ("transformers" if args.checkpoint else None)
    image = Path(args.image)
    if not image.is_file():
        raise BenchError("image file %s not found" % image)
    ours_flags = ["--prefill-chunk", str(args.prefill_chunk), "--backend", args.backend]
    if args.disable_prepacking:
        ours_flags.append("--disable-prepacking")
    if args.no_cpu_arena:
        ours_flags.append("--no-cpu-arena")
    report = run(Path(args.bundle), image, args.question, args.followup, args.new_tokens, args.repeat, args.threads,
                 ours_flags, checkpoint=args.checkpoint, baseline=baseline)
    out = json.dumps(report, indent=2) if args.json else format_report(report)
    sys.stdout.write(out + "\n")
    if args.chart:
        from server.bench.chart import write_chart

        write_chart(report, Path(args.chart))
    return 0
