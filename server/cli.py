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
    "ask": ("server.commands.ask", "answer one question about one image"),
}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="tinyllava-med", description="TinyLLaVA-Med on-device inference")
    parser.add_argument("-v", "--verbose", action="store_true", help="debug logging")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    for name, (module_name, help_text) in COMMANDS.items():
        module = importlib.import_module(module_name)
        p = sub.add_parser(name, help=help_text, description=help_text)
        module.add_arguments(p)
        p.set_defaults(_main=module.main)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    logging.basicConfig(level=logging.DEBUG if args.verbose else logging.WARNING,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    return int(args._main(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
