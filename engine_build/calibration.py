"""INT8 calibration data: the graphs' real inputs, recorded from the FP32 bundle's own runtime.

The FP32 bundle answers each (calibration image, probe question) pair greedily; every vision and
decoder call on the way is recorded (prefill chunks and decode steps, so both shapes are
calibrated). The inputs go to .npz files in a work directory and are read back one at a time,
so a full-size decoder (~90 MB of KV cache per step) is calibrated in bounded memory.
"""
from __future__ import annotations

import hashlib
import logging
from pathlib import Path
from typing import Dict, Iterator, List, Optional, Tuple

import numpy as np

from server.runtime.engine import Engine, EngineDims

log = logging.getLogger(__name__)


class RecordingEngine(Engine):
    """Delegates to an engine and saves each call's inputs under `out_dir/{vision,decoder}/NNNN.npz`."""

    def __init__(self, inner: Engine, out_dir: Path, max_decoder_samples: int) -> None:
        self.inner = inner
        self.out_dir = Path(out_dir)
        self.max_decoder_samples = max_decoder_samples
        self.counts = {"vision": 0, "decoder": 0}
        for g in self.counts:
            (self.out_dir / g).mkdir(parents=True, exist_ok=True)

    @property
    def dims(self) -> EngineDims:
        return self.inner.dims

    def _save(self, graph: str, **arrays: np.ndarray) -> None:
        np.savez(self.out_dir / graph / ("%05d.npz" % self.counts[graph]), **arrays)
        self.counts[graph] += 1

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        self._save("vision", pixel_values=np.asarray(pixel_values, dtype=np.float32))
        return self.inner.encode_image(pixel_values)

    def decode(self, inputs_embeds, position_ids, past_key, past_value, past_mask):  # type: ignore[no-untyped-def]
        if self.counts["decoder"] < self.max_decoder_samples:
            self._save("decoder", inputs_embeds=inputs_embeds, position_ids=position_ids, past_key=past_key,
                       past_value=past_value, past_mask=past_mask)
        return self.inner.decode(inputs_embeds, position_ids, past_key, past_value, past_mask)


def images_hash(images: List[Tuple[str, "object"]]) -> str:
    """sha256 over the calibration images' names and pixels (RGB), in order."""
    h = hashlib.sha256()
    for name, image in images:
        h.update(name.encode("utf-8") + b"\0")
        h.update(np.asarray(image.convert("RGB")).tobytes())  # type: ignore[attr-defined]
    return h.hexdigest()


def record(bundle_dir: Path, out_dir: Path, images: Optional[Path], decode_steps: int,
           max_decoder_samples: int) -> Dict[str, object]:
    """Run the FP32 bundle over the calibration probes, recording graph inputs; returns the set's description."""
    from models.probes import builtin_images, image_files
    from server.runtime.pipeline import BundlePipeline
    from server.runtime.request import GenerationParams

    pipe = BundlePipeline(bundle_dir, image_cache_size=1, prefix_reuse=False)
    gen = pipe.runtime.generator
    recorder = RecordingEngine(gen.engine, out_dir, max_decoder_samples)
    gen.engine = recorder
    pictures = image_files(images) if images else builtin_images()
    from models.probes import QUESTIONS

    params = GenerationParams(max_tokens=decode_steps, ignore_eos=True)
    for k, (_, image) in enumerate(pictures):
        for q in range(2):
            question = QUESTIONS[(2 * k + q) % len(QUESTIONS)]
            gen.generate(pipe.processor.prompt_ids(question), pipe.processor.pixels(image), params)
    pipe.runtime.close()
    log.info("calibration: %d images, %d vision and %d decoder samples", len(pictures), recorder.counts["vision"],
             recorder.counts["decoder"])
    return {"source": str(images) if images else "builtin-probes", "images": len(pictures),
            "sha256": images_hash(pictures), "samples": dict(recorder.counts), "decode_steps": decode_steps}


class NpzReader:
    """onnxruntime.quantization CalibrationDataReader over one graph's recorded inputs."""

    def __init__(self, directory: Path, input_names: List[str]) -> None:
        self.files = sorted(Path(directory).glob("*.npz"))
        self.input_names = input_names
        self._it: Iterator[Path] = iter(self.files)

    def get_next(self) -> Optional[Dict[str, np.ndarray]]:
        p = next(self._it, None)
        if p is None:
            return None
        with np.load(p) as z:
            return {n: z[n] for n in self.input_names}

    def rewind(self) -> None:
        self._it = iter(self.files)
