"""FP32 graph -> FP16 graph, keeping in FP32 the nodes where FP16 overflows or loses the answer.

Kept in FP32 (the "pins"; recorded per node in the manifest, and pinned again by the TensorRT build):
- norm reductions: Pow / ReduceMean / ReduceSum / Sqrt / Reciprocal and the Div or Mul that applies
  1/sqrt (a sum of squares of activations above 256 overflows FP16's 65504);
- Softmax (exp of the scores);
- rotary and masks: every float node computed only from the integer inputs (position_ids, past_mask)
  and constants; position * inv_freq above ~2048 needs more than FP16's 11-bit mantissa
  (huggingface/transformers#25681: cached rotary tables go wrong after an fp16 cast);
- for Phi-family decoders also the Q·Kᵀ MatMul (HF Phi: "Phi-2 has an attention overflow issue with
  FP16"; reference/trt_onnx_jetson.md section 3).
The conversion itself is onnxruntime.transformers.float16 with these nodes on its node block list.
"""
from __future__ import annotations

from typing import Dict, List, Sequence, Set

import onnx
from onnx import TensorProto

_NORM_OPS = ("Pow", "ReduceMean", "ReduceSum", "Sqrt", "Reciprocal")
_ALWAYS_FP32_OPS = ("Softmax",)
_INT_TYPES = (TensorProto.INT64, TensorProto.INT32, TensorProto.BOOL)


def _consumers(graph: onnx.GraphProto) -> Dict[str, List[onnx.NodeProto]]:
    out: Dict[str, List[onnx.NodeProto]] = {}
    for n in graph.node:
        for i in n.input:
            out.setdefault(i, []).append(n)
    return out


def _position_nodes(graph: onnx.GraphProto) -> Set[str]:
    """Nodes computed only from integer graph inputs and constants, with at least one such input."""
    derived = {i.name for i in graph.input if i.type.tensor_type.elem_type in _INT_TYPES}
    consts = {t.name for t in graph.initializer}
    names: Set[str] = set()
    for n in graph.node:  # exporter output is topologically sorted
        if n.op_type == "Constant":
            consts.update(n.output)
            continue
        ins = [i for i in n.input if i]
        if ins and all(i in derived or i in consts for i in ins) and any(i in derived for i in ins):
            derived.update(n.output)
            names.add(n.name)
    return names


def _attention_score_matmuls(graph: onnx.GraphProto, consumers: Dict[str, List[onnx.NodeProto]]) -> Set[str]:
    """Activation x activation MatMuls whose output reaches a Softmax within a few elementwise hops (Q·Kᵀ)."""
    weights = {t.name for t in graph.initializer}
    found: Set[str] = set()
    for n in graph.node:
        if n.op_type != "MatMul" or any(i in weights for i in n.input):
            continue
        frontier, hops = list(n.output), 0
        while frontier and hops < 4:
            nxt = []
            for t in frontier:
                for c in consumers.get(t, []):
                    if c.op_type == "Softmax":
                        found.add(n.name)
                    elif c.op_type in ("Add", "Mul", "Div", "Where", "Cast"):
                        nxt.extend(c.output)
            frontier, hops = nxt, hops + 1
    return found


def fp32_nodes(model: onnx.ModelProto, family: str = "llama") -> List[str]:
    """Names of the nodes the FP16 graph keeps in FP32, in graph order."""
    g = model.graph
    consumers = _consumers(g)
    keep: Set[str] = set(_position_nodes(g))
    sqrt_outs: Set[str] = set()
    for n in g.node:
        if n.op_type in _NORM_OPS or n.op_type in _ALWAYS_FP32_OPS:
            keep.add(n.name)
            if n.op_type in ("Sqrt", "Reciprocal"):
                sqrt_outs.update(n.output)
    for n in g.node:  # the Div / Mul that applies 1/sqrt(var + eps)
        if n.op_type in ("Div", "Mul") and any(i in sqrt_outs for i in n.input):
            keep.add(n.name)
    if family == "phi":
        keep |= _attention_score_matmuls(g, consumers)
    # A Constant read only by kept nodes stays FP32 too (inv_freq would otherwise be rounded to FP16).
    for n in g.node:
        if n.op_type == "Constant" and n.output and consumers.get(n.output[0]) and \
                all(c.name in keep for c in consumers[n.output[0]]):
            keep.add(n.name)
    unnamed = [n for n in g.node if not n.name]
    if unnamed:
        raise ValueError("%d nodes have no name; FP32 pins are recorded by node name: re-export the bundle"
                         % len(unnamed))
    return [n.name for n in g.node if n.name in keep]


def convert(model: onnx.ModelProto, keep_fp32: Sequence[str], fp32_io: Sequence[str],
            infer_shapes: bool = True) -> onnx.ModelProto:
    """The FP16 model: `keep_fp32` nodes and `fp32_io` graph inputs/outputs stay FP32 (casts inserted).

    infer_shapes=False: the model already carries inferred value_info (done on its file when > 2 GB)."""
    from onnxruntime.transformers.float16 import DEFAULT_OP_BLOCK_LIST, convert_float_to_float16

    return convert_float_to_float16(model, keep_io_types=list(fp32_io), op_block_list=list(DEFAULT_OP_BLOCK_LIST),
                                    node_block_list=list(keep_fp32), disable_shape_infer=not infer_shapes)
