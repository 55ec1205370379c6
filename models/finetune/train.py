"""The training loop behind `tinyllava-med finetune`: LLaVA's two stages on a LlavaModel.

- stage "instruct": LLaVA-Med-style instruction tuning (multi-turn conversations about an image);
- stage "vqa": the downstream fine-tune on a VQA training split (single-turn, short answers).
Both take the loss on assistant tokens only (models.finetune.data). As TinyLLaVA-Med trains, the
vision tower is frozen unless asked otherwise and the connector and decoder are tuned fully, or
with LoRA adapters (peft) on the decoder's and the connector's linear layers, merged at the end.

Runs on CPU (fp32) or CUDA (bf16 autocast where supported, else fp16 with loss scaling). The data
order of epoch e is a permutation seeded by (seed, e), so a run stopped and resumed from its
trainer_state.pt takes exactly the steps an uninterrupted run takes.
"""
from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import json
import logging
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import torch
import torch.nn.functional as F
from torch import Tensor
from tqdm import tqdm

from models.checkpoint.reader import model_from_checkpoint, read_all_tensors, read_checkpoint
from models.checkpoint.writer import save_checkpoint
from models.config import IMAGE_TOKEN_INDEX, ModelConfig
from models.finetune.data import IGNORE_INDEX, Example, encode_all
from models.llava import LlavaModel
from models.processor import Processor, TextTokenizer

log = logging.getLogger(__name__)

STAGES = ("instruct", "vqa")
# Defaults per stage when a flag is not given (a from-scratch tiny model needs far larger rates
# than the 2e-5 TinyLLaVA-Med used on pretrained 1.5B weights).
STAGE_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "instruct": {"epochs": 1.0, "lr": 2e-4},
    "vqa": {"epochs": 3.0, "lr": 1e-4},
}
STATE_FILE = "trainer_state.pt"  # resumable state, removed when the run completes
SUMMARY_FILE = "trainer_state.json"  # what the run did, kept beside the weights
_LORA_TARGETS = r".*(language_model\.layers\.\d+\.(self_attn\.(q|k|v|o)_proj|mlp\.(gate|up|down)_proj)|connector\.linear_[12])"


class TrainingError(Exception):
    """The run cannot start or continue as asked; the message says what to change."""


@dataclass(frozen=True)
class TrainConfig:
    stage: str = "vqa"
    epochs: Optional[float] = None  # None: the stage's default
    lr: Optional[float] = None
    batch_size: int = 8
    grad_accum: int = 1
    seed: int = 0
    freeze_vision: bool = True
    lora_r: int = 0  # 0: full fine-tune
    lora_alpha: Optional[int] = None  # None: 2 * r
    warmup: float = 0.03  # share of the steps with a linear warm-up, then cosine decay (TinyLLaVA-Med)
    weight_decay: float = 0.0
    max_grad_norm: float = 1.0
    max_steps: Optional[int] = None  # stop after this many optimizer steps (the schedule still spans all)
    save_every: int = 100  # optimizer steps between resumable states
    device: str = "auto"  # "auto" | "cpu" | "cuda"

    def resolved(self) -> "TrainConfig":
        if self.stage not in STAGES:
            raise TrainingError("unknown stage %r: choose instruct or vqa" % self.stage)
        d = STAGE_DEFAULTS[self.stage]
        cfg = dataclasses.replace(self, epochs=self.epochs if self.epochs is not None else d["epochs"],
                                  lr=self.lr if self.lr is not None else d["lr"])
        if cfg.batch_size < 1 or cfg.grad_accum < 1 or cfg.epochs <= 0 or cfg.lr <= 0 or cfg.lora_r < 0:
            raise TrainingError("batch size, grad-accum, epochs and lr must be positive and --lora >= 0")
        return cfg


# ---- batches --------------------------------------------------------------------------------

def load_pixels(processor: Processor, images_dir: Path, names: Sequence[str]) -> Dict[str, Tensor]:
    """pixel_values [3, S, S] per image, decoded as the server decodes uploads (PNG, JPEG, DICOM)."""
    from server.imaging.images import decode_image

    out: Dict[str, Tensor] = {}
    for name in tqdm(sorted(set(names)), desc="loading images", unit="img", disable=None, leave=False):
        path = images_dir / name
        try:
            data = path.read_bytes()
        except OSError as e:
            raise TrainingError("cannot read image %s (%s); check --images" % (path, e)) from None
        out[name] = torch.from_numpy(processor.pixels(decode_image(data).image))[0]
    return out


def batch_loss(model: LlavaModel, batch: Sequence[Example], pixels: Dict[str, Tensor]) -> Tuple[Tensor, int]:
    """(summed cross-entropy over the batch's answer tokens, number of those tokens)."""
    device = model.lm_head.weight.device
    images = torch.stack([pixels[ex.image] for ex in batch]).to(device)
    image_embeds = model.encode_image(images)
    n_img = image_embeds.shape[1]
    embeds, labels = [], []
    for i, ex in enumerate(batch):
        embeds.append(model.merge(ex.input_ids, image_embeds[i])[0])
        lab: List[int] = []
        for tid, label in zip(ex.input_ids, ex.labels):
            lab.extend([IGNORE_INDEX] * n_img if tid == IMAGE_TOKEN_INDEX else [label])
        labels.append(lab)
    length = max(e.shape[0] for e in embeds)
    hidden = embeds[0].shape[1]
    x = torch.zeros(len(batch), length, hidden, dtype=embeds[0].dtype, device=device)
    y = torch.full((len(batch), length), IGNORE_INDEX, dtype=torch.long, device=device)
    for i, (e, lab) in enumerate(zip(embeds, labels)):
        x[i, :e.shape[0]] = e
        y[i, :len(lab)] = torch.tensor(lab, dtype=torch.long, device=device)
    # Right padding under a causal mask: padded positions come after every real one, so no real
    # token attends to them and their labels are ignored; the mask can stay all ones.
    positions = torch.arange(length, device=device)[None].expand(len(batch), -1)
    past = model.empty_kv(len(batch), x.dtype)
    logits, _, _ = model.forward_decoder(x, positions, past, past,
                                         torch.ones(len(batch), length, dtype=torch.long, device=device))
    targets = y[:, 1:]
    loss = F.cross_entropy(logits[:, :-1].reshape(-1, logits.shape[-1]).float(), targets.reshape(-1),
                           ignore_index=IGNORE_INDEX, reduction="sum")
    return loss, int((targets != IGNORE_INDEX).sum())


@torch.no_grad()
def evaluate_loss(model: LlavaModel, examples: Sequence[Example], pixels: Dict[str, Tensor],
                  batch_size: int = 16) -> float:
    """Mean cross-entropy per answer token (the held-out loss)."""
    total, count = 0.0, 0
    for k in range(0, len(examples), batch_size):
        loss, n = batch_loss(model, examples[k:k + batch_size], pixels)
        total += float(loss)
        count += n
    return total / max(count, 1)


# ---- the run --------------------------------------------------------------------------------

def _lr_factor(step: int, total: int, warmup: float) -> float:
    warm = max(1, int(math.ceil(total * warmup)))
    if step < warm:
        return (step + 1) / warm
    progress = (step - warm) / max(1, total - warm)
    return 0.5 * (1.0 + math.cos(math.pi * min(1.0, progress)))


def _fingerprint(examples: Sequence[Example]) -> str:
    h = hashlib.sha256()
    for ex in examples:
        h.update(json.dumps([ex.image, ex.input_ids, ex.labels]).encode("utf-8"))
    return h.hexdigest()


def _device(name: str) -> torch.device:
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise TrainingError("--device cuda but no CUDA device is visible; use --device cpu")
    return torch.device(name)


def _wrap_lora(model: LlavaModel, cfg: TrainConfig) -> torch.nn.Module:
    try:
        from peft import LoraConfig, get_peft_model
    except ImportError:
        raise TrainingError("--lora needs peft: pip install -e '.[finetune]'") from None
    lora = LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=0.0,
                      target_modules=_LORA_TARGETS, bias="none")
    return get_peft_model(model, lora)


def finetune(checkpoint: Union[str, Path], records: Sequence[Dict[str, Any]], images_dir: Union[str, Path],
             out: Union[str, Path], cfg: TrainConfig, eval_records: Optional[Sequence[Dict[str, Any]]] = None,
             resume: bool = False, progress: bool = True) -> Dict[str, Any]:
    """Train from `checkpoint` on `records`; write the result to `out` in the llava layout.

    Returns the summary also written to out/trainer_state.json (losses, held-out loss before and
    after when eval_records are given, steps, seconds). With resume, continues from
    out/trainer_state.pt; a run stopped by cfg.max_steps leaves that file for a later resume.
    """
    cfg = cfg.resolved()
    out = Path(out)
    state_path = out / STATE_FILE
    if out.exists() and any(out.iterdir()):
        if not resume or not state_path.is_file() or any(p.name != STATE_FILE for p in out.iterdir()):
            raise TrainingError("%s is not empty; give a new --out directory (or --resume a run stopped there)" % out)
    elif resume:
        raise TrainingError("--resume: no %s in %s to resume from" % (STATE_FILE, out))
    device = _device(cfg.device)
    torch.manual_seed(cfg.seed)

    ckpt = read_checkpoint(checkpoint, torch.float32)
    model, mcfg = model_from_checkpoint(ckpt)
    _check_saveable(mcfg)
    for p in model.parameters():  # the loaded tensors may be read-only memory maps
        p.data = p.data.clone()
        p.requires_grad_(True)
    processor = Processor(mcfg, TextTokenizer(ckpt.load_tokenizer()))
    images_dir = Path(images_dir)
    n_img = mcfg.num_image_tokens
    limit = mcfg.text.max_position_embeddings
    examples, dropped = encode_all(processor.tokenizer, processor.template, records, limit, n_img)
    if dropped:
        log.warning("%d conversation(s) exceed the model's %d positions and are skipped", dropped, limit)
    if not examples:
        raise TrainingError("no conversation fits the model's %d positions" % limit)
    held_out: List[Example] = []
    if eval_records:
        held_out, _ = encode_all(processor.tokenizer, processor.template, eval_records, limit, n_img)
    pixels = load_pixels(processor, images_dir, [ex.image for ex in examples] + [ex.image for ex in held_out])

    model.to(device)
    if cfg.freeze_vision:
        model.vision_tower.requires_grad_(False)
    trainer: torch.nn.Module = _wrap_lora(model, cfg) if cfg.lora_r else model
    if cfg.lora_r and not cfg.freeze_vision:
        model.vision_tower.requires_grad_(True)  # peft froze it with everything else; --no-freeze-vision trains it fully
    params = [p for p in trainer.parameters() if p.requires_grad]
    optimizer = torch.optim.AdamW(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    per_step = cfg.batch_size * cfg.grad_accum
    steps_per_epoch = max(1, math.ceil(len(examples) / per_step))
    total_steps = max(1, int(math.ceil(cfg.epochs * steps_per_epoch)))
    fingerprint = _fingerprint(examples)

    summary: Dict[str, Any] = {"stage": cfg.stage, "config": dataclasses.asdict(cfg), "examples": len(examples),
                               "skipped_too_long": dropped, "total_steps": total_steps, "history": []}
    step = 0
    if resume:
        state = torch.load(state_path, map_location=device, weights_only=False)
        if state["fingerprint"] != fingerprint or _run_defining(state["config"]) != _run_defining(dataclasses.asdict(cfg)):
            raise TrainingError("%s was written by a run with other data or settings; resume with the same "
                                "--data, --images and flags, or start in a new --out" % state_path)
        trainer.load_state_dict(state["model"])
        optimizer.load_state_dict(state["optimizer"])
        step, summary = state["step"], state["summary"]
    elif held_out:
        summary["eval_loss_before"] = evaluate_loss(model.eval(), held_out, pixels)

    autocast, scaler = _precision(device)
    trainer.train()
    t0 = time.perf_counter()
    stop_at = total_steps if cfg.max_steps is None else min(total_steps, cfg.max_steps)
    bar = tqdm(total=total_steps, initial=step, desc="finetune %s" % cfg.stage, unit="step",
               disable=not progress, mininterval=5.0)
    smooth: Optional[float] = None
    while step < stop_at:
        epoch, in_epoch = divmod(step, steps_per_epoch)
        order = torch.randperm(len(examples), generator=torch.Generator().manual_seed(cfg.seed * 100003 + epoch))
        chunk = order[in_epoch * per_step:(in_epoch + 1) * per_step].tolist()
        for g in optimizer.param_groups:
            g["lr"] = cfg.lr * _lr_factor(step, total_steps, cfg.warmup)
        optimizer.zero_grad(set_to_none=True)
        micro = [chunk[k:k + cfg.batch_size] for k in range(0, len(chunk), cfg.batch_size)]
        tokens = sum(sum(1 for lab in examples[i].labels if lab != IGNORE_INDEX) for i in chunk)
        step_loss = 0.0
        for ids in micro:
            with autocast():
                loss_sum, _ = batch_loss(model, [examples[i] for i in ids], pixels)
            loss = loss_sum / max(tokens, 1)  # mean over the optimizer step's answer tokens
            (scaler.scale(loss) if scaler else loss).backward()
            step_loss += float(loss.detach())
        if scaler:
            scaler.unscale_(optimizer)
        torch.nn.utils.clip_grad_norm_(params, cfg.max_grad_norm)
        if scaler:
            scaler.step(optimizer)
            scaler.update()
        else:
            optimizer.step()
        step += 1
        smooth = step_loss if smooth is None else 0.95 * smooth + 0.05 * step_loss
        summary["history"].append([step, round(step_loss, 5)])
        bar.set_postfix(loss="%.4f" % smooth, lr="%.2e" % optimizer.param_groups[0]["lr"], refresh=False)
        bar.update()
        if step % cfg.save_every == 0 or step == stop_at:
            _save_state(state_path, trainer, optimizer, step, fingerprint, cfg, summary)
    bar.close()
    summary["seconds"] = round(summary.get("seconds", 0.0) + time.perf_counter() - t0, 1)
    if step < total_steps:  # stopped by max_steps: the state stays for --resume
        _save_state(state_path, trainer, optimizer, step, fingerprint, cfg, summary)
        return summary

    trained = trainer.merge_and_unload() if cfg.lora_r else trainer
    trained.eval()
    if held_out:
        summary["eval_loss_after"] = evaluate_loss(trained, held_out, pixels)
    summary["final_train_loss"] = smooth
    summary["device"] = str(device)
    tensors = read_all_tensors(checkpoint)
    tensors.update({k: v.detach().cpu() for k, v in trained.state_dict().items()})
    state_path.unlink(missing_ok=True)
    save_checkpoint(out, mcfg, tensors, tokenizer_from=checkpoint, progress=False)
    with open(out / SUMMARY_FILE, "w", encoding="utf-8") as f:
        json.dump(summary, f, indent=1)
        f.write("\n")
    return summary


def _run_defining(config: Dict[str, Any]) -> Dict[str, Any]:
    """The settings a resumed run must share with the stopped one (where it stops and saves may change)."""
    return {k: v for k, v in config.items() if k not in ("max_steps", "save_every", "device")}


def _precision(device: torch.device):
    """(autocast context factory, GradScaler or None): fp32 on CPU; bf16, else fp16 with scaling, on CUDA."""
    if device.type != "cuda":
        return contextlib.nullcontext, None
    if torch.cuda.is_bf16_supported():
        return (lambda: torch.autocast("cuda", dtype=torch.bfloat16)), None
    return (lambda: torch.autocast("cuda", dtype=torch.float16)), torch.amp.GradScaler("cuda")


def _save_state(path: Path, trainer: torch.nn.Module, optimizer: torch.optim.Optimizer, step: int,
                fingerprint: str, cfg: TrainConfig, summary: Dict[str, Any]) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    torch.save({"step": step, "model": trainer.state_dict(), "optimizer": optimizer.state_dict(),
                "fingerprint": fingerprint, "config": dataclasses.asdict(cfg), "summary": summary}, tmp)
    tmp.replace(path)  # never a half-written state


def _check_saveable(cfg: ModelConfig) -> None:
    v = cfg.vision
    if v.select_strategy == "patch" and v.patch_drops_first and not v.has_cls:
        raise TrainingError("this checkpoint's SigLIP tower drops its first patch (TinyLLaVA_Factory's 728-token "
                            "convention), which the llava layout finetune writes cannot record; fine-tune it with "
                            "TinyLLaVA_Factory")


__all__ = ["STAGES", "STAGE_DEFAULTS", "TrainConfig", "TrainingError", "batch_loss", "evaluate_loss", "finetune",
           "load_pixels"]
