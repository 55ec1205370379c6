"""Small real tokenizers trained in-process with `tokenizers`, in the two styles our models use.

- llama_style: SentencePiece-like BPE as TinyLlama's tokenizer.json (Metaspace "▁" by normalizer,
  byte fallback to <0xXX> tokens, decoder Replace/ByteFallback/Fuse/Strip).
- byte_level: GPT-2/Phi-2 byte-level BPE.
Characters absent from the training text (emoji, CJK) come out as several byte tokens, which is
what makes streaming detokenisation hard.
"""
from __future__ import annotations

import json
from functools import lru_cache

from tokenizers import Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers

CORPUS = [
    "A chest X-ray of the patient shows a small nodule in the left lower lobe.",
    "Is there a pneumothorax? No, there is no pneumothorax.",
    "Résumé clinique: cœur normal, poumons clairs. Über die Ärzte: sehr gut.",
    "The MRI of the brain shows no acute lesion; the ventricles are normal in size.",
    "Question: which organ is abnormal? Answer: the liver.",
]


@lru_cache(maxsize=None)
def llama_style(vocab_size: int = 220) -> Tokenizer:
    tok = Tokenizer(models.BPE(byte_fallback=True, unk_token="<unk>", fuse_unk=True))
    tok.normalizer = normalizers.Sequence([normalizers.Prepend("▁"), normalizers.Replace(" ", "▁")])
    tok.decoder = decoders.Sequence([decoders.Replace("▁", " "), decoders.ByteFallback(), decoders.Fuse(),
                                     decoders.Strip(" ", 1, 0)])
    tok.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<unk>", "<s>", "</s>"], show_progress=False))
    # Byte-fallback pieces live in the model vocabulary (as in Llama's), not as added tokens.
    spec = json.loads(tok.to_str())
    vocab = spec["model"]["vocab"]
    for b in range(256):
        vocab.setdefault("<0x%02X>" % b, len(vocab))
    return Tokenizer.from_str(json.dumps(spec))


@lru_cache(maxsize=None)
def byte_level(vocab_size: int = 300) -> Tokenizer:
    tok = Tokenizer(models.BPE())
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tok.decoder = decoders.ByteLevel()
    tok.train_from_iterator(CORPUS * 10, trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=["<|endoftext|>"], initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False))
    return tok
