"""The processor: prompt template + tokenizer + image preprocessing, without torch.

Runs on Python 3.8 with numpy, Pillow and `tokenizers` only (the Jetson image has no PyTorch).
"""
from __future__ import annotations

import dataclasses
from pathlib import Path
from typing import List, Optional, Sequence, Union

import numpy as np

from models.config import IMAGE_TOKEN_INDEX, ImageConfig, ModelConfig
from models.processor.image import ImageError, ImageInput, preprocess
from models.processor.templates import IMAGE_MARKER, PromptError, Template, Turn, get_template
from models.processor.tokenizer import TextTokenizer, TokenizerError


class Processor:
    """Turns (image, question[, history]) into what the engines take: prompt ids with the image
    sentinel and pixel_values."""

    def __init__(self, config: ModelConfig, tokenizer: Union[str, Path, TextTokenizer],
                 template: Optional[str] = None) -> None:
        self.config = config
        self.template: Template = get_template(template or config.template)
        self.image_config: ImageConfig = config.image  # type: ignore[assignment]  # set in __post_init__
        if isinstance(tokenizer, TextTokenizer):
            self.tokenizer = tokenizer
        else:
            self.tokenizer = TextTokenizer.from_file(tokenizer, eos_token=self.template.stop_str)

    @property
    def eos_id(self) -> int:
        return self.tokenizer.eos_id

    @property
    def bos_id(self) -> Optional[int]:
        return self.tokenizer.bos_id

    def prompt(self, question: str, history: Optional[Sequence[Turn]] = None,
               system: Optional[str] = None) -> str:
        """The prompt text; `system`, when given, replaces the template's system text."""
        template = self.template if system is None else dataclasses.replace(self.template, system=system)
        return template.prompt(question, history)

    def prompt_ids(self, question: str, history: Optional[Sequence[Turn]] = None,
                   system: Optional[str] = None) -> List[int]:
        """Token ids of the prompt, with IMAGE_TOKEN_INDEX (-200) where the image embeddings go."""
        return self.tokenizer.encode_with_image(self.prompt(question, history, system), IMAGE_TOKEN_INDEX)

    def pixels(self, image: ImageInput) -> np.ndarray:
        """pixel_values float32 [1, 3, S, S] for a PIL image or encoded image bytes."""
        return preprocess(image, self.image_config)

    def decode(self, ids: Sequence[int]) -> str:
        return self.tokenizer.decode(ids)


__all__ = ["IMAGE_MARKER", "ImageError", "Processor", "PromptError", "TextTokenizer", "TokenizerError"]
