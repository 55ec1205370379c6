"""`tinyllava-med doctor [--bundle DIR] [--json]`: can this device serve this bundle, and if not, the fix.

Checks Python, L4T/JetPack, CUDA, TensorRT, ONNX Runtime (every provider proven by running a tiny
graph), memory, the power mode (jtop), the bundle against this device and the engine cache
(server/commands/doctor_checks.py). The JSON form follows docs/doctor.schema.json.

Exit status: 0 when no check failed (warnings and skips allowed), 1 when one failed (its `fix` says
what to do), 2 for a usage error.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any, Dict, List

SCHEMA = "tinyllava-med-doctor/1"
_MARKS = {"ok": "ok  ", "warn": "WARN", "fail": "FAIL", "skip": "skip"}


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="bundle directory (default: TINYLLAVA_BUNDLE, else the embedded demo bundle)")
    p.add_argument("--precision", choices=("fp16", "int8"),
                   help="engine precision to check the cache for (default: TINYLLAVA_PRECISION, else fp16)")
    p.add_argument("--json", action="store_true", help="print one JSON object (docs/doctor.schema.json)")


def report(checks: List[Any], bundle: Path) -> Dict[str, Any]:
    from server.runtime.bundle import package_version

    failed = [c.name for c in checks if c.status == "fail"]
    return {"schema": SCHEMA, "version": package_version(), "bundle": str(bundle), "ok": not failed,
            "exit_status": 1 if failed else 0, "failed": failed, "checks": [c.to_dict() for c in checks]}


def format_report(rep: Dict[str, Any]) -> str:
    lines = ["tinyllava-med doctor %s: %s" % (rep["version"], rep["bundle"])]
    for c in rep["checks"]:
        lines.append("  [%s] %-12s %s" % (_MARKS[c["status"]], c["name"], c["summary"]))
        if c["fix"] and c["status"] in ("warn", "fail"):
            lines.append("         %-12s fix: %s" % ("", c["fix"]))
    lines.append("OK: this device can serve the bundle" if rep["ok"] else
                 "FAILED: %s (fix above)" % ", ".join(rep["failed"]))
    return "\n".join(lines)


def main(args: argparse.Namespace) -> int:
    from server.commands.doctor_checks import run_checks
    from server.service.settings import Settings

    settings = Settings()
    bundle = Path(args.bundle) if args.bundle else settings.bundle_dir
    checks = run_checks(bundle, precision=args.precision or settings.precision, builder_module=settings.engine_builder)
    rep = report(checks, bundle)
    sys.stdout.write((json.dumps(rep, indent=2) if args.json else format_report(rep)) + "\n")
    return int(rep["exit_status"])
