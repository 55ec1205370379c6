"""Bundle fidelity against a reference (a checkpoint on PyTorch, or another bundle) on the probe set.

For each probe the reference generates greedily (through end-of-sequence, so every probe compares
the same number of positions) and the candidate runs teacher-forced on the reference's tokens, so
top-1 agreement and logit differences are measured position by position on the same context.
"""
from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np
from PIL import Image

from models.probes import probes

Run = Tuple[List[int], np.ndarray]  # generated ids, logits [n, V] float32


class BundleSide:
    def __init__(self, bundle: str, backend: str = "onnxruntime") -> None:
        from server.runtime.pipeline import BundlePipeline

        self.pipe = BundlePipeline(bundle, backend=backend)
        self.processor = self.pipe.processor

    def run(self, image: Image.Image, question: str, max_tokens: int, forced: Sequence[int] = ()) -> Run:
        from server.runtime.request import GenerationParams

        params = GenerationParams(max_tokens=max_tokens, ignore_eos=True, return_logits=True,
                                  forced_tokens=tuple(forced))
        r = self.pipe.runtime.generator.generate(self.processor.prompt_ids(question), self.processor.pixels(image),
                                                 params)
        return list(r.output_ids), r.logits


class CheckpointSide:
    def __init__(self, checkpoint: str) -> None:
        from models.pipeline import TorchPipeline

        self.pipe = TorchPipeline(checkpoint)
        self.processor = self.pipe.processor

    def run(self, image: Image.Image, question: str, max_tokens: int, forced: Sequence[int] = ()) -> Run:
        import torch

        from models.generate import generate

        model = self.pipe.model
        pixels = torch.from_numpy(self.processor.pixels(image)).to(model.lm_head.weight.dtype)
        r = generate(model, self.processor.prompt_ids(question), pixels, max_new_tokens=max_tokens,
                     eos_token_id=None, forced_tokens=forced, return_logits=True)
        return list(r.output_ids), r.logits.numpy()


def open_side(path: str, backend: str = "onnxruntime") -> Any:
    """A bundle (has manifest.json) or a checkpoint (has config.json)."""
    p = Path(path)
    if (p / "manifest.json").is_file():
        return BundleSide(path, backend)
    if (p / "config.json").is_file():
        return CheckpointSide(path)
    raise FileNotFoundError("%s is neither a bundle (manifest.json) nor a checkpoint (config.json)" % path)


@dataclass
class ProbeResult:
    image: str
    question_index: int
    greedy_equal: bool
    positions: int
    top1_agree: int
    max_logit_diff: float
    first_divergence: Optional[int]


@dataclass
class ValidationReport:
    probes: List[ProbeResult] = field(default_factory=list)

    @property
    def greedy_agreement(self) -> float:
        return sum(p.greedy_equal for p in self.probes) / max(1, len(self.probes))

    @property
    def top1_agreement(self) -> float:
        return sum(p.top1_agree for p in self.probes) / max(1, sum(p.positions for p in self.probes))

    @property
    def max_logit_diff(self) -> float:
        return max((p.max_logit_diff for p in self.probes), default=0.0)

    def to_json(self) -> Dict[str, Any]:
        return {"probes": len(self.probes), "greedy_agreement": self.greedy_agreement,
                "top1_agreement": self.top1_agreement, "max_logit_diff": self.max_logit_diff,
                "per_probe": [asdict(p) for p in self.probes]}


def validate(candidate: str, reference: str, images: Optional[Path] = None, max_tokens: int = 32,
             progress: bool = True, backend: str = "onnxruntime") -> ValidationReport:
    """backend: how the candidate bundle runs (the reference bundle always runs on ONNX Runtime)."""
    from tqdm import tqdm

    from models.probes import QUESTIONS

    cand, ref = open_side(candidate, backend), open_side(reference)
    report = ValidationReport()
    items = list(probes(images))
    for name, image, question in tqdm(items, desc="validate", unit="probe", disable=not progress or None):
        ref_ids, ref_logits = ref.run(image, question, max_tokens)
        _, cand_logits = cand.run(image, question, max_tokens, forced=ref_ids)
        n = min(len(ref_ids), len(cand_logits))
        picks = np.argmax(cand_logits[:n], axis=-1)
        agree = picks == np.argmax(ref_logits[:n], axis=-1)
        # The candidate's own greedy run sees the reference's context up to its first differing pick,
        # so the teacher-forced picks give its free-running sequence's agreement without a third run.
        diverge = next((i for i in range(n) if int(picks[i]) != ref_ids[i]), None)
        report.probes.append(ProbeResult(
            image=name, question_index=QUESTIONS.index(question), greedy_equal=diverge is None, positions=n,
            top1_agree=int(agree.sum()),
            max_logit_diff=float(np.max(np.abs(cand_logits[:n] - ref_logits[:n]))) if n else 0.0,
            first_divergence=diverge))
    return report


def format_report(report: ValidationReport) -> str:
    lines = ["%-14s %3s  %-6s  %-9s  %-10s  %s" % ("image", "q", "greedy", "top1", "max |dlogit|", "diverges at")]
    for p in report.probes:
        lines.append("%-14s %3d  %-6s  %4d/%-4d  %-12.3g  %s" % (
            p.image[:14], p.question_index, "same" if p.greedy_equal else "DIFF", p.top1_agree, p.positions,
            p.max_logit_diff, "-" if p.first_divergence is None else p.first_divergence))
    lines.append("greedy-sequence agreement %.1f%% (%d probes), top-1 agreement %.2f%%, max logit difference %.3g"
                 % (100 * report.greedy_agreement, len(report.probes), 100 * report.top1_agreement,
                    report.max_logit_diff))
    return "\n".join(lines)


def dumps(report: ValidationReport) -> str:
    return json.dumps(report.to_json())
