"""Checkpoint -> ONNX bundle (vision graph, decoder graph, embedding table, tokenizer, manifest)."""
from __future__ import annotations

import logging
import os
import shutil
import tempfile
import warnings
from pathlib import Path
from typing import Dict, List, Optional

import numpy as np
import onnx
import torch
from tqdm import tqdm

from engine_build.graphs import DecoderGraph, VisionGraph, decompose_layernorms
from server.runtime import bundle as B

log = logging.getLogger(__name__)

DEFAULT_OPSET = 16  # TensorRT 8.5 parses up to 17 but has no LayerNormalization: 16 decomposes it
DTYPES = {"float32": torch.float32, "float16": torch.float16}
# ONNX protobuf files are capped at 2 GB; above this the weights go to one external-data file.
EXTERNAL_DATA_THRESHOLD = 1 << 30


class ExportError(Exception):
    """The checkpoint cannot be exported as asked (options out of range, graph fails the TensorRT gate)."""


def _spec(name: str, shape: List[object], dtype: str) -> B.TensorSpec:
    return B.TensorSpec(name=name, shape=list(shape), dtype=dtype)


def _export(module: torch.nn.Module, args: tuple, path: Path, inputs: List[B.TensorSpec],
            outputs: List[B.TensorSpec], opset: int) -> Optional[str]:
    """torch.onnx.export (TorchScript exporter: capped at opset 17, emits no contrib ops), then
    re-save with all weights in one external-data file when the graph is large."""
    dynamic_axes: Dict[str, Dict[int, str]] = {}
    for t in inputs + outputs:
        axes = {i: d for i, d in enumerate(t.shape) if isinstance(d, str)}
        if axes:
            dynamic_axes[t.name] = axes
    with tempfile.TemporaryDirectory(dir=path.parent) as tmp:
        raw = Path(tmp) / path.name
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*legacy TorchScript-based ONNX export.*")
            warnings.filterwarnings("ignore", category=torch.jit.TracerWarning)
            warnings.filterwarnings("ignore", category=DeprecationWarning)
            torch.onnx.export(
                module, args, str(raw), dynamo=False, opset_version=opset, do_constant_folding=True,
                input_names=[t.name for t in inputs], output_names=[t.name for t in outputs],
                dynamic_axes=dynamic_axes,
            )
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
        if size <= EXTERNAL_DATA_THRESHOLD:
            shutil.move(str(raw), str(path))
            return None
        model = onnx.load(str(raw), load_external_data=True)
        data_name = path.name + ".data"
        onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True,
                        location=data_name, size_threshold=1024)
        # onnx writes the data file 0600; a service running as another user must be able to read it
        os.chmod(path.parent / data_name, 0o644)
        return data_name


def export_bundle(checkpoint: str, out: str, opset: int = DEFAULT_OPSET, max_context: Optional[int] = None,
                  dtype: str = "float32", template: Optional[str] = None) -> Path:
    """Export a checkpoint (any supported layout) to a bundle directory; returns its path."""
    from engine_build.trt_gate import check_graph
    from models.checkpoint.reader import model_from_checkpoint, read_checkpoint
    from models.processor import TextTokenizer
    from models.processor.templates import get_template

    if opset not in (16, 17):
        raise ExportError("opset %d is not supported: TensorRT 8.5 parses up to 17 and has no LayerNormalization "
                          "(use 16, the default, or 17)" % opset)
    if dtype not in DTYPES:
        raise ExportError("dtype %r is not supported (float32 or float16)" % dtype)
    out_dir = Path(out)
    if out_dir.exists() and any(out_dir.iterdir()):
        raise ExportError("%s exists and is not empty: choose a new output directory" % out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)

    steps = tqdm(total=6, desc="export", unit="step", disable=None)
    steps.set_postfix_str("load checkpoint")
    ckpt = read_checkpoint(checkpoint, DTYPES[dtype])
    model, cfg = model_from_checkpoint(ckpt)
    layout = ckpt.layout
    decompose_layernorms(model)  # no LayerNormalization at any opset: TensorRT 8.5 cannot parse it
    if template:
        cfg = cfg.replace(template=template)
    stop = get_template(cfg.template).stop_str
    t = cfg.text
    limit = t.max_position_embeddings
    max_context = max_context or limit
    if not cfg.num_image_tokens + 2 <= max_context <= limit:
        raise ExportError("--max-context %d outside [%d, %d]: it must hold the %d image tokens and fit the model's "
                          "%d positions" % (max_context, cfg.num_image_tokens + 2, limit, cfg.num_image_tokens, limit))
    steps.update()

    steps.set_postfix_str("vision graph")
    size = cfg.vision.image_size
    vision_in = [_spec("pixel_values", [1, 3, size, size], dtype)]
    vision_out = [_spec("image_embeds", [1, cfg.num_image_tokens, t.hidden_size], dtype)]
    pixels = torch.zeros(1, 3, size, size, dtype=DTYPES[dtype])
    with torch.no_grad():
        vision_data = _export(VisionGraph(model), (pixels,), out_dir / B.VISION_FILE, vision_in, vision_out, opset)
    steps.update()

    steps.set_postfix_str("decoder graph")
    # The cache length is static (TensorRT gets one fixed profile for it); only S is dynamic.
    kv_shape: List[object] = [t.num_layers, 1, t.num_kv_heads, max_context, t.head_dim]
    new_kv: List[object] = [t.num_layers, 1, t.num_kv_heads, "new_tokens", t.head_dim]
    dec_in = [
        _spec("inputs_embeds", [1, "new_tokens", t.hidden_size], dtype),
        _spec("position_ids", [1, "new_tokens"], "int64"),
        _spec("past_key", kv_shape, dtype),
        _spec("past_value", kv_shape, dtype),
        _spec("past_mask", [1, max_context], "int64"),
    ]
    dec_out = [_spec("logits", [1, t.vocab_size], "float32"), _spec("new_key", new_kv, dtype),
               _spec("new_value", new_kv, dtype)]
    # Trace with S=3 new tokens: a size that differs from every static dimension, so the tracer
    # cannot fold the dynamic axis into a constant by coincidence.
    s, m = 3, max_context
    past_mask = torch.zeros(1, m, dtype=torch.long)
    past_mask[0, :2] = 1
    example = (
        torch.zeros(1, s, t.hidden_size, dtype=DTYPES[dtype]),
        torch.arange(s, dtype=torch.long)[None] + 2,
        torch.zeros(t.num_layers, 1, t.num_kv_heads, m, t.head_dim, dtype=DTYPES[dtype]),
        torch.zeros(t.num_layers, 1, t.num_kv_heads, m, t.head_dim, dtype=DTYPES[dtype]),
        past_mask,
    )
    with torch.no_grad():
        decoder_data = _export(DecoderGraph(model), example, out_dir / B.DECODER_FILE, dec_in, dec_out, opset)
    steps.update()

    steps.set_postfix_str("embeddings + tokenizer")
    table = model.language_model.embed_tokens.weight.detach().cpu().numpy()
    np.save(out_dir / B.EMBEDDINGS_FILE, table)
    backend = ckpt.load_tokenizer()
    backend.save(str(out_dir / B.TOKENIZER_FILE))
    tok = TextTokenizer(backend, eos_token=stop)
    del model, ckpt
    steps.update()

    steps.set_postfix_str("TensorRT 8.5 gate")
    for name in (B.VISION_FILE, B.DECODER_FILE):
        report = check_graph(out_dir / name)
        if not report.ok:
            raise ExportError("%s fails the TensorRT 8.5 gate:\n%s" % (name, report.format()))
    steps.update()

    steps.set_postfix_str("manifest")
    manifest = B.Manifest(
        model=cfg, template=cfg.template, precision=dtype, opset=opset, max_context=max_context,
        graphs={
            "vision": B.GraphSpec(B.VISION_FILE, vision_in, vision_out, vision_data),
            "decoder": B.GraphSpec(B.DECODER_FILE, dec_in, dec_out, decoder_data),
        },
        embeddings=_spec(B.EMBEDDINGS_FILE, list(table.shape), str(table.dtype)),
        tokenizer={"file": B.TOKENIZER_FILE, "bos_token_id": tok.bos_id, "eos_token_id": tok.eos_id,
                   "eos_token": tok.eos_token},
        tools={"torch": torch.__version__, "onnx": onnx.__version__, "tinyllava-med": B.package_version()},
        source={"checkpoint_layout": layout, "checkpoint": Path(checkpoint).name},
    )
    B.write_manifest(out_dir, manifest)
    steps.update()
    steps.close()
    return out_dir

