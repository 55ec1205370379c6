"""Conversation templates, rendered exactly as TinyLLaVA/LLaVA render them.

Only LLaVA's SeparatorStyle.TWO is needed: every template the TinyLLaVA checkpoints were trained
or evaluated with (vicuna_v1, llava_v1, phi) uses it. The image marker goes at the start of the
first user turn only, as "<image>\\n" + question (LLaVA eval scripts and TinyLLaVA's model_vqa).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Optional, Sequence, Tuple

from models.config import IMAGE_TOKEN, ConfigError

IMAGE_MARKER = IMAGE_TOKEN  # the public name in models.processor

_VICUNA_SYSTEM = (  # LLaVA / TinyLLaVA conversation.py: conv_vicuna_v1 (and TinyLLaVA conv_phi_v0)
    "A chat between a curious user and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the user's questions."
)
_LLAVA_SYSTEM = (  # LLaVA conversation.py: conv_llava_v1, the eval scripts' --conv-mode llava_v1
    "A chat between a curious human and an artificial intelligence assistant. "
    "The assistant gives helpful, detailed, and polite answers to the human's questions."
)

Turn = Tuple[str, str]  # (question, answer) of an earlier exchange


class PromptError(ValueError):
    """A question or history cannot be put into a prompt."""


@dataclass(frozen=True)
class Template:
    """A SeparatorStyle.TWO conversation: system + sep, then role turns ending in sep / sep2."""

    name: str
    system: str
    sep2: str  # ends every assistant turn; also the text the model emits to stop
    roles: Tuple[str, str] = ("USER", "ASSISTANT")
    sep: str = " "

    @property
    def stop_str(self) -> str:
        return self.sep2

    def render(self, messages: Sequence[Tuple[str, Optional[str]]]) -> str:
        """LLaVA Conversation.get_prompt for SeparatorStyle.TWO.

        `messages` are (role, text) pairs; a text of None (or "") renders as "ROLE:" with nothing
        after it, which is how the open assistant turn at the end of a prompt is written.
        """
        seps = (self.sep, self.sep2)
        out = self.system + seps[0]
        for i, (role, text) in enumerate(messages):
            if text:
                out += role + ": " + text + seps[i % 2]
            else:
                out += role + ":"
        return out

    def messages(self, question: str, history: Optional[Sequence[Turn]] = None,
                 image: bool = True) -> List[Tuple[str, Optional[str]]]:
        """The (role, text) list for earlier turns plus `question`, ending with the open assistant turn."""
        user, assistant = self.roles
        turns = list(history or []) + [(question, None)]
        out: List[Tuple[str, Optional[str]]] = []
        for i, (q, a) in enumerate(turns):
            _check_text(q, "question")
            if a is not None:
                _check_text(a, "answer")
            if i == 0 and image:
                q = IMAGE_MARKER + "\n" + q
            out.append((user, q))
            out.append((assistant, a))
        return out

    def prompt(self, question: str, history: Optional[Sequence[Turn]] = None, image: bool = True) -> str:
        """The full prompt text: "<system> USER: <image>\\n{question} ASSISTANT:" for one turn."""
        return self.render(self.messages(question, history, image))


def _check_text(text: str, what: str) -> None:
    if not isinstance(text, str):
        raise PromptError("%s must be a string, got %s" % (what, type(text).__name__))
    if IMAGE_MARKER in text:
        # It would become a second image slot: the runtime supplies exactly one image.
        raise PromptError("the %s contains the reserved marker %r; remove it" % (what, IMAGE_MARKER))


TEMPLATES: Dict[str, Template] = {
    "vicuna_v1": Template("vicuna_v1", _VICUNA_SYSTEM, sep2="</s>"),
    "llava_v1": Template("llava_v1", _LLAVA_SYSTEM, sep2="</s>"),
    "phi": Template("phi", _VICUNA_SYSTEM, sep2="<|endoftext|>"),
}


def get_template(name: str) -> Template:
    try:
        return TEMPLATES[name]
    except KeyError:
        raise ConfigError("unknown prompt template %r (known: %s)" % (name, ", ".join(sorted(TEMPLATES)))) from None


__all__ = ["IMAGE_MARKER", "PromptError", "Template", "TEMPLATES", "Turn", "get_template"]
