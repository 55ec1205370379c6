"""The bench's logic: each system timed in its own child process, then one report with ratios and goals.

Each system runs in its own child process, one after the other (they would fight over the cores),
so each one's peak RSS is its own: `server.bench.child` (the runtime, torch-free) and, with
the transformers baseline, `engine_build.bench_hf`. Both get the same prompt ids and pixel_values,
prepared here from the bundle's tokenizer and template, and both generate exactly `new_tokens`
tokens (EOS ignored). Torch-free: the children import whatever they need.
"""
from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any, Dict, List, Optional, Tuple

from models.config import IMAGE_TOKEN_INDEX, ModelConfig, preset
from server.bench.protocol import QUESTIONS, BenchError, write_inputs
from server.imaging.limits import ImageInputError
from server.imaging.prep import ImagePreparer
from server.runtime.bundle import read_manifest
from server.runtime.prompt import common_prefix

SAMPLE_IMAGE = Path(__file__).resolve().parents[2] / "models" / "assets" / "sample_ct.png"
_ROOT = Path(__file__).resolve().parents[2]  # holds the models/, server/ and engine_build/ packages
DEFAULT_QUESTION = "What does this CT image show?"
DEFAULT_FOLLOWUP = "Is there any abnormality in this image?"

# The export/runtime issue's goals (recorded in docs/benchmarks.md), per preset: FP32, CPU, 32 new tokens.
# (ratio key, comparison, target); a bundle of another architecture is measured without goals.
GOALS: Dict[str, Tuple[Tuple[str, str, float], ...]] = {
    "tinyllava-med-1.5b": (
        ("decode_tokens_per_s", ">=", 1.5),  # ours / transformers
        ("ttft", "<=", 1.0),
        ("peak_rss", "<=", 1.0),
        ("followup_ttft_over_first", "<=", 0.1),  # ours: follow-up TTFT / first-question TTFT
    ),
    "tiny": (("followup_ttft_over_first", "<=", 0.2),),
}
_COLUMNS = (("image_encode_ms", "image encode ms"), ("prefill_ms", "prefill ms"), ("ttft_ms", "TTFT ms"),
            ("decode_tokens_per_s", "decode tok/s"))
# Where jtop reads the board's power (a Jetson): two more columns (mean power, joules per answer).
_POWER_COLUMNS = (("power_w", "power W"), ("energy_j", "J/answer"))
_QUESTION_NAMES = {"first": "first question", "followup": "follow-up"}


def run(bundle: Path, image: Path, question: str, followup: str, new_tokens: int, repeat: int, threads: int,
        ours_flags: List[str], checkpoint: Optional[str] = None, baseline: Optional[str] = None) -> Dict[str, Any]:
    """Time the runtime (and the baseline) on `image` with two questions; the report `format_report` prints."""
    from models.processor import Processor

    manifest = read_manifest(bundle)
    processor = Processor(manifest.model, bundle / manifest.tokenizer["file"], template=manifest.template)
    ids = {"first": processor.prompt_ids(question), "followup": processor.prompt_ids(followup)}
    # Decoded through the service's own capped path (format sniffing, size checks, Pillow's cap).
    try:
        _, pixels = ImagePreparer(processor)(image.read_bytes())
    except ImageInputError as e:
        raise BenchError("%s: %s (the service would answer %d %s)" % (image, e.message, e.status, e.code)) from None
    n_image = manifest.model.num_image_tokens

    common = ["--new-tokens", str(new_tokens), "--repeat", str(repeat), "--threads", str(threads)]
    systems: Dict[str, Dict[str, Any]] = {}
    with tempfile.TemporaryDirectory(prefix="tinyllava-bench-") as tmp:
        inputs = Path(tmp) / "inputs.npz"
        write_inputs(inputs, ids["first"], ids["followup"], pixels, n_image)
        ours_flags = list(ours_flags) + ["--image", str(image), "--question", question, "--followup", followup]
        systems["ours"] = _run_child("server.bench.child", ["--bundle", str(bundle), "--inputs", str(inputs)]
                                     + common + ours_flags)
        if baseline == "transformers":
            systems["transformers"] = _run_child(
                "engine_build.bench_hf", ["--checkpoint", str(checkpoint), "--inputs", str(inputs),
                                          "--dtype", baseline_dtype(manifest.precision)] + common)

    report = build_report(systems, ids, n_image, new_tokens, goal_preset(manifest.model))
    report.update(bundle=str(bundle), checkpoint=checkpoint, image=str(image), model=manifest.model.name,
                  precision=manifest.precision, new_tokens=new_tokens, repeat=repeat)
    return report


def baseline_dtype(precision: str) -> str:
    """transformers runs an FP16 bundle's checkpoint in float16; every other bundle (FP32, INT8) against FP32 eager."""
    return "float16" if precision == "float16" else "float32"


def _run_child(module: str, argv: List[str]) -> Dict[str, Any]:
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join([str(_ROOT)] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
    proc = subprocess.run([sys.executable, "-m", module] + argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                          universal_newlines=True, env=env)
    if proc.returncode != 0:
        tail = "\n".join(proc.stderr.strip().splitlines()[-15:])
        raise BenchError("%s failed (exit %d):\n%s" % (module, proc.returncode, tail))
    try:
        return json.loads(proc.stdout.strip().splitlines()[-1])
    except (ValueError, IndexError):
        raise BenchError("%s printed no JSON report; its output ends with:\n%s"
                         % (module, proc.stdout[-2000:] + proc.stderr[-2000:])) from None


def goal_preset(model: ModelConfig) -> Optional[str]:
    """The preset in GOALS whose architecture the bundle's model has (its name is the checkpoint's)."""
    for name in GOALS:
        p = preset(name)
        if (model.vision, model.text, model.connector) == (p.vision, p.text, p.connector):
            return name
    return None


def build_report(systems: Dict[str, Dict[str, Any]], ids: Dict[str, List[int]], n_image: int,
                 new_tokens: int, goals_for: Optional[str] = None) -> Dict[str, Any]:
    """Check that every system did the same work, then add the rows and the ratios."""
    expected = {q: len(ids[q]) - ids[q].count(IMAGE_TOKEN_INDEX) + ids[q].count(IMAGE_TOKEN_INDEX) * n_image
                for q in QUESTIONS}
    rows = []
    for name, rep in systems.items():
        for q in QUESTIONS:
            row = rep["questions"][q]
            if row["prompt_tokens"] != expected[q] or row["generated_tokens"] != new_tokens:
                raise BenchError("%s, %s: %d prompt positions and %d generated tokens, expected %d and %d"
                                 % (name, q, row["prompt_tokens"], row["generated_tokens"], expected[q], new_tokens))
            rows.append(dict(row, system=name, question=q, peak_rss_mb=rep["peak_rss_mb"]))
    report: Dict[str, Any] = {
        "prompt": {q: {"ids": len(ids[q]), "positions": expected[q], "image_tokens": n_image} for q in QUESTIONS},
        "systems": systems, "rows": rows, "ratios": ratios(systems),
    }
    if "transformers" in systems:
        ours, theirs = systems["ours"]["output_ids"]["first"], systems["transformers"]["output_ids"]["first"]
        report["matching_prefix_tokens"] = common_prefix(ours, theirs)
    report["goals_for"] = goals_for
    report["goals"] = goals(report["ratios"], GOALS.get(goals_for, ()) if goals_for else ())
    return report


def ratios(systems: Dict[str, Dict[str, Any]]) -> Dict[str, Optional[float]]:
    def q(system: str, question: str, key: str) -> float:
        return float(systems[system]["questions"][question][key])

    out: Dict[str, Optional[float]] = {}
    if "transformers" in systems:
        out["decode_tokens_per_s"] = _div(q("ours", "first", "decode_tokens_per_s"),
                                          q("transformers", "first", "decode_tokens_per_s"))
        out["ttft"] = _div(q("ours", "first", "ttft_ms"), q("transformers", "first", "ttft_ms"))
        out["peak_rss"] = _div(systems["ours"]["peak_rss_mb"], systems["transformers"]["peak_rss_mb"])
    out["followup_ttft_over_first"] = _div(q("ours", "followup", "ttft_ms"), q("ours", "first", "ttft_ms"))
    if "request_ttft_ms" in systems["ours"]["questions"]["first"]:
        out["followup_request_ttft_over_first"] = _div(q("ours", "followup", "request_ttft_ms"),
                                                       q("ours", "first", "request_ttft_ms"))
    if "transformers" in systems:
        out["transformers_followup_ttft_over_first"] = _div(q("transformers", "followup", "ttft_ms"),
                                                            q("transformers", "first", "ttft_ms"))
    return out


def goals(r: Dict[str, Optional[float]], targets: Tuple[Tuple[str, str, float], ...]) -> Dict[str, Dict[str, Any]]:
    out = {}
    for key, op, target in targets:
        value = r.get(key)
        met = None if value is None else (value >= target if op == ">=" else value <= target)
        out[key] = {"target": "%s %g" % (op, target), "value": value, "met": met}
    return out


def _power_line(telemetry: Optional[Dict[str, Any]]) -> str:
    """Where the power columns come from, or why there are none."""
    if not telemetry:
        return "power: not measured"
    if telemetry.get("status") != "ok":
        return "power: unavailable (%s)" % telemetry.get("reason", telemetry.get("status"))
    clocks = telemetry.get("jetson_clocks")
    return "power: jtop total board power, nvpmodel %s, jetson_clocks %s" % (
        telemetry.get("nvpmodel") or "?", "?" if clocks is None else ("on" if clocks else "off"))


def _div(a: float, b: float) -> Optional[float]:
    return float("%.4g" % (a / b)) if b else None  # 4 significant digits: tiny models give ratios ~0.002


def format_report(rep: Dict[str, Any]) -> str:
    first, follow = rep["prompt"]["first"], rep["prompt"]["followup"]
    power = [c for c in _POWER_COLUMNS if any(c[0] in row for row in rep["rows"])]
    lines = [
        "tinyllava-med bench: %s (%s), %d new tokens per question, median of %d run(s)"
        % (rep["model"], rep["precision"], rep["new_tokens"], rep["repeat"]),
        "prompt: %d positions (%d image + %d text); follow-up: %d positions, same image"
        % (first["positions"], first["image_tokens"], first["positions"] - first["image_tokens"],
           follow["positions"]),
        "",
        "%-30s" % "" + "".join("%16s" % title for _, title in _COLUMNS) + "%14s" % "peak RSS MB"
        + "".join("%12s" % title for _, title in power),
    ]
    for row in rep["rows"]:
        label = "%s, %s" % (row["system"], _QUESTION_NAMES[row["question"]])
        cells = "".join("%16.1f" % row[key] for key, _ in _COLUMNS)
        watts = "".join("%12.2f" % row[key] if key in row else "%12s" % "-" for key, _ in power)
        note = "  (%d positions reused)" % row["cached_tokens"] if row["cached_tokens"] else ""
        lines.append("%-30s%s%14.0f%s%s" % (label, cells, row["peak_rss_mb"], watts, note))
    lines.append("")
    lines.append(_power_line(rep["systems"].get("ours", {}).get("telemetry")))
    for name, sysrep in rep["systems"].items():
        chunk = ", prefill chunk %d" % sysrep["prefill_chunk"] if sysrep.get("prefill_chunk") else ""
        lines.append("%-13s %s, %d threads, %d vision layers%s, load %.1f s"
                     % (name + ":", sysrep["system"], sysrep["threads"], sysrep["vision_layers_run"], chunk,
                        sysrep["load_ms"] / 1000.0))
    if "matching_prefix_tokens" in rep:
        lines.append("greedy tokens agree for the first %d of %d (first question)"
                     % (rep["matching_prefix_tokens"], rep["new_tokens"]))
    lines += ["", "ratios%s:" % (" (goals: the %s preset's, docs/benchmarks.md)" % rep["goals_for"]
                                 if rep.get("goals_for") else "")]
    labels = {"decode_tokens_per_s": "decode tok/s, ours / transformers", "ttft": "TTFT, ours / transformers",
              "peak_rss": "peak RSS, ours / transformers",
              "followup_ttft_over_first": "follow-up TTFT / first TTFT, ours",
              "followup_request_ttft_over_first": "same, per request (image bytes + text in), ours",
              "transformers_followup_ttft_over_first": "follow-up TTFT / first TTFT, transformers"}
    for key, value in rep["ratios"].items():
        goal = rep["goals"].get(key)
        mark = ""
        if goal is not None and value is not None:
            mark = "  goal %s: %s" % (goal["target"], "met" if goal["met"] else "MISSED")
        lines.append("  %-44s %s%s" % (labels[key], "-" if value is None else "%.3f" % value, mark))
    return "\n".join(lines)
