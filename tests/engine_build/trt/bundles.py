"""Bundle directories for the TensorRT build tests, written without torch or onnx (the Python 3.8 run).

The graph files hold placeholder bytes: the fake TensorRT parser does not read them; what the
build code reads is the manifest (shapes, precision, FP32 pins) and the files' hashes.
"""
from __future__ import annotations

from pathlib import Path
from typing import Dict, List, Optional

from models.config import preset
from server.runtime.bundle import GraphSpec, Manifest, TensorSpec, write_manifest

L, KVH, M, D, H, V, N = 2, 2, 64, 16, 64, 320, 16


def write_bundle(d: Path, precision: str = "float32", pins: Optional[Dict[str, List[str]]] = None,
                 graph_bytes: bytes = b"graph") -> Path:
    d.mkdir(parents=True, exist_ok=True)
    for f in ("vision.onnx", "decoder.onnx", "embed_tokens.npy", "tokenizer.json"):
        (d / f).write_bytes(graph_bytes + f.encode())
    dt = "float16" if precision == "float16" else "float32"
    kv = [L, 1, KVH, M, D]
    new_kv = [L, 1, KVH, "new_tokens", D]
    manifest = Manifest(
        model=preset("tiny"), template="vicuna_v1", precision=precision, opset=16, max_context=M,
        graphs={
            "vision": GraphSpec("vision.onnx", [TensorSpec("pixel_values", [1, 3, 32, 32], dt)],
                                [TensorSpec("image_embeds", [1, N, H], dt)]),
            "decoder": GraphSpec("decoder.onnx", [
                TensorSpec("inputs_embeds", [1, "new_tokens", H], dt), TensorSpec("position_ids", [1, "new_tokens"], "int64"),
                TensorSpec("past_key", kv, dt), TensorSpec("past_value", kv, dt),
                TensorSpec("past_mask", [1, M], "int64")],
                [TensorSpec("logits", [1, V], "float32"), TensorSpec("new_key", new_kv, dt),
                 TensorSpec("new_value", new_kv, dt)]),
        },
        embeddings=TensorSpec("embed_tokens.npy", [V, H], dt),
        tokenizer={"file": "tokenizer.json", "bos_token_id": 1, "eos_token_id": 2},
    )
    if pins is not None:
        manifest.quantization = {"precision": precision, "graphs": {
            g: {"precision": precision, "fp32_nodes": p} for g, p in pins.items()}}
    write_manifest(d, manifest)
    return d
