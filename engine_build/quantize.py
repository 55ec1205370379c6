"""FP32 bundle -> FP16, TensorRT INT8 (explicit QDQ) or CPU INT8 (dynamic W8A8) bundle.

- fp16: onnxruntime.transformers.float16 with the FP32 pins of engine_build/fp16.py; the embedding
  table and KV cache become FP16; logits stay FP32 (the bundle contract).
- int8: onnxruntime.quantization.quantize_static, QDQ format, QInt8 activations and weights, symmetric
  (zero point 0: TensorRT 8.5 rejects any other), per-channel weights, only MatMul/Gemm/Conv with a
  constant weight (activation x activation MatMuls stay float), calibrated on inputs recorded from
  this bundle's own runtime (engine_build/calibration.py). The graph I/O stays FP32.
- int8-cpu: quantize_dynamic (MatMulInteger with per-call activation scales), for ORT CPU. TensorRT
  cannot parse it: the TensorRT gate refuses it and the manifest marks it CPU-only.
Each output bundle passes `load_manifest`; fp16/int8 ones also pass the TensorRT 8.5 gate.
"""
from __future__ import annotations

import dataclasses
import fnmatch
import logging
import shutil
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence

import numpy as np
import onnx
from tqdm import tqdm

from server.runtime import bundle as B

log = logging.getLogger(__name__)

PRECISIONS = {"fp16": "float16", "int8": "int8", "int8-cpu": "int8-cpu"}
QUANT_OPS = ("MatMul", "Gemm", "Conv")
# ORT's histogram calibrators (percentile, entropy) need every sample in one shape; prefill and decode
# steps differ in S, so ranges come from min/max.
CALIBRATION_METHODS = ("minmax",)
# Kept float unless --no-default-exclude: the first decoder block and lm_head (reference/trt_onnx_jetson.md
# section 4: "exclude lm_head, embeddings and sensitive first/last blocks"). Measured on the random tiny
# presets (docs/benchmarks.md): with them quantized TensorRT INT8 top-1 is 89-96 %, without 95-98 %.
DEFAULT_EXCLUDE = ("/language_model/layers.0/*", "/lm_head/*")


class QuantizeError(Exception):
    """The bundle cannot be quantized as asked."""


@dataclass
class QuantizeOptions:
    precision: str  # a key of PRECISIONS
    graphs: Sequence[str] = ("vision", "decoder")  # the others are copied unchanged (FP32)
    # fnmatch patterns over node names kept float; None: DEFAULT_EXCLUDE for int8 / int8-cpu, none for fp16
    exclude: Optional[Sequence[str]] = None
    calibration: Optional[Path] = None  # a directory of PNG/JPEG images; None: the built-in probe set
    calibrate_method: str = "minmax"
    decode_steps: int = 8  # decode steps recorded per calibration probe (besides the prefill chunks)
    # ORT keeps every sample's intermediate tensors until it computes ranges (its CalibMaxIntermediateOutputs
    # drops the collected data in onnxruntime 1.32 instead of merging it), so memory bounds this count.
    max_decoder_samples: int = 128
    smooth_quant: bool = False  # SmoothQuant (ORT's, needs neural-compressor) before int8


def _load(path: Path) -> onnx.ModelProto:
    return onnx.load(str(path), load_external_data=True)


def _weights_bytes(model: onnx.ModelProto) -> int:
    # ModelProto.ByteSize() itself fails above protobuf's 2 GB limit, so count the weights
    return sum(len(t.raw_data) for t in model.graph.initializer)


def _big(src: Path) -> bool:
    """The graph and its external data together pass 1 GB: quantizers must write external data."""
    return sum(p.stat().st_size for p in src.parent.glob(src.name + "*")) >= (1 << 30)


def _save(model: onnx.ModelProto, path: Path) -> Optional[str]:
    """Save inline, or with one external-data file when the protobuf would pass 2 GB."""
    if _weights_bytes(model) < (1 << 30):
        onnx.save_model(model, str(path))
        return None
    data = path.name + ".data"
    onnx.save_model(model, str(path), save_as_external_data=True, all_tensors_to_one_file=True, location=data,
                    size_threshold=1024)
    (path.parent / data).chmod(0o644)
    return data


def _excluded(names: Sequence[str], patterns: Sequence[str]) -> List[str]:
    return [n for n in names if any(fnmatch.fnmatchcase(n, p) for p in patterns)]


def _weight_nodes(model: onnx.ModelProto) -> List[str]:
    """MatMul/Gemm/Conv nodes whose second input is a constant weight."""
    inits = {t.name for t in model.graph.initializer}
    return [n.name for n in model.graph.node if n.op_type in QUANT_OPS and len(n.input) > 1 and n.input[1] in inits]


def _fp16_graph(src: Path, dst: Path, name: str, family: str, opts: QuantizeOptions) -> Dict[str, Any]:
    from engine_build import fp16

    big = _big(src)
    if big:  # onnx's in-memory shape inference refuses > 2 GB protos; the path-based one does not
        with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
            inferred = Path(tmp) / src.name
            onnx.shape_inference.infer_shapes_path(str(src), str(inferred))
            model = onnx.load(str(inferred), load_external_data=False)
            onnx.load_external_data_for_model(model, str(src.parent))
    else:
        model = _load(src)
    names = [n.name for n in model.graph.node]
    keep = fp16.fp32_nodes(model, family)
    excluded = _excluded(names, opts.exclude)
    keep = [n for n in names if n in set(keep) | set(excluded)]
    fp32_io = ["logits"] if name == "decoder" else []
    converted = fp16.convert(model, keep, fp32_io, infer_shapes=not big)
    data = _save(converted, dst)
    return {"precision": "float16", "fp32_nodes": keep, "excluded": excluded, "external_data": data}


def _int8_graph(src: Path, dst: Path, name: str, calib_dir: Path, opts: QuantizeOptions) -> Dict[str, Any]:
    from onnxruntime.quantization import CalibrationMethod, QuantFormat, QuantType, quantize_static

    from engine_build.calibration import NpzReader

    model = onnx.load(str(src), load_external_data=False)  # names only; the quantizer reads the file
    candidates = _weight_nodes(model)
    excluded = _excluded(candidates, opts.exclude)
    nodes = [n for n in candidates if n not in excluded]
    inputs = [i.name for i in model.graph.input]
    del model
    reader = NpzReader(calib_dir / name, inputs)
    if not reader.files:
        raise QuantizeError("no calibration samples were recorded for the %s graph" % name)
    method = {"minmax": CalibrationMethod.MinMax}[opts.calibrate_method]
    extra = {"ActivationSymmetric": True, "WeightSymmetric": True, "MatMulConstBOnly": True,
             "QuantizeBias": False, "SmoothQuant": opts.smooth_quant}  # TRT 8.5: no INT32 bias QDQ
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        raw = Path(tmp) / dst.name
        big = _big(src)
        quantize_static(str(src), str(raw), reader, quant_format=QuantFormat.QDQ, op_types_to_quantize=list(QUANT_OPS),
                        per_channel=True, activation_type=QuantType.QInt8, weight_type=QuantType.QInt8,
                        nodes_to_quantize=nodes, calibrate_method=method, use_external_data_format=big,
                        extra_options=extra)
        data = _save(_load(raw), dst)
    return {"precision": "int8", "quantized_nodes": nodes, "excluded": excluded, "fp32_nodes": [],
            "calibrate_method": opts.calibrate_method, "external_data": data}


def _int8_cpu_graph(src: Path, dst: Path, opts: QuantizeOptions) -> Dict[str, Any]:
    from onnxruntime.quantization import QuantType, quantize_dynamic

    model = onnx.load(str(src), load_external_data=False)  # names only; the quantizer reads the file
    conv = {n.name for n in model.graph.node if n.op_type == "Conv"}  # the patch embedding: stays FP32
    candidates = [n for n in _weight_nodes(model) if n not in conv]
    excluded = _excluded(candidates, opts.exclude)
    nodes = [n for n in candidates if n not in excluded]
    del model
    with tempfile.TemporaryDirectory(dir=dst.parent) as tmp:
        raw = Path(tmp) / dst.name
        quantize_dynamic(str(src), str(raw), op_types_to_quantize=["MatMul", "Gemm"], per_channel=True,
                         weight_type=QuantType.QInt8, nodes_to_quantize=nodes, use_external_data_format=_big(src),
                         extra_options={"MatMulConstBOnly": True})
        data = _save(_load(raw), dst)
    return {"precision": "int8-cpu", "quantized_nodes": nodes, "excluded": excluded, "fp32_nodes": [],
            "external_data": data}


def _tool_versions() -> Dict[str, str]:
    import onnxruntime

    return {"onnx": onnx.__version__, "onnxruntime": onnxruntime.__version__, "tinyllava-med": B.package_version()}


def quantize_bundle(bundle: str, out: str, options: QuantizeOptions) -> Path:
    """Write the quantized bundle to `out` (new or empty); returns its path."""
    from engine_build.trt_gate import check_graph

    if options.precision not in PRECISIONS:
        raise QuantizeError("precision %r is not one of %s" % (options.precision, ", ".join(PRECISIONS)))
    if options.calibrate_method not in CALIBRATION_METHODS:
        raise QuantizeError("calibration method %r is not one of %s"
                            % (options.calibrate_method, ", ".join(CALIBRATION_METHODS)))
    if options.exclude is None:
        options = dataclasses.replace(options, exclude=() if options.precision == "fp16" else DEFAULT_EXCLUDE)
    src, out_dir = Path(bundle), Path(out)
    manifest = B.load_manifest(src)
    if manifest.precision != "float32":
        raise QuantizeError("%s is a %s bundle: quantize from the FP32 bundle that `tinyllava-med export` writes"
                            % (src, manifest.precision))
    unknown = sorted(set(options.graphs) - set(manifest.graphs))
    if unknown or not options.graphs:
        raise QuantizeError("graphs %s: choose from %s" % (unknown or "none", sorted(manifest.graphs)))
    if out_dir.exists() and any(out_dir.iterdir()):
        raise QuantizeError("%s exists and is not empty: choose a new output directory" % out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    precision = PRECISIONS[options.precision]
    selected = [g for g in manifest.graphs if g in options.graphs]
    steps = tqdm(total=len(manifest.graphs) + 2, desc="quantize %s" % options.precision, unit="step", disable=None)
    records: Dict[str, Dict[str, Any]] = {}
    calibration: Dict[str, Any] = {}
    with tempfile.TemporaryDirectory(prefix="calib-", dir=out_dir.parent) as calib:
        if precision == "int8":
            from engine_build.calibration import record

            steps.set_postfix_str("calibration")
            calibration = record(src, Path(calib), options.calibration, options.decode_steps,
                                 options.max_decoder_samples)
        steps.update()
        for name, spec in manifest.graphs.items():
            steps.set_postfix_str(name)
            s, d = src / spec.file, out_dir / spec.file
            if name not in selected:
                shutil.copy2(s, d)
                if spec.external_data:
                    shutil.copy2(src / spec.external_data, out_dir / spec.external_data)
                records[name] = {"precision": "float32", "fp32_nodes": [], "excluded": [], "external_data":
                                 spec.external_data}
            elif precision == "float16":
                records[name] = _fp16_graph(s, d, name, manifest.model.text.family, options)
            elif precision == "int8":
                records[name] = _int8_graph(s, d, name, Path(calib), options)
            else:
                records[name] = _int8_cpu_graph(s, d, options)
            spec.external_data = records[name].pop("external_data")
            steps.update()

    steps.set_postfix_str("manifest")
    shutil.copy2(src / manifest.tokenizer["file"], out_dir / manifest.tokenizer["file"])
    table = np.load(str(src / manifest.embeddings.name), mmap_mode="r")
    fp16_decoder = precision == "float16" and "decoder" in selected
    if fp16_decoder:
        np.save(out_dir / manifest.embeddings.name, np.asarray(table, dtype=np.float16))
        manifest.embeddings.dtype = "float16"
        for t in manifest.graphs["decoder"].inputs + manifest.graphs["decoder"].outputs:
            if t.dtype == "float32" and t.name != "logits":
                t.dtype = "float16"
    else:
        shutil.copy2(src / manifest.embeddings.name, out_dir / manifest.embeddings.name)
    if precision == "float16" and "vision" in selected:
        for t in manifest.graphs["vision"].inputs + manifest.graphs["vision"].outputs:
            t.dtype = "float16" if t.dtype == "float32" else t.dtype
    if precision != "int8-cpu":
        for name in selected:
            report = check_graph(out_dir / manifest.graphs[name].file)
            if not report.ok:
                raise QuantizeError("the %s %s graph fails the TensorRT 8.5 gate:\n%s"
                                    % (options.precision, name, report.format()))
    manifest.quantization = {
        "precision": precision, "source_bundle_sha256": B.bundle_hash(manifest), "source": src.name,
        "cpu_only": precision in B.CPU_ONLY_PRECISIONS, "graphs": records, "exclude": list(options.exclude),
        "calibration": calibration, "tools": _tool_versions(),
    }
    manifest.precision = precision
    manifest.tools = dict(manifest.tools, **{"quantize-" + k: v for k, v in _tool_versions().items()})
    manifest.engines = {}
    manifest.schema_version = B.SCHEMA_VERSION
    B.write_manifest(out_dir, manifest)
    steps.update()
    steps.close()
    return out_dir
