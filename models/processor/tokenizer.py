"""Text <-> ids over a Hugging Face `tokenizers` tokenizer.json, with LLaVA's image sentinel.

The bundle always carries tokenizer.json (a SentencePiece tokenizer.model is converted at export
time), so this module needs only `tokenizers`.
"""
from __future__ import annotations

from pathlib import Path
from typing import Iterable, List, Optional, Sequence, Tuple, Union

from tokenizers import Tokenizer

from models.config import IMAGE_TOKEN_INDEX
from models.processor.templates import IMAGE_MARKER

# Tried in order when no EOS token is named: Llama's and GPT-2/Phi's end-of-text tokens.
_EOS_CANDIDATES = ("</s>", "<|endoftext|>")


class TokenizerError(ValueError):
    """The tokenizer file is missing, unreadable, or lacks a token the model needs."""


class TextTokenizer:
    """Encoding, decoding and LLaVA's `tokenizer_image_token` over one tokenizer.json."""

    def __init__(self, tokenizer: Tokenizer, eos_token: Optional[str] = None,
                 eos_token_ids: Optional[Sequence[int]] = None) -> None:
        """eos_token_ids: the checkpoint's (models.checkpoint.eos), which win; the first is `eos_id`.
        Without them, `eos_token` (a template's stop string) or else </s>, <|endoftext|>, whichever
        the tokenizer has. `stop_ids` are the end-of-sequence ids plus the template's stop token."""
        tokenizer.no_truncation()
        tokenizer.no_padding()
        self._tok = tokenizer
        self.bos_id = self._detect_bos()
        if eos_token_ids:
            ids = [int(i) for i in eos_token_ids]
            vocab = self.vocab_size
            bad = [i for i in ids if not 0 <= i < vocab]
            if bad:
                raise TokenizerError("the end-of-sequence id(s) %s are outside the tokenizer's %d tokens: the "
                                     "checkpoint's eos_token_id does not fit its tokenizer" % (bad, vocab))
            self.eos_id = ids[0]
            self.eos_token = tokenizer.id_to_token(ids[0])
        else:
            self.eos_token, self.eos_id = self._find_eos(eos_token)
            ids = [self.eos_id]
        stop = self._tok.token_to_id(eos_token) if eos_token is not None else None
        self.stop_ids: Tuple[int, ...] = tuple(ids + ([stop] if stop is not None and stop not in ids else []))

    @classmethod
    def from_file(cls, path: Union[str, Path], eos_token: Optional[str] = None) -> "TextTokenizer":
        path = Path(path)
        if path.is_dir():
            path = path / "tokenizer.json"
        if not path.is_file():
            raise TokenizerError("no tokenizer at %s: expected a tokenizer.json file" % path)
        try:
            tok = Tokenizer.from_file(str(path))
        except Exception as e:  # tokenizers raises a bare Exception for malformed JSON
            raise TokenizerError("could not read %s (%s); re-export the bundle" % (path, e)) from None
        return cls(tok, eos_token)

    def _detect_bos(self) -> Optional[int]:
        # A BOS is what the post-processor puts in front of the text ("<s> $A" for Llama; GPT-2 and
        # Phi add nothing). Read it from behaviour so any tokenizer.json is handled the same way.
        plain = self._tok.encode("a", add_special_tokens=False).ids
        full = self._tok.encode("a", add_special_tokens=True).ids
        if len(full) > len(plain) and full[1:1 + len(plain)] == plain:
            return full[0]
        return None

    def _find_eos(self, eos_token: Optional[str]) -> Tuple[str, int]:
        candidates = ((eos_token,) if eos_token is not None else ()) + _EOS_CANDIDATES
        for tok in candidates:
            tid = self._tok.token_to_id(tok)
            if tid is not None:
                return tok, tid
        raise TokenizerError("the tokenizer has no end-of-sequence token (looked for %s)" % ", ".join(candidates))

    @property
    def vocab_size(self) -> int:
        return self._tok.get_vocab_size(with_added_tokens=True)

    @property
    def backend(self) -> Tokenizer:
        return self._tok

    def token_to_id(self, token: str) -> Optional[int]:
        return self._tok.token_to_id(token)

    def encode(self, text: str, add_special_tokens: bool = True) -> List[int]:
        return list(self._tok.encode(text, add_special_tokens=add_special_tokens).ids)

    def encode_with_image(self, prompt: str, image_token_index: int = IMAGE_TOKEN_INDEX) -> List[int]:
        """LLaVA mm_utils.tokenizer_image_token.

        Each "<image>"-separated chunk is encoded on its own with special tokens; a leading BOS is
        kept once; `image_token_index` goes between chunks. The separator is built as
        [index] * (offset + 1) and then sliced like the chunks, exactly as LLaVA does.
        """
        chunks = [self.encode(chunk) for chunk in prompt.split(IMAGE_MARKER)]
        ids: List[int] = []
        offset = 0
        if chunks and chunks[0] and self.bos_id is not None and chunks[0][0] == self.bos_id:
            offset = 1
            ids.append(chunks[0][0])
        sep = [image_token_index] * (offset + 1)
        for i, chunk in enumerate(chunks):
            if i:
                ids.extend(sep[offset:])
            ids.extend(chunk[offset:])
        return ids

    def decode(self, ids: Iterable[int], skip_special_tokens: bool = True) -> str:
        """Text of `ids`; sentinels (negative ids such as -200) are dropped."""
        return self._tok.decode([i for i in ids if i >= 0], skip_special_tokens=skip_special_tokens)


__all__ = ["TextTokenizer", "TokenizerError"]
