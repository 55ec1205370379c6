"""Checkpoint -> answer on the PyTorch model: the reference path behind `ask --checkpoint`."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

import torch

from models.checkpoint.eos import checkpoint_eos_ids
from models.checkpoint.reader import model_from_checkpoint, read_checkpoint
from models.generate import generate
from models.processor import Processor, TextTokenizer
from models.processor.image import ImageInput
from models.processor.templates import Turn, get_template


class TorchPipeline:
    """A checkpoint (any supported layout) loaded strictly, with its processor."""

    def __init__(self, checkpoint: Union[str, Path], template: Optional[str] = None,
                 dtype: Optional[torch.dtype] = None) -> None:
        t0 = time.perf_counter()
        ckpt = read_checkpoint(checkpoint, dtype)
        self.model, self.config = model_from_checkpoint(ckpt)
        self.config = self.config.replace(template=template) if template else self.config
        # EOS as transformers' generate reads it from the checkpoint; the template's stop token is extra.
        eos_ids = checkpoint_eos_ids(ckpt.path, self.config.text.eos_token_id)
        tokenizer = TextTokenizer(ckpt.load_tokenizer(), eos_token=get_template(self.config.template).stop_str,
                                  eos_token_ids=eos_ids)
        self.processor = Processor(self.config, tokenizer)
        self.load_ms = round((time.perf_counter() - t0) * 1000.0, 3)

    def ask(self, image: ImageInput, question: str, max_tokens: int = 64, history: Optional[Sequence[Turn]] = None,
            temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: Optional[int] = None,
            ignore_eos: bool = False) -> Dict[str, Any]:
        """The `ask --json` object: answer, prompt_token_ids (with -200), output_token_ids, timings."""
        t0 = time.perf_counter()
        prompt_ids = self.processor.prompt_ids(question, history)
        pixels = torch.from_numpy(self.processor.pixels(image)).to(self.model.lm_head.weight.dtype)
        t_pre = time.perf_counter()
        result = generate(self.model, prompt_ids, pixels, max_new_tokens=max_tokens,
                          eos_token_id=None if ignore_eos else self.processor.tokenizer.stop_ids, temperature=temperature,
                          top_p=top_p, top_k=top_k,
                          seed=seed)
        timings = dict(result.timings)
        timings["preprocess_ms"] = round((t_pre - t0) * 1000.0, 3)
        timings["load_ms"] = self.load_ms
        return {
            "answer": self.processor.decode(result.output_ids).strip(),
            "prompt_token_ids": list(prompt_ids),
            "output_token_ids": list(result.output_ids),
            "finish_reason": result.finish_reason,
            "timings": timings,
        }
