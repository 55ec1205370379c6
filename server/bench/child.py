"""Our side of `tinyllava-med bench`, run as its own process (clean peak RSS), torch-free:

    python -m server.bench.child --bundle DIR --inputs FILE --new-tokens N [--repeat N]

Opens the bundle with the runtime and times the generator exactly as the server uses it, with
EOS ignored so exactly N tokens come. The first question starts cold (KV cache and image cache
emptied); the follow-up (same image, second question) runs right after it on the same generator,
so it gets the image-embedding cache and the reused (system prompt + image) prefix KV. Where jtop
reads the board's power (a Jetson), each answer also gets its mean power and energy (joules over
its generation, from jtop's total power). Prints one JSON report on stdout.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

from server.bench.protocol import QUESTIONS, BenchError, emit, peak_rss_mb, read_inputs, summarize


def run_question(generator: Any, prompt_ids: List[int], pixel_values: Any, new_tokens: int) -> Dict[str, Any]:
    """One timed generation; returns the per-question metrics of server.bench.protocol."""
    from server.runtime.request import GenerationParams

    result = generator.generate(prompt_ids, pixel_values, GenerationParams(max_tokens=new_tokens, ignore_eos=True))
    return _metrics(result, new_tokens)


def run_request(generator: Any, processor: Any, preparer: Any, upload: bytes, question: str, expected_ids: List[int],
                new_tokens: int) -> Dict[str, Any]:
    """One generation timed as the service runs a request, from the upload's bytes and the question's
    text: image decode + preprocess (cached by content), prompt tokens, the engine check and layout
    (image hash), then the stream up to its first token. Adds image_prep_ms and request_ttft_ms."""
    from server.runtime.request import GenerationParams
    from server.runtime.results import ms

    t0 = time.perf_counter()
    _, pixels = preparer(upload)
    t_prep = time.perf_counter()
    ids = processor.prompt_ids(question)
    layout = generator.prepare(ids, pixels)
    with generator.stream(layout, params=GenerationParams(max_tokens=new_tokens, ignore_eos=True)) as stream:
        next(stream)
        t_first = time.perf_counter()
        for _ in stream:
            pass
    if ids != expected_ids:
        raise BenchError("the bundle's processor gave other prompt ids than the prepared inputs")
    out = _metrics(stream.result, new_tokens)
    out["image_prep_ms"] = ms(t_prep - t0)
    out["request_ttft_ms"] = ms(t_first - t0)
    return out


def _metrics(result: Any, new_tokens: int) -> Dict[str, Any]:
    t = result.timings
    if len(result.output_ids) != new_tokens:
        raise BenchError("the runtime generated %d of %d tokens (finish: %s)"
                         % (len(result.output_ids), new_tokens, result.finish_reason))
    return {
        "image_encode_ms": t.image_encode_ms, "prefill_ms": t.prefill_ms, "ttft_ms": t.ttft_ms,
        "decode_tokens_per_s": t.decode_tokens_per_s, "prompt_tokens": t.prompt_tokens,
        "generated_tokens": len(result.output_ids), "cached_tokens": t.cached_tokens,
        "output_ids": list(result.output_ids),
    }


def _power(socket: str, interval: float) -> Any:
    """jtop's power trace, started and settled (first sample in, or unavailable with the reason)."""
    from server.service.jetson import JtopConfig, JtopTelemetry

    power = JtopTelemetry(JtopConfig(interval_s=interval, socket=Path(socket)))
    power.start()
    if not power.wait_settled(timeout=10 * interval):
        power.stop()
        power.status, power.reason = "unavailable", "no sample from jtop within %.0f s" % (10 * interval)
    return power


def _with_energy(power: Any, t0: float, t1: float, metrics: Dict[str, Any]) -> Dict[str, Any]:
    energy = power.energy_j(t0, t1)
    if energy is not None and t1 > t0:
        metrics["answer_ms"] = (t1 - t0) * 1000.0
        metrics["energy_j"] = energy
        metrics["power_w"] = energy / (t1 - t0)
    return metrics


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m server.bench.child", description=__doc__.split("\n")[0])
    p.add_argument("--bundle", required=True)
    p.add_argument("--inputs", required=True, help="the .npz the bench command prepared")
    p.add_argument("--new-tokens", type=int, required=True)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="ORT intra-op threads (0: the physical cores)")
    p.add_argument("--graph-optimization", choices=("disable", "basic", "extended", "all"), default="all")
    p.add_argument("--disable-prepacking", action="store_true", help="less memory, slower MatMuls")
    p.add_argument("--no-cpu-arena", action="store_true", help="ORT CPU memory arena off")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"), default="onnxruntime",
                   help="tensorrt: the bundle's plans for this device (tinyllava-med build-engines)")
    p.add_argument("--image", help="the image file: time each question as the service runs a request, from the "
                                   "image's bytes and the question's text to the first token")
    p.add_argument("--question", default="", help="with --image: the first question's text")
    p.add_argument("--followup", default="", help="with --image: the follow-up's text")
    p.add_argument("--prefill-chunk", type=int, default=0, help="prefill at most this many positions per "
                                                                "decoder call (0: the runtime's default)")
    p.add_argument("--jtop-socket", default="/run/jtop.sock", help="jtop.service's socket (power on a Jetson)")
    p.add_argument("--jtop-interval", type=float, default=0.5, help="jtop's sampling interval, seconds")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    import onnxruntime as ort

    from server.runtime.loader import load_runtime
    from server.runtime.ort_backend import OrtOptions, session_options

    options = OrtOptions(graph_optimization=args.graph_optimization, disable_prepacking=args.disable_prepacking,
                         enable_cpu_mem_arena=not args.no_cpu_arena,
                         intra_op_threads=args.threads or None)
    inputs = read_inputs(Path(args.inputs))
    t0 = time.perf_counter()
    # Hashes are skipped: reading every file once more proves nothing about speed.
    extra = {"prefill_chunk": args.prefill_chunk} if args.prefill_chunk else {}
    rt = load_runtime(args.bundle, options=options, check_hashes=False, backend=args.backend, **extra)
    load_ms = (time.perf_counter() - t0) * 1000.0
    if rt.engine.num_image_tokens != inputs["num_image_tokens"]:
        raise BenchError("the bundle makes %d image tokens, the prepared inputs assume %d"
                         % (rt.engine.num_image_tokens, inputs["num_image_tokens"]))
    gen = rt.generator
    pixels = inputs["pixel_values"]
    runs: Dict[str, List[Dict[str, Any]]] = {q: [] for q in QUESTIONS}
    upload = Path(args.image).read_bytes() if args.image else None
    processor = _processor(rt) if upload is not None else None
    texts = {"first": args.question, "followup": args.followup}
    power = _power(args.jtop_socket, args.jtop_interval)
    for i in range(args.repeat + 1):  # run 0 warms up the arena and kernels, and is not counted
        gen.reset()  # the first question starts cold: nothing cached from the previous repeat
        gen.image_cache.clear()
        prep = _preparer(processor) if processor is not None else None  # an empty upload cache
        for q in QUESTIONS:
            t0 = time.monotonic()  # the power trace's clock
            if prep is not None:
                r = run_request(gen, processor, prep, upload, texts[q], inputs[q], args.new_tokens)
            else:
                r = run_question(gen, inputs[q], pixels, args.new_tokens)
            r = _with_energy(power, t0, time.monotonic(), r)
            if i:
                runs[q].append(r)
    emit({
        "system": "tinyllava-med %s (%s)" % ("onnxruntime " + ort.__version__ if args.backend == "onnxruntime"
                                              else args.backend, ", ".join(rt.engine.providers["decoder"])),
        "threads": session_options(options).intra_op_num_threads,
        "dtype": rt.manifest.precision,
        "load_ms": round(load_ms, 1),
        "vision_layers_run": rt.manifest.model.vision.num_layers_used,
        "prefill_chunk": gen.prefill_chunk,
        "questions": {q: summarize(runs[q]) for q in QUESTIONS},
        "output_ids": {q: runs[q][-1]["output_ids"] for q in QUESTIONS},
        "peak_rss_mb": peak_rss_mb(),
        "telemetry": _telemetry(power),
    })
    power.stop()
    rt.close()
    return 0


def _telemetry(power: Any) -> Dict[str, Any]:
    """Where the power figures come from: jtop's status (the reason when unavailable), power mode, clocks."""
    snap = power.snapshot()
    out = {k: snap[k] for k in ("status", "reason", "nvpmodel", "jetson_clocks", "jetson_stats") if k in snap}
    return out


def _processor(rt: Any) -> Any:
    """The bundle's processor over the tokenizer the runtime loaded, built as BundlePipeline builds it."""
    from models.processor import Processor, TextTokenizer
    from server.runtime.bundle import bundle_eos_ids
    from models.processor.templates import get_template

    m = rt.manifest
    tokenizer = TextTokenizer(rt.tokenizer, eos_token=get_template(m.template).stop_str,
                              eos_token_ids=bundle_eos_ids(m.tokenizer))
    return Processor(m.model, tokenizer, template=m.template)


def _preparer(processor: Any) -> Any:
    """A fresh upload cache with the bundle's processor (the service's ImagePreparer)."""
    from server.imaging.prep import ImagePreparer

    return ImagePreparer(processor)


if __name__ == "__main__":
    sys.exit(main())
