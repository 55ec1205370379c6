"""The `tinyllava-med` command: maps each subcommand to the module that defines it.

Each command module provides `add_arguments(parser)` and `main(args) -> int`, and imports
heavy dependencies (torch, onnx) inside `main`, so `tinyllava-med --help` and the runtime
commands work on a Jetson image without PyTorch.
"""
from __future__ import annotations

import argparse
import importlib
import logging
import sys
from typing import Dict, List, Optional, Tuple

# subcommand -> (module, one-line help)
COMMANDS: Dict[str, Tuple[str, str]] = {
    "make-checkpoint": ("models.commands.make_checkpoint", "write a random-weight checkpoint in a real layout"),
    "make-dataset": ("models.commands.make_dataset", "write the synthetic medical VQA data set (VQA-RAD, SLAKE or "
                     "LLaVA-Med layout)"),
    "finetune": ("models.commands.finetune", "train a checkpoint on LLaVA conversations or a VQA training split"),
    "export": ("engine_build.commands.export", "export a checkpoint to an ONNX bundle (TensorRT 8.5 gated)"),
    "quantize": ("engine_build.commands.quantize", "quantize a bundle: fp16, int8 (TensorRT QDQ) or int8-cpu"),
    "build-engines": ("engine_build.commands.build_engines", "build TensorRT plans (fp16/int8) for this device"),
    "validate": ("engine_build.commands.validate", "compare a bundle with its checkpoint or another bundle"),
    "ask": ("server.commands.ask", "answer one question about one image"),
    "eval": ("server.commands.eval", "score VQA-RAD / SLAKE / PathVQA / LLaVA-Med answers (LLaVA-Med metrics)"),
    "bench": ("server.commands.bench", "time the runtime (and transformers eager) on one image and two questions"),
    "serve": ("server.commands.serve", "serve the HTTP API (/v1/vqa, OpenAI chat, health, metrics) over a bundle"),
    "doctor": ("server.commands.doctor", "check this device (CUDA, TensorRT, ONNX Runtime, memory, power) and a bundle"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyllava-med", description="TinyLLaVA-Med on-device inference")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        p = sub.add_parser(name, help=help_text, description=help_text)
        try:
            module = importlib.import_module(module_name)
        except ModuleNotFoundError as e:
            if e.name != "onnxruntime":
                raise
            p.set_defaults(_main=_needs_onnxruntime)  # --help and `doctor` still work without it
            continue
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def _needs_onnxruntime(args: argparse.Namespace) -> int:
    """ONNX Runtime is an install choice (pyproject.toml): a bare `pip install tinyllava-med` lacks it."""
    sys.stderr.write("error: `%s` needs ONNX Runtime, which is not installed: pip install 'tinyllava-med[cpu]' "
                     "(CPU), or on a Jetson NVIDIA's onnxruntime_gpu wheel (docs/jetson.md); "
                     "`tinyllava-med doctor` checks the result\n" % args.command)
    return 2


def _is_user_error(e: BaseException) -> bool:
    """Errors our packages raise on purpose carry a message meant for the user: print it, no traceback."""
    module = type(e).__module__.split(".")[0]
    return module in ("models", "server", "engine_build") or isinstance(e, (FileNotFoundError, PermissionError))


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args, unknown = parser.parse_known_args(argv)
    if unknown and args._main is not _needs_onnxruntime:  # that one's options are unknown: say what is missing
        parser.error("unrecognized arguments: %s" % " ".join(unknown))
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        return int(args._main(args) or 0)
    except ModuleNotFoundError as e:
        if e.name != "onnxruntime" or args.verbose:
            raise
        return _needs_onnxruntime(args)
    except Exception as e:  # noqa: BLE001 - reported below, traceback with --verbose
        if args.verbose or not _is_user_error(e):
            raise
        sys.stderr.write("error: %s\n" % e)
        return 2


if __name__ == "__main__":
    sys.exit(main())
