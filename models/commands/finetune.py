"""`tinyllava-med finetune`: train a checkpoint on LLaVA conversations (or a VQA data set's layout)."""
from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Optional

from models.finetune.convert import SOURCES

_STAGES = ("instruct", "vqa")  # models.finetune.train.STAGES, without importing torch for --help


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--checkpoint", required=True, help="the checkpoint to start from (any supported layout)")
    p.add_argument("--data", required=True,
                   help="LLaVA conversation JSON/JSONL; with --data-format vqa-rad|slake|pathvqa, that data set's "
                        "directory as distributed")
    p.add_argument("--images", help="directory the records' image paths are relative to (with --data-format "
                                    "llava; the default is the data file's images/ folder, else its folder)")
    p.add_argument("--out", required=True, help="output checkpoint directory (llava layout; new, or a stopped run's "
                                                "with --resume)")
    p.add_argument("--data-format", choices=("llava",) + tuple(s for s in SOURCES if s != "llava-med"),
                   default="llava", help="llava: conversation records; else convert that data set's train split")
    p.add_argument("--split", default="train", help="the split of a --data-format data set to train on")
    p.add_argument("--eval-data", help="held-out conversations (same formats) whose loss is reported before and after")
    p.add_argument("--eval-split", default="test", help="split of --eval-data for a data-set --data-format")
    p.add_argument("--stage", choices=_STAGES, default="vqa",
                   help="instruct: instruction tuning on conversations; vqa: fine-tune on a VQA split")
    p.add_argument("--epochs", type=float, help="passes over the data (default: instruct 1, vqa 3)")
    p.add_argument("--lr", type=float, help="peak learning rate (default: instruct 2e-4, vqa 1e-4)")
    p.add_argument("--batch-size", type=int, default=8)
    p.add_argument("--grad-accum", type=int, default=1, help="micro-batches per optimizer step")
    p.add_argument("--seed", type=int, default=0, help="data order (same seed, same run)")
    # Two flags rather than argparse.BooleanOptionalAction (3.9+): the CLI builds every parser on Python 3.8.
    p.add_argument("--freeze-vision", dest="freeze_vision", action="store_true", default=True,
                   help="keep the vision tower fixed (the default, as TinyLLaVA-Med trains)")
    p.add_argument("--no-freeze-vision", dest="freeze_vision", action="store_false",
                   help="train the vision tower too (needed when it starts from random weights)")
    p.add_argument("--lora", type=int, default=0, metavar="R",
                   help="LoRA rank on the decoder and connector (peft; merged into the output); 0: full fine-tune")
    p.add_argument("--lora-alpha", type=int, help="LoRA alpha (default 2 x R)")
    p.add_argument("--max-steps", type=int, help="stop after N optimizer steps, resumable with --resume")
    p.add_argument("--save-every", type=int, default=100, help="optimizer steps between resumable states")
    p.add_argument("--resume", action="store_true", help="continue the run stopped in --out")
    p.add_argument("--device", choices=("auto", "cpu", "cuda"), default="auto")


def _records(data: str, fmt: str, split: str, images: Optional[str] = None):
    from models.finetune.convert import to_conversations
    from models.finetune.data import read_records

    if fmt == "llava":
        path = Path(data)
        default = path.parent / "images" if (path.parent / "images").is_dir() else path.parent
        return read_records(path), Path(images) if images else default
    return to_conversations(fmt, data, split)


def main(args: argparse.Namespace) -> int:
    from models.finetune.train import TrainConfig, finetune

    records, images = _records(args.data, args.data_format, args.split, args.images)
    eval_records = None
    if args.eval_data:
        eval_records, eval_images = _records(args.eval_data, args.data_format, args.eval_split, args.images)
        if Path(eval_images).resolve() != Path(images).resolve():
            # one images root: point held-out paths at theirs
            eval_records = [dict(r, image=str(Path(eval_images, r["image"]).resolve())) for r in eval_records]
    cfg = TrainConfig(stage=args.stage, epochs=args.epochs, lr=args.lr, batch_size=args.batch_size,
                      grad_accum=args.grad_accum, seed=args.seed, freeze_vision=args.freeze_vision,
                      lora_r=args.lora, lora_alpha=args.lora_alpha, max_steps=args.max_steps,
                      save_every=args.save_every, device=args.device)
    summary = finetune(args.checkpoint, records, images, args.out, cfg, eval_records=eval_records, resume=args.resume)
    keys = ("stage", "examples", "total_steps", "final_train_loss", "eval_loss_before", "eval_loss_after", "seconds")
    print(json.dumps({"out": args.out, **{k: summary[k] for k in keys if k in summary}}))  # noqa: T201
    return 0
