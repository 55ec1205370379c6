"""The end-of-sequence ids of a checkpoint, read as transformers' `generate` reads them.

transformers takes `eos_token_id` from generation_config.json when the checkpoint has one, else
from the model's config (for Llava, its text_config); either may be one id or a list, and any id
in the list ends generation. The chat template's stop string (Phi's <|endoftext|>, Vicuna's </s>)
is an extra stop where it is a token of this tokenizer, never a requirement: a Phi-2 decoder
trained with a Llama tokenizer ends on </s>.
"""
from __future__ import annotations

import json
from pathlib import Path
from typing import Any, List, Optional, Sequence


def _ids(value: Any) -> List[int]:
    if value is None:
        return []
    if isinstance(value, (list, tuple)):
        return [int(v) for v in value]
    return [int(value)]


def _read(path: Path) -> Optional[dict]:
    if not path.is_file():
        return None
    with open(path, encoding="utf-8") as f:
        return json.load(f)


def checkpoint_eos_ids(checkpoint_dir: Path, fallback: Optional[int] = None) -> List[int]:
    """generation_config.json's eos_token_id, else config.json's (top level, then text_config),
    else `fallback` (the parsed config's); [] when none names one."""
    gen = _read(Path(checkpoint_dir) / "generation_config.json")
    if gen is not None and gen.get("eos_token_id") is not None:
        return _ids(gen["eos_token_id"])
    cfg = _read(Path(checkpoint_dir) / "config.json") or {}
    for d in (cfg, cfg.get("text_config") or {}):
        if d.get("eos_token_id") is not None:
            return _ids(d["eos_token_id"])
    return _ids(fallback)


def with_template_stop(eos_ids: Sequence[int], stop_token_id: Optional[int]) -> List[int]:
    """The checkpoint's ids, then the template's stop token when it is one and not already there."""
    ids = list(eos_ids)
    if stop_token_id is not None and stop_token_id not in ids:
        ids.append(stop_token_id)
    return ids


__all__ = ["checkpoint_eos_ids", "with_template_stop"]
