"""Reference generation loop on the torch model: image encode, prefill, decode with a growing K/V cache.

This is the oracle the exported engines are compared with, so it stays simple: batch 1, greedy by
default, the K/V concatenated each step exactly as the exported decoder graph does.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Union

import torch
from torch import Tensor

from models.config import IMAGE_TOKEN_INDEX
from models.llava import LlavaModel


@dataclass
class GenerationResult:
    output_ids: List[int]  # generated tokens, the stop token excluded
    finish_reason: str  # "stop" (a stop token came) or "length" (max_new_tokens or the context was reached)
    prompt_positions: int  # decoder positions taken by the prompt, image tokens expanded
    timings: Dict[str, float] = field(default_factory=dict)  # image_encode_ms, prefill_ms, ttft_ms, ...
    logits: Optional[Tensor] = None  # [steps, V] float32 when asked for: the logits each token was picked from


def select_next_token(logits: Tensor, temperature: float = 0.0, top_k: int = 0, top_p: float = 1.0,
                      generator: Optional[torch.Generator] = None) -> int:
    """Pick a token from last-position logits [V]: argmax when temperature <= 0, else sample
    from softmax(logits / temperature) restricted to the top_k tokens and the top_p nucleus."""
    if temperature <= 0.0:
        return int(torch.argmax(logits))  # first index among ties, as transformers' greedy search
    scores = logits.to(torch.float32) / temperature
    if top_k > 0:
        kth = torch.topk(scores, min(top_k, scores.shape[-1])).values[-1]
        scores = scores.masked_fill(scores < kth, float("-inf"))
    if top_p < 1.0:
        sorted_scores, order = torch.sort(scores, descending=True)
        probs = torch.softmax(sorted_scores, dim=-1)
        # Drop a token when the tokens ranked above it already reach top_p; the best always stays.
        drop = (torch.cumsum(probs, dim=-1) - probs) >= top_p
        scores = scores.masked_fill(torch.zeros_like(drop).scatter(0, order, drop), float("-inf"))
    return int(torch.multinomial(torch.softmax(scores, dim=-1), 1, generator=generator))


def _stop_set(eos_token_id: Union[int, Sequence[int], None]) -> frozenset:
    if eos_token_id is None:
        return frozenset()
    if isinstance(eos_token_id, int):
        return frozenset([eos_token_id])
    return frozenset(int(t) for t in eos_token_id)


def _ms(seconds: float) -> float:
    return round(seconds * 1000.0, 3)


@torch.inference_mode()
def generate(model: LlavaModel, prompt_ids: Sequence[int], pixel_values: Optional[Tensor] = None,
             max_new_tokens: int = 256, eos_token_id: Union[int, Sequence[int], None] = None,
             temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: Optional[int] = None,
             image_embeds: Optional[Tensor] = None, forced_tokens: Sequence[int] = (),
             return_logits: bool = False) -> GenerationResult:
    """Generate up to max_new_tokens after prompt_ids (which carry IMAGE_TOKEN_INDEX where images go).

    pixel_values [num_images, 3, H, W] is encoded here; pass image_embeds instead to reuse an
    encoding. Stops at any id in eos_token_id (not included in output_ids) or at the model's
    max_position_embeddings. forced_tokens are taken in order instead of sampled ones (teacher
    forcing, for validation); return_logits keeps each step's float32 logits in result.logits.
    """
    if max_new_tokens < 0:
        raise ValueError("max_new_tokens must be >= 0, got %d" % max_new_tokens)
    if pixel_values is not None and image_embeds is not None:
        raise ValueError("pass pixel_values or image_embeds, not both")
    stop = _stop_set(eos_token_id)
    max_positions = model.cfg.text.max_position_embeddings
    generator = None
    if seed is not None:
        generator = torch.Generator(device=model.lm_head.weight.device).manual_seed(seed)
    timings: Dict[str, float] = {}

    t_start = time.perf_counter()
    if pixel_values is not None:
        image_embeds = model.encode_image(pixel_values)
    t_image = time.perf_counter()
    timings["image_encode_ms"] = _ms(t_image - t_start) if pixel_values is not None else 0.0

    embeds = model.merge(prompt_ids, image_embeds)
    length = embeds.shape[1]
    if length > max_positions:
        raise ValueError(
            "prompt needs %d positions (%d image tokens each for %d image(s)) but the model's context is %d; "
            "shorten the question" % (length, model.cfg.num_image_tokens, list(prompt_ids).count(IMAGE_TOKEN_INDEX),
                                      max_positions))
    if max_new_tokens == 0:
        return GenerationResult([], "length", length, timings)

    device = embeds.device
    past = model.empty_kv(1, embeds.dtype)
    t_prefill = time.perf_counter()
    logits, past_key, past_value = model.forward_decoder(
        embeds, torch.arange(length, device=device)[None], past, past,
        torch.ones(1, length, dtype=torch.long, device=device))
    rows: List[Tensor] = []

    def pick(step_logits: Tensor, index: int) -> int:
        if return_logits:
            rows.append(step_logits.to(torch.float32).clone())
        if index < len(forced_tokens):
            return int(forced_tokens[index])
        return select_next_token(step_logits, temperature, top_k, top_p, generator)

    token = pick(logits[0, -1], 0)
    t_first = time.perf_counter()
    timings["prefill_ms"] = _ms(t_first - t_prefill)
    timings["ttft_ms"] = _ms(t_first - t_start)

    output: List[int] = []
    steps = 0
    finish_reason = "length"
    while True:
        if token in stop:
            finish_reason = "stop"
            break
        output.append(token)
        if len(output) >= max_new_tokens or length >= max_positions:
            break
        step_embeds = model.embed(torch.tensor([[token]], device=device))
        logits, past_key, past_value = model.forward_decoder(
            step_embeds, torch.tensor([[length]], device=device), past_key, past_value,
            torch.ones(1, length + 1, dtype=torch.long, device=device))
        length += 1
        steps += 1
        token = pick(logits[0, -1], steps)
    t_end = time.perf_counter()
    decode_s = t_end - t_first
    timings["decode_ms"] = _ms(decode_s)
    timings["decode_tokens_per_s"] = round(steps / decode_s, 3) if steps and decode_s > 0 else 0.0
    timings["total_ms"] = _ms(t_end - t_start)
    return GenerationResult(output, finish_reason, embeds.shape[1], timings,
                            torch.stack(rows) if return_logits else None)
