"""The transformers side of `tinyllava-med bench`, run as its own process (clean peak RSS):

    python -m engine_build.bench_hf --checkpoint DIR --inputs FILE --new-tokens N [--repeat N]

Loads the checkpoint with the strict reader, builds transformers' LlavaForConditionalGeneration
(eager attention) on the same tensors, and times `generate()` as a transformers user runs it:
greedy, KV cache on, EOS disabled so exactly N tokens come. Phases are read off the unmodified
call: forward hooks mark the vision tower's start and the projector's end (image encode), a
streamer marks each token (TTFT, decode). The follow-up question is a second full generate():
transformers keeps no image or prefix cache between calls. Prints one JSON report on stdout.
"""
from __future__ import annotations

import argparse
import logging
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Optional

import torch

from server.bench.protocol import QUESTIONS, BenchError, emit, peak_rss_mb, read_inputs, summarize

DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


class _Clock:
    """Timestamps for one generate(): vision start/end (hooks) and every streamed token."""

    def __init__(self) -> None:
        self.vision_start: Optional[float] = None
        self.vision_end: Optional[float] = None
        self.tokens: List[float] = []
        self.ids: List[int] = []
        self._prompt_seen = False

    # transformers BaseStreamer protocol: put() gets the prompt first, then each new token.
    def put(self, value: torch.Tensor) -> None:
        now = time.perf_counter()
        if not self._prompt_seen:
            self._prompt_seen = True
            return
        self.tokens.append(now)
        self.ids.extend(int(t) for t in value.reshape(-1).tolist())

    def end(self) -> None:
        pass

    def on_vision_start(self, *_: Any) -> None:
        if self.vision_start is None:
            self.vision_start = time.perf_counter()

    def on_vision_end(self, *_: Any) -> None:
        if self.vision_end is None:
            self.vision_end = time.perf_counter()


def run_question(hf: torch.nn.Module, input_ids: torch.Tensor, pixel_values: torch.Tensor,
                 new_tokens: int) -> Dict[str, Any]:
    """One timed generate(); returns the per-question metrics of server.bench.protocol."""
    clock = _Clock()
    inner = hf.model
    hooks = [inner.vision_tower.register_forward_pre_hook(clock.on_vision_start),
             inner.multi_modal_projector.register_forward_hook(clock.on_vision_end)]
    try:
        t0 = time.perf_counter()
        with torch.inference_mode():
            hf.generate(input_ids=input_ids, pixel_values=pixel_values,
                        attention_mask=torch.ones_like(input_ids), max_new_tokens=new_tokens,
                        do_sample=False, num_beams=1, streamer=clock)
    finally:
        for h in hooks:
            h.remove()
    if len(clock.tokens) != new_tokens or clock.vision_start is None or clock.vision_end is None:
        raise BenchError("transformers generated %d of %d tokens (vision ran: %s)"
                         % (len(clock.tokens), new_tokens, clock.vision_end is not None))
    first, last = clock.tokens[0], clock.tokens[-1]
    steps = new_tokens - 1
    return {
        "image_encode_ms": (clock.vision_end - clock.vision_start) * 1000.0,
        "prefill_ms": (first - clock.vision_end) * 1000.0,
        "ttft_ms": (first - t0) * 1000.0,
        "decode_tokens_per_s": steps / (last - first) if steps > 0 and last > first else 0.0,
        "prompt_tokens": int(input_ids.shape[1]),
        "generated_tokens": len(clock.tokens),
        "cached_tokens": 0,
        "output_ids": clock.ids,
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python -m engine_build.bench_hf", description=__doc__.split("\n")[0])
    p.add_argument("--checkpoint", required=True, help="checkpoint directory (any supported layout)")
    p.add_argument("--inputs", required=True, help="the .npz the bench command prepared")
    p.add_argument("--new-tokens", type=int, required=True)
    p.add_argument("--repeat", type=int, default=1)
    p.add_argument("--threads", type=int, default=0, help="torch intra-op threads (0: torch's default)")
    p.add_argument("--dtype", choices=sorted(DTYPES), default="float32")
    args = p.parse_args(argv)
    logging.basicConfig(level=logging.WARNING)

    from importlib.metadata import version

    try:
        from engine_build.hf_reference import build_hf_llava, hf_input_ids, pick_image_token_index
    except ImportError as e:
        raise BenchError("the transformers baseline needs transformers (pip install 'tinyllava-med[test]'): %s"
                         % e) from None
    from models.checkpoint.reader import read_checkpoint

    if args.threads > 0:
        torch.set_num_threads(args.threads)
    inputs = read_inputs(Path(args.inputs))
    t0 = time.perf_counter()
    ckpt = read_checkpoint(args.checkpoint)
    cfg = ckpt.config
    if cfg.num_image_tokens != inputs["num_image_tokens"]:
        raise BenchError("the checkpoint makes %d image tokens, the bundle %d: give the checkpoint the bundle was "
                         "exported from" % (cfg.num_image_tokens, inputs["num_image_tokens"]))
    image_token = pick_image_token_index(cfg.text.vocab_size, [inputs["first"], inputs["followup"]])
    hf = build_hf_llava(cfg, ckpt.tensors, image_token, DTYPES[args.dtype])
    del ckpt  # the HF model holds the tensors now; no second reference keeps anything alive
    hf.generation_config.eos_token_id = None  # forced generation: exactly new_tokens, through EOS
    hf.generation_config.pad_token_id = cfg.text.pad_token_id if cfg.text.pad_token_id is not None else 0
    load_ms = (time.perf_counter() - t0) * 1000.0

    pixels = torch.from_numpy(inputs["pixel_values"]).to(DTYPES[args.dtype])
    ids = {q: hf_input_ids(inputs[q], image_token, cfg.num_image_tokens) for q in QUESTIONS}
    runs: Dict[str, List[Dict[str, Any]]] = {q: [] for q in QUESTIONS}
    for i in range(args.repeat + 1):  # run 0 warms up allocators and kernels, and is not counted
        for q in QUESTIONS:
            r = run_question(hf, ids[q], pixels, args.new_tokens)
            if i:
                runs[q].append(r)
    emit({
        "system": "transformers %s eager (torch %s)" % (version("transformers"), torch.__version__),
        "threads": torch.get_num_threads(),
        "dtype": args.dtype,
        "load_ms": round(load_ms, 1),
        "vision_layers_run": cfg.vision.num_layers,
        "questions": {q: summarize(runs[q]) for q in runs},
        "output_ids": {q: runs[q][-1]["output_ids"] for q in runs},
        "peak_rss_mb": peak_rss_mb(),
    })
    return 0


if __name__ == "__main__":
    sys.exit(main())
