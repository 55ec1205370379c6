"""Export-time tokenizer tools: a small built-in medical corpus and tokenizer training for the tiny
test presets (SentencePiece -> tokenizer.json conversion is models.checkpoint.sentencepiece).

Imports sentencepiece (and its protobuf) and `tokenizers`, never torch. The runtime reads only the
tokenizer.json these functions produce (models.processor.tokenizer).
"""
from __future__ import annotations

import io
from pathlib import Path
from typing import List, Union

from tokenizers import models, pre_tokenizers, trainers

from models.checkpoint.tokenizer_files import byte_level
from models.processor.templates import TEMPLATES

PathLike = Union[str, Path]
ENDOFTEXT = "<|endoftext|>"  # GPT-2 / Phi-2 end-of-text (and only special) token

# ---- corpus ------------------------------------------------------------------------------

_ORGANS = (
    "liver", "spleen", "left kidney", "right kidney", "lungs", "right lung", "left lung", "heart",
    "brain", "pancreas", "gallbladder", "urinary bladder", "stomach", "colon", "small bowel",
    "aorta", "trachea", "esophagus", "spine", "femur", "pelvis", "thyroid", "prostate", "uterus",
    "adrenal gland", "diaphragm", "mediastinum", "cerebellum", "ventricles", "sinuses", "orbit",
)
_MODALITIES = (
    "CT", "MRI", "X-ray", "ultrasound", "PET-CT", "chest radiograph", "contrast-enhanced CT",
    "T1-weighted MRI", "T2-weighted MRI", "FLAIR MRI", "diffusion-weighted MRI", "angiography",
    "mammography", "fluoroscopy", "histopathology slide",
)
_FINDINGS = (
    "mass", "nodule", "lesion", "pleural effusion", "pneumothorax", "fracture", "hemorrhage",
    "infarct", "edema", "cyst", "calcification", "consolidation", "atelectasis", "cardiomegaly",
    "hydronephrosis", "kidney stone", "abscess", "tumor", "metastasis", "aneurysm", "stenosis",
    "dilation", "free air", "ascites", "lymphadenopathy", "midline shift", "opacity", "thickening",
)
_PLANES = ("axial", "coronal", "sagittal")
_SIDES = ("left", "right", "bilateral", "central")
_SIZES = ("3 mm", "7 mm", "1.2 cm", "2.5 cm", "4 cm", "10 cm", "0.8 cm", "15 mm", "6.5 cm", "22 mm")
_QUESTIONS = (
    "Is there a {f} in the {o}?",
    "Is there evidence of {f}?",
    "What is the abnormality in the {o}?",
    "Where is the {f} located?",
    "What modality was used to take this image?",
    "Which organ is abnormal in this image?",
    "Is this image taken in the {p} plane?",
    "Does the {o} appear normal?",
    "How large is the {f}?",
    "Is the {f} on the {s} side?",
    "What part of the body is shown in this {m} image?",
    "Was contrast given for this {m}?",
    "Is this a {m}?",
    "How many lesions are seen in the {o}?",
    "What is the most likely diagnosis?",
    "Are the {o} and the {o2} both visible?",
)
_ANSWERS = (
    "Yes.", "No.", "Yes", "No", "{m}", "The {f} is in the {s} {o}.",
    "There is a {z} {f} in the {o}.", "The {o} appears normal.", "This is an {p} {m} image.",
    "The {o} shows a {f} measuring {z}.", "No {f} is seen in the {o}.", "It is located in the {s} {o}.",
    "{n}", "The image shows the {o} and the {o2}.", "The most likely diagnosis is {f}.",
)
_DESCRIPTORS = (
    "hypodense", "hyperdense", "heterogeneous", "homogeneous", "enhancing", "ill-defined",
    "well-circumscribed", "lobulated", "spiculated", "cystic", "solid", "necrotic", "calcified",
    "hyperintense", "hypointense", "echogenic", "anechoic", "diffuse", "focal", "multifocal",
    "subtle", "extensive", "chronic", "acute", "subacute", "mild", "moderate", "severe",
)
_ANATOMY = (
    "duodenum", "jejunum", "ileum", "appendix", "cecum", "sigmoid colon", "rectum", "vertebra",
    "clavicle", "scapula", "humerus", "radius", "ulna", "tibia", "fibula", "patella", "skull",
    "mandible", "maxilla", "cervical spine", "thoracic spine", "lumbar spine", "sacrum",
    "hippocampus", "thalamus", "basal ganglia", "pons", "medulla", "frontal lobe", "temporal lobe",
    "parietal lobe", "occipital lobe", "portal vein", "inferior vena cava", "pulmonary artery",
    "carotid artery", "hilum", "pericardium", "peritoneum", "retroperitoneum", "omentum",
)
_CONDITIONS = (
    "pneumonia", "tuberculosis", "emphysema", "pulmonary fibrosis", "sarcoidosis", "cirrhosis",
    "hepatitis", "cholecystitis", "appendicitis", "diverticulitis", "pancreatitis", "glioblastoma",
    "meningioma", "lymphoma", "carcinoma", "adenoma", "hemangioma", "osteomyelitis", "osteoporosis",
    "pulmonary embolism", "stroke", "multiple sclerosis", "hydrocephalus", "bronchiectasis",
    "pyelonephritis", "endometriosis", "fibroid", "polyp", "volvulus", "intussusception",
)
_REPORT = (
    "Findings: {z} {f} in the {s} {o}. Impression: {f}, follow-up {m} is recommended.",
    "The {o} is unremarkable. No {f}, no {f2}. The {o2} is normal in size.",
    "Compared with the prior {m}, the {f} in the {o} has increased from {z} to {z2}.",
    "A {d} {f} in the {a} suggests {c}.",
    "Differential diagnosis includes {c}, {c2} and {c3}.",
    "The {a} is {d}; correlate clinically for {c}.",
)


def medical_corpus() -> List[str]:
    """A few hundred deterministic medical VQA-style lines (questions, answers, report phrases),
    plus the prompt templates' own text, for training the tiny test tokenizers."""
    lines: List[str] = []
    for t in TEMPLATES.values():
        lines.append(t.system)
        lines.append("%s: What is shown? %s: An image." % t.roles)
    n_o, n_m, n_f, n_c = len(_ORGANS), len(_MODALITIES), len(_FINDINGS), len(_CONDITIONS)
    for i in range(600):
        # Co-prime strides walk the tables in different orders without any random generator,
        # so the corpus (and every tokenizer trained on it) is identical on every Python.
        slots = {
            "o": _ORGANS[i % n_o], "o2": _ORGANS[(i * 7 + 3) % n_o], "m": _MODALITIES[(i * 5) % n_m],
            "f": _FINDINGS[(i * 3) % n_f], "f2": _FINDINGS[(i * 11 + 5) % n_f], "p": _PLANES[i % 3],
            "s": _SIDES[(i * 3) % 4], "z": _SIZES[i % 10], "z2": _SIZES[(i * 7 + 1) % 10], "n": str(i % 13),
            "d": _DESCRIPTORS[(i * 5 + 1) % len(_DESCRIPTORS)], "a": _ANATOMY[(i * 3 + 2) % len(_ANATOMY)],
            "c": _CONDITIONS[i % n_c], "c2": _CONDITIONS[(i * 7 + 4) % n_c], "c3": _CONDITIONS[(i * 13 + 9) % n_c],
        }
        lines.append(_QUESTIONS[i % len(_QUESTIONS)].format(**slots))
        lines.append(_ANSWERS[(i * 7) % len(_ANSWERS)].format(**slots))
        if i % 2 == 0:
            lines.append(_REPORT[(i // 2) % len(_REPORT)].format(**slots))
    return lines


# ---- training --------------------------------------------------------------------------

def train_sentencepiece(out_dir: PathLike, vocab_size: int) -> Path:
    """Train a Llama-style SentencePiece BPE model on the built-in corpus; write tokenizer.model.

    Same settings as Llama/TinyLlama's tokenizer.model: <unk>=0, <s>=1, </s>=2, no pad, byte
    fallback (any text encodes), dummy prefix, identity normalisation, no whitespace collapsing,
    digits split. Single-threaded and fed from memory, so the file is the same on every run.
    """
    import sentencepiece as spm

    lines = medical_corpus()
    n_chars = len(set("".join(lines)))
    minimum = 3 + 256 + n_chars  # specials + byte pieces + one piece per corpus character
    if vocab_size < minimum:
        raise ValueError("vocab_size %d is too small for a byte-fallback tokenizer on this corpus "
                         "(at least %d)" % (vocab_size, minimum))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    buf = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(lines), model_writer=buf, model_type="bpe", vocab_size=vocab_size,
            character_coverage=1.0, byte_fallback=True, unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
            unk_piece="<unk>", bos_piece="<s>", eos_piece="</s>", add_dummy_prefix=True,
            remove_extra_whitespaces=False, normalization_rule_name="identity", split_digits=True,
            allow_whitespace_only_pieces=True, num_threads=1, minloglevel=2,
        )
    except RuntimeError as e:
        raise ValueError("SentencePiece could not train a %d-piece model on the built-in corpus (%s); "
                         "choose a smaller vocab_size" % (vocab_size, e)) from None
    path = out / "tokenizer.model"
    path.write_bytes(buf.getvalue())
    return path


def train_bpe(out_dir: PathLike, vocab_size: int) -> Path:
    """Train a GPT-2 style byte-level BPE (as Phi-2 uses) on the built-in corpus.

    Writes tokenizer.json plus vocab.json / merges.txt. "<|endoftext|>" is the only special token
    (id 0 here; 50256 in Phi-2) and, as in Phi-2, nothing is added around encoded text.
    """
    base = 256 + 1  # byte alphabet + <|endoftext|>
    if vocab_size <= base:
        raise ValueError("vocab_size %d is too small for a byte-level BPE (more than %d needed)" % (vocab_size, base))
    tok = byte_level(models.BPE())
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, min_frequency=1, special_tokens=[ENDOFTEXT],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    tok.train_from_iterator(medical_corpus(), trainer=trainer)
    if tok.get_vocab_size() != vocab_size:
        raise ValueError("the built-in corpus yields only %d byte-level BPE tokens, not %d; "
                         "choose a smaller vocab_size" % (tok.get_vocab_size(), vocab_size))
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    tok.model.save(str(out))  # vocab.json + merges.txt, the files GPT2Tokenizer reads
    path = out / "tokenizer.json"
    tok.save(str(path))
    return path


__all__ = ["ENDOFTEXT", "medical_corpus", "train_bpe", "train_sentencepiece"]
