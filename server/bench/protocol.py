"""What `tinyllava-med bench` hands its measured child processes and what they hand back.

The parent prepares the inputs once (prompt ids with the image sentinel, pixel_values), so every
system is timed on identical ids and pixels; each child prints one JSON report on stdout. Torch-free
and Python 3.8: the runtime's child imports it on the Jetson.
"""
from __future__ import annotations

import json
import resource
import statistics
import sys
from pathlib import Path
from typing import Any, Dict, List, Sequence

import numpy as np

# Per-question metrics a child reports (medians over the timed repeats).
TIMING_KEYS = ("image_encode_ms", "prefill_ms", "ttft_ms", "decode_tokens_per_s")
# ours with --image: TTFT of a request as the service runs it, from the image bytes and question text
# (decode + preprocess cached by content for a follow-up, prompt tokens, engine check, first token)
REQUEST_KEYS = ("image_prep_ms", "request_ttft_ms")
# Where jtop reads the board's power (a Jetson): mean watts and joules over each answer's generation,
# and that generation's duration (the interval the power trace was integrated over).
POWER_KEYS = ("answer_ms", "power_w", "energy_j")
COUNT_KEYS = ("prompt_tokens", "generated_tokens", "cached_tokens")
QUESTIONS = ("first", "followup")  # a new image and question; then a second question on the same image


class BenchError(RuntimeError):
    """A benchmark child failed or reported something the comparison cannot use."""


def write_inputs(path: Path, first_ids: Sequence[int], followup_ids: Sequence[int], pixel_values: np.ndarray,
                 num_image_tokens: int) -> None:
    np.savez(str(path), first_ids=np.asarray(first_ids, dtype=np.int64),
             followup_ids=np.asarray(followup_ids, dtype=np.int64),
             pixel_values=np.ascontiguousarray(pixel_values, dtype=np.float32),
             num_image_tokens=np.int64(num_image_tokens))


def read_inputs(path: Path) -> Dict[str, Any]:
    """{"first": ids, "followup": ids, "pixel_values": [1,3,S,S] float32, "num_image_tokens": int}."""
    with np.load(str(path)) as z:
        return {"first": [int(t) for t in z["first_ids"]], "followup": [int(t) for t in z["followup_ids"]],
                "pixel_values": np.array(z["pixel_values"]), "num_image_tokens": int(z["num_image_tokens"])}


def peak_rss_mb() -> float:
    """This process's peak resident set (VmHWM on Linux: anonymous and file-backed pages, so
    memory-mapped weights count), in MiB."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return round(int(line.split()[1]) / 1024.0, 1)
    except OSError:
        pass
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss  # KiB on Linux, bytes on macOS
    return round(peak / (1024.0 * 1024.0) if sys.platform == "darwin" else peak / 1024.0, 1)


def summarize(runs: List[Dict[str, Any]]) -> Dict[str, Any]:
    """Median of each timing over the runs; counts must agree between runs (they are not timings)."""
    out: Dict[str, Any] = {}
    for key in TIMING_KEYS + tuple(k for k in REQUEST_KEYS if k in runs[0]):
        out[key] = round(statistics.median(float(r[key]) for r in runs), 3)
    for key in POWER_KEYS:  # only when every run has it: a median over some runs would mislead
        if all(r.get(key) is not None for r in runs):
            out[key] = round(statistics.median(float(r[key]) for r in runs), 3)
    for key in COUNT_KEYS:
        values = {int(r[key]) for r in runs}
        if len(values) != 1:
            raise BenchError("%s differs between repeats (%s): the runs did not do the same work"
                             % (key, sorted(values)))
        out[key] = values.pop()
    return out


def emit(report: Dict[str, Any]) -> None:
    """The child's single line of output: the parent parses stdout as JSON."""
    sys.stdout.write(json.dumps(report) + "\n")
    sys.stdout.flush()
