"""Tiny ONNX graphs with the bundle's exact I/O (server/runtime/bundle.py), for testing the ORT plumbing.

They are not models: the decoder's logits are inputs_embeds[:, -1] @ W + sum(past_mask), its new
K/V a reshape of inputs_embeds. That is enough to check names, shapes, dtypes, feeding and the
provider logic against a numpy computation of the same formulas.
"""
from __future__ import annotations

from pathlib import Path
from typing import Optional, Tuple

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

OPSET = 17
IR_VERSION = 8  # readable by onnxruntime 1.19 (the Python 3.8 pin) as well as current releases


def _save(nodes, inputs, outputs, inits, path: Path) -> None:
    graph = helper.make_graph(nodes, "stub", inputs, outputs, initializer=inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    model.ir_version = IR_VERSION
    onnx.checker.check_model(model)
    onnx.save(model, str(path))


def decoder_stub(path: Path, layers: int = 2, kv_heads: int = 2, head_dim: int = 4, max_context: int = 16,
                 vocab: int = 32, dtype=np.float32, seed: int = 0, drop_input: Optional[str] = None) -> np.ndarray:
    """Write decoder.onnx; return W [H, V] so a test can compute the expected logits."""
    h = kv_heads * head_dim
    w = np.random.default_rng(seed).normal(size=(h, vocab)).astype(np.float32)
    et = TensorProto.FLOAT16 if dtype == np.float16 else TensorProto.FLOAT
    inputs = [
        helper.make_tensor_value_info("inputs_embeds", et, [1, "S", h]),
        helper.make_tensor_value_info("position_ids", TensorProto.INT64, [1, "S"]),
        helper.make_tensor_value_info("past_key", et, [layers, 1, kv_heads, max_context, head_dim]),
        helper.make_tensor_value_info("past_value", et, [layers, 1, kv_heads, max_context, head_dim]),
        helper.make_tensor_value_info("past_mask", TensorProto.INT64, [1, max_context]),
    ]
    outputs = [
        helper.make_tensor_value_info("logits", TensorProto.FLOAT, [1, vocab]),
        helper.make_tensor_value_info("new_key", et, [layers, 1, kv_heads, "S", head_dim]),
        helper.make_tensor_value_info("new_value", et, [layers, 1, kv_heads, "S", head_dim]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(np.array(-1, np.int64), "last"),
        numpy_helper.from_array(np.array([1, -1, kv_heads, head_dim], np.int64), "kv_shape"),
        numpy_helper.from_array(np.array([0], np.int64), "axis0"),
        numpy_helper.from_array(np.array(2.0, np.float32), "two"),
    ]
    nodes = [
        helper.make_node("Cast", ["inputs_embeds"], ["x"], to=TensorProto.FLOAT),
        helper.make_node("Gather", ["x", "last"], ["x_last"], axis=1),
        helper.make_node("MatMul", ["x_last", "W"], ["mm"]),
        helper.make_node("Cast", ["past_mask"], ["mask_f"], to=TensorProto.FLOAT),
        helper.make_node("ReduceSum", ["mask_f"], ["mask_sum"], keepdims=0),
        helper.make_node("Add", ["mm", "mask_sum"], ["logits"]),
        helper.make_node("Reshape", ["x", "kv_shape"], ["k4"]),
        helper.make_node("Transpose", ["k4"], ["kt"], perm=[0, 2, 1, 3]),
        helper.make_node("Unsqueeze", ["kt", "axis0"], ["k5"]),
        helper.make_node("Concat", ["k5"] * layers, ["key_f"], axis=0),
        helper.make_node("Mul", ["key_f", "two"], ["value_f"]),
        helper.make_node("Cast", ["key_f"], ["new_key"], to=et),
        helper.make_node("Cast", ["value_f"], ["new_value"], to=et),
    ]
    if drop_input:  # a graph that breaks the contract: drop an input and every node that depends on it
        inputs = [i for i in inputs if i.name != drop_input]
        gone = {drop_input}
        kept = []
        for n in nodes:
            if gone.intersection(n.input):
                gone.update(n.output)
            else:
                kept.append(n)
        nodes = kept + [helper.make_node("Identity", ["mm"], [o]) for o in ("logits",) if o in gone]
    _save(nodes, inputs, outputs, inits, path)
    return w


def decoder_reference(w: np.ndarray, embeds: np.ndarray, mask: np.ndarray, layers: int, kv_heads: int,
                      head_dim: int) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
    x = embeds.astype(np.float32)
    logits = x[:, -1] @ w + mask.sum()
    k = x.reshape(1, -1, kv_heads, head_dim).transpose(0, 2, 1, 3)[None].repeat(layers, axis=0)
    return logits, k, k * 2


def vision_stub(path: Path, image_size: int = 8, num_tokens: int = 4, hidden: int = 8, seed: int = 1) -> np.ndarray:
    """Write vision.onnx: pixel_values [1,3,S,S] -> reshape [1,N,3*S*S/N] @ W2 -> image_embeds [1,N,H]."""
    per = 3 * image_size * image_size // num_tokens
    w = np.random.default_rng(seed).normal(size=(per, hidden)).astype(np.float32)
    inputs = [helper.make_tensor_value_info("pixel_values", TensorProto.FLOAT, [1, 3, image_size, image_size])]
    outputs = [helper.make_tensor_value_info("image_embeds", TensorProto.FLOAT, [1, num_tokens, hidden])]
    inits = [numpy_helper.from_array(w, "W2"),
             numpy_helper.from_array(np.array([1, num_tokens, per], np.int64), "shape")]
    nodes = [helper.make_node("Reshape", ["pixel_values", "shape"], ["p"]),
             helper.make_node("MatMul", ["p", "W2"], ["image_embeds"])]
    _save(nodes, inputs, outputs, inits, path)
    return w
