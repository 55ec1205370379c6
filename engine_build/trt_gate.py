"""Static TensorRT 8.5 gate for ONNX graphs.

TensorRT 8.5 (JetPack 5.1, the last for Jetson Xavier) builds our engines on the device, where we cannot run it
from here; so every exported graph is checked against the onnx-tensorrt 8.5-GA operator matrix and our own export
rules before it ships. A failing graph is reported, never raised: the exporter fails with the report, a CLI prints it.
"""
from __future__ import annotations

import functools
import json
import os
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, Iterable, Iterator, List, Optional, Tuple, Union

import onnx
from onnx import numpy_helper

MATRIX_PATH = Path(__file__).parent / "data" / "trt85_onnx_ops.json"
# onnx-tensorrt tag 8.5-GA docs/operators.md: "TensorRT 8.5 supports operators up to Opset 17".
TRT85_MAX_OPSET = 17
_DEFAULT_DOMAINS = ("", "ai.onnx")
# The 8.5 parser supports these, but our rule is no If-merged decoders and no loops: one static graph per phase.
_CONTROL_FLOW = ("If", "Loop", "Scan")
_QDQ = ("QuantizeLinear", "DequantizeLinear")


@dataclass
class GateReport:
    """What one graph uses (op -> node count, subgraphs and functions included) and why TensorRT 8.5 would reject it."""

    source: str
    opset: int
    ops: Dict[str, int] = field(default_factory=dict)
    violations: List[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.violations

    def format(self) -> str:
        verdict = "PASS" if self.ok else "FAIL (%d violations)" % len(self.violations)
        lines = ["TensorRT 8.5 gate: %s: %s, opset %d, %d nodes" % (self.source, verdict, self.opset, sum(self.ops.values()))]
        lines += ["  - " + v for v in self.violations]
        lines.append("  ops: " + ", ".join("%s x%d" % (op, n) for op, n in sorted(self.ops.items())))
        return "\n".join(lines)


@functools.lru_cache(maxsize=None)
def load_matrix() -> Dict[str, Any]:
    """The onnx-tensorrt 8.5-GA operator matrix: {"source", "max_opset", "ops": {op: {supported, types, restrictions}}}."""
    with open(MATRIX_PATH, encoding="utf-8") as f:
        return json.load(f)


def check_graph(model_or_path: Union[onnx.ModelProto, str, "os.PathLike[str]"], max_opset: int = TRT85_MAX_OPSET) -> GateReport:
    """Check one ONNX model (a ModelProto or a path; external weights are never read) against TensorRT 8.5."""
    if isinstance(model_or_path, onnx.ModelProto):
        model, source = model_or_path, model_or_path.graph.name or "<model>"
    else:
        # External data holds only weights; the graph, its small constants and the zero-points stay in the .onnx file.
        model, source = onnx.load(os.fspath(model_or_path), load_external_data=False), os.fspath(model_or_path)
    matrix_ops = load_matrix()["ops"]
    opset = _default_opset(model.opset_import)
    violations = _opset_violations(opset, "model", max_opset)
    ops: Counter = Counter()
    walks = [_walk(model.graph.node, model.graph.initializer, "graph '%s'" % model.graph.name, {})]
    for fn in model.functions:
        violations += _opset_violations(_default_opset(fn.opset_import), "function %s::%s" % (fn.domain, fn.name), max_opset)
        walks.append(_walk(fn.node, [], "function %s::%s" % (fn.domain, fn.name), {}))
    for walk in walks:
        for node, where, consts in walk:
            default = node.domain in _DEFAULT_DOMAINS
            ops[node.op_type if default else "%s::%s" % (node.domain, node.op_type)] += 1
            for why in _node_violations(node, consts, matrix_ops):
                violations.append("%s (%s): %s" % (node.op_type, where, why))
    return GateReport(source=source, opset=opset or 0, ops=dict(ops), violations=violations)


def check_bundle(bundle_dir: Union[str, "os.PathLike[str]"], max_opset: int = TRT85_MAX_OPSET) -> Dict[str, GateReport]:
    """Check every *.onnx below bundle_dir; keys are paths relative to it, in sorted order."""
    root = Path(bundle_dir)
    paths = sorted(root.rglob("*.onnx"))
    if not paths:
        raise FileNotFoundError("no *.onnx files under %s: export the bundle first (or point at its directory)" % root)
    return {p.relative_to(root).as_posix(): check_graph(p, max_opset) for p in paths}


def _default_opset(imports: Iterable[onnx.OperatorSetIdProto]) -> Optional[int]:
    return next((imp.version for imp in imports if imp.domain in _DEFAULT_DOMAINS), None)


def _opset_violations(opset: Optional[int], what: str, max_opset: int) -> List[str]:
    if opset is None:
        return ["%s imports no default-domain opset: re-export with opset_version <= %d" % (what, max_opset)]
    if opset > max_opset:
        return ["%s uses default-domain opset %d > %d: TensorRT 8.5 parses ONNX up to opset %d; export with opset 16"
                % (what, opset, max_opset, max_opset)]
    return []


Walked = Iterator[Tuple[onnx.NodeProto, str, Dict[str, onnx.TensorProto]]]


def _walk(nodes: Iterable[onnx.NodeProto], initializers: Iterable[onnx.TensorProto], scope: str,
          outer: Dict[str, onnx.TensorProto]) -> Walked:
    """Yield (node, where, visible constants) for every node, descending into subgraph attributes (If/Loop/Scan)."""
    nodes = list(nodes)
    consts = dict(outer)  # subgraphs see the outer scope's initializers and constants
    consts.update((t.name, t) for t in initializers)
    for node in nodes:
        if node.op_type == "Constant" and node.domain in _DEFAULT_DOMAINS:
            consts.update((node.output[0], a.t) for a in node.attribute if a.name == "value")
    for i, node in enumerate(nodes):
        name = "'%s'" % node.name if node.name else "#%d" % i
        yield node, "node %s in %s" % (name, scope), consts
        for attr in node.attribute:
            subgraphs = [attr.g] if attr.type == onnx.AttributeProto.GRAPH else list(attr.graphs)
            for sub in subgraphs:
                yield from _walk(sub.node, sub.initializer, "%s > %s %s.%s" % (scope, node.op_type, name, attr.name), consts)


def _node_violations(node: onnx.NodeProto, consts: Dict[str, onnx.TensorProto], matrix_ops: Dict[str, Any]) -> List[str]:
    op = node.op_type
    if node.domain not in _DEFAULT_DOMAINS:
        return ["node in domain '%s' (ORT contrib, ai.onnx.ml or custom op): TensorRT 8.5 parses only the default "
                "ONNX domain; export without ORT fusions or custom ops" % node.domain]
    if op.startswith(("Sequence", "Optional")) or op.endswith(("FromSequence", "ToSequence")):
        return ["Sequence/Optional ops are not allowed (TensorRT has no sequence or optional values); "
                "use Split/Concat/Expand instead (e.g. repeat_interleave -> expand + reshape)"]
    if op in _CONTROL_FLOW:
        return ["control flow (If/Loop/Scan) is not allowed in our graphs: export one static graph per phase, "
                "no If-merged decoders"]
    entry = matrix_ops.get(op)
    if entry is None:
        return ["not in the TensorRT 8.5 operator matrix (onnx-tensorrt 8.5-GA)"]
    if not entry["supported"]:
        hint = "; export with opset 16 so it is decomposed" if op == "LayerNormalization" else ""
        return ["not supported by TensorRT 8.5 (onnx-tensorrt 8.5-GA operator matrix)" + hint]
    return _qdq_violations(node, consts) if op in _QDQ else []


def _qdq_violations(node: onnx.NodeProto, consts: Dict[str, onnx.TensorProto]) -> List[str]:
    # onnx-tensorrt 8.5 QuantDequantLinearHelper asserts 3 inputs and shiftIsAllZeros(zeroPoint); 8.5 quantizes to INT8.
    if len(node.input) < 3 or not node.input[2]:
        return ["no zero-point input: TensorRT 8.5 needs a constant INT8 zero-point of 0 "
                "(without one ONNX quantizes to UINT8)"]
    zp = consts.get(node.input[2])
    if zp is None:
        return ["zero-point '%s' is not a constant: TensorRT 8.5 needs a constant INT8 zero-point of 0" % node.input[2]]
    if zp.data_type != onnx.TensorProto.INT8:
        return ["zero-point '%s' is %s: TensorRT 8.5 quantizes to INT8 only (use QInt8, symmetric)"
                % (node.input[2], onnx.TensorProto.DataType.Name(zp.data_type))]
    if zp.data_location == onnx.TensorProto.EXTERNAL:
        return ["zero-point '%s' is stored as external data: cannot verify it is 0; keep it inline" % node.input[2]]
    if numpy_helper.to_array(zp).any():
        return ["zero-point '%s' is non-zero: TensorRT 8.5 supports symmetric quantization only "
                "(zero-point 0; ActivationSymmetric=True)" % node.input[2]]
    return []
