"""Bundle -> answer on the runtime: the path behind `ask --bundle` (and, later, the service)."""
from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, Optional, Sequence, Union

from models.processor import Processor, TextTokenizer
from models.processor.image import ImageInput
from models.processor.templates import Turn, get_template
from server.imaging.limits import ImageLimits
from server.imaging.prep import ImagePreparer
from server.runtime.bundle import bundle_eos_ids
from server.runtime.loader import Runtime, load_runtime
from server.runtime.request import GenerationParams
from server.runtime.results import ms


class BundlePipeline:
    """A verified bundle on ONNX Runtime, with the processor its manifest describes."""

    def __init__(self, bundle: Union[str, Path], template: Optional[str] = None,
                 image_limits: Optional[ImageLimits] = None, **runtime_options: Any) -> None:
        t0 = time.perf_counter()
        self.runtime: Runtime = load_runtime(bundle, **runtime_options)
        manifest = self.runtime.manifest
        name = template or manifest.template
        tokenizer = TextTokenizer(self.runtime.tokenizer, eos_token=get_template(name).stop_str,
                                  eos_token_ids=bundle_eos_ids(manifest.tokenizer))
        self.processor = Processor(manifest.model, tokenizer, template=name)
        self.images = ImagePreparer(self.processor, image_limits)
        self.load_ms = ms(time.perf_counter() - t0)

    def ask(self, image: ImageInput, question: str, max_tokens: int = 64, history: Optional[Sequence[Turn]] = None,
            temperature: float = 0.0, top_p: float = 1.0, top_k: int = 0, seed: Optional[int] = None,
            ignore_eos: bool = False) -> Dict[str, Any]:
        """The `ask --json` object: answer, prompt_token_ids (with -200), output_token_ids, timings."""
        t0 = time.perf_counter()
        prompt_ids = self.processor.prompt_ids(question, history)
        # upload bytes go through the cached decoder (PNG/JPEG/DICOM); a PIL image is preprocessed as is
        pixels = self.images(image)[1] if isinstance(image, bytes) else self.processor.pixels(image)
        t_pre = time.perf_counter()
        params = GenerationParams(max_tokens=max_tokens, temperature=temperature, top_p=top_p, top_k=top_k,
                                  seed=seed, ignore_eos=ignore_eos)
        result = self.runtime.generator.generate(prompt_ids, pixels, params)
        timings = result.timings.to_dict()
        timings["preprocess_ms"] = ms(t_pre - t0)
        timings["load_ms"] = self.load_ms
        return {
            "answer": result.text.strip(),
            "prompt_token_ids": list(prompt_ids),
            "output_token_ids": list(result.output_ids),
            "finish_reason": result.finish_reason,
            "timings": timings,
        }
