"""VQA-RAD, SLAKE and PathVQA (their distributed layouts) -> LLaVA conversation records.

The data sets are read by the same loaders `tinyllava-med eval` uses (server.eval.datasets), so a
split trains on exactly the items eval would score. Each question becomes one single-turn
conversation {"id", "image", "answer_type", "conversations": [human "<image>\\n" + question, gpt
answer]}, LLaVA-Med's converted format; image paths are relative to the returned images directory.
"""
from __future__ import annotations

import os
from pathlib import Path
from typing import Any, Dict, List, Tuple, Union

from models.config import IMAGE_TOKEN

SOURCES = ("vqa-rad", "slake", "pathvqa", "llava-med")


def to_conversations(dataset: str, data: Union[str, Path], split: str = "train"
                     ) -> Tuple[List[Dict[str, Any]], Path]:
    """(records, images directory) for `split` of data set `dataset` found at `data`."""
    from server.eval.datasets import load_dataset

    items = load_dataset(dataset, data, split)
    root = Path(os.path.commonpath([str(item.image_path.parent) for item in items]))
    records = [{
        "id": item.qid_value if item.qid_value is not None else item.qid,
        "image": os.path.relpath(str(item.image_path), str(root)),
        "answer_type": item.answer_type,
        "conversations": [{"from": "human", "value": IMAGE_TOKEN + "\n" + item.question},
                          {"from": "gpt", "value": item.answer}],
    } for item in items]
    return records, root


__all__ = ["SOURCES", "to_conversations"]
