"""The ONNX Runtime engine: the bundle's graphs on CPU (default), CUDA or TensorRT execution providers.

An accelerated provider is used only when this onnxruntime build lists it AND a session with it
actually runs: ORT can register a provider whose libraries then fail to load (it logs and quietly
runs on CPU), and TensorRT can fail to build a graph, so every session is proven by a warm-up run.
A provider that fails is dropped with a warning and the next one in the list is tried.
"""
from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as _ort_state

from server.runtime.bundle import DECODER_INPUTS, DECODER_OUTPUTS, VISION_INPUTS, VISION_OUTPUTS
from server.runtime.cpu_info import physical_cores
from server.runtime.engine import Engine, EngineDims
from server.runtime.errors import EngineError

log = logging.getLogger(__name__)

CPU = "CPUExecutionProvider"
CUDA = "CUDAExecutionProvider"
TENSORRT = "TensorrtExecutionProvider"
PROVIDER_ALIASES = {"cpu": CPU, "cuda": CUDA, "tensorrt": TENSORRT, "trt": TENSORRT}

_GRAPH_OPT_LEVELS = {
    "disable": ort.GraphOptimizationLevel.ORT_DISABLE_ALL,
    "basic": ort.GraphOptimizationLevel.ORT_ENABLE_BASIC,
    "extended": ort.GraphOptimizationLevel.ORT_ENABLE_EXTENDED,
    "all": ort.GraphOptimizationLevel.ORT_ENABLE_ALL,
}
# onnxruntime raises its own exception types (all plain Exception subclasses) from the C++ side.
_ORT_ERRORS: Tuple[type, ...] = tuple(
    getattr(_ort_state, n) for n in (
        "EPFail", "EngineError", "Fail", "InvalidArgument", "InvalidGraph", "InvalidProtobuf", "NoModel",
        "NoSuchFile", "NotImplemented", "RuntimeException")
    if hasattr(_ort_state, n)) + (RuntimeError, ValueError)
_NP_DTYPES = {"tensor(float)": np.float32, "tensor(float16)": np.float16, "tensor(int64)": np.int64,
              "tensor(int32)": np.int32}


@dataclass
class TensorRTOptions:
    """TensorRT execution-provider options (onnxruntime docs, "TensorRT Execution Provider")."""

    fp16: bool = False
    int8: bool = False  # explicit-quantisation (QDQ) graphs need no calibration table
    engine_cache_path: Optional[str] = None  # set: build engines once and reuse them from this directory
    engine_cache_prefix: Optional[str] = None  # file-name prefix; the graph name is appended (ORT >= 1.17)
    timing_cache_path: Optional[str] = None  # set: keep TensorRT's kernel timing cache there
    max_workspace_size: Optional[int] = None  # bytes
    # graph name ("decoder" / "vision") -> (min, opt, max) shape strings, e.g.
    # "inputs_embeds:1x1x2048,position_ids:1x1" (ORT's trt_profile_*_shapes syntax)
    profiles: Dict[str, Tuple[str, str, str]] = field(default_factory=dict)

    def provider_options(self, graph: str, device_id: int = 0) -> Dict[str, str]:
        opts = {"device_id": str(device_id), "trt_fp16_enable": _flag(self.fp16), "trt_int8_enable": _flag(self.int8)}
        if self.engine_cache_path:
            opts["trt_engine_cache_enable"] = "1"
            opts["trt_engine_cache_path"] = str(self.engine_cache_path)
            if self.engine_cache_prefix:
                opts["trt_engine_cache_prefix"] = "%s_%s" % (self.engine_cache_prefix, graph)
        if self.timing_cache_path:
            opts["trt_timing_cache_enable"] = "1"
            opts["trt_timing_cache_path"] = str(self.timing_cache_path)
        if self.max_workspace_size:
            opts["trt_max_workspace_size"] = str(int(self.max_workspace_size))
        if graph in self.profiles:
            lo, opt, hi = self.profiles[graph]
            opts.update(trt_profile_min_shapes=lo, trt_profile_opt_shapes=opt, trt_profile_max_shapes=hi)
        return opts


@dataclass
class OrtOptions:
    providers: Sequence[str] = ("cpu",)  # in priority order: "cpu", "cuda", "tensorrt" or full EP names
    device_id: int = 0
    tensorrt: TensorRTOptions = field(default_factory=TensorRTOptions)
    graph_optimization: str = "all"  # "disable" | "basic" | "extended" | "all"
    intra_op_threads: Optional[int] = None  # None: the physical cores this process may use
    inter_op_threads: Optional[int] = None
    # Memory for multi-GB graphs: prepacking keeps a second, repacked copy of every MatMul weight
    # on CPU; the arena and memory patterns trade peak memory for allocation speed.
    disable_prepacking: bool = False
    enable_cpu_mem_arena: bool = True
    # One CPU arena for every session of the process, grown by exactly what is asked: the vision and
    # decoder graphs then reuse each other's scratch, and no power-of-two overshoot is kept.
    shared_cpu_arena: bool = True
    # Off: a memory pattern keeps one planned block per input shape (prefill chunk, remainder, decode
    # step); without them the full-size model peaked ~95 MB lower at the same speed (docs/benchmarks.md).
    enable_mem_pattern: bool = False
    warmup: bool = True  # run each session once at load: proves the provider and moves first-call costs
    log_severity: int = 3  # onnxruntime's own log: 0 verbose .. 4 fatal


def _flag(b: bool) -> str:
    return "1" if b else "0"


def resolve_providers(names: Sequence[str]) -> List[str]:
    """Full provider names in priority order, without repeats, CPU always last."""
    out: List[str] = []
    for name in names:
        full = PROVIDER_ALIASES.get(name.lower(), name)
        if not full.endswith("ExecutionProvider"):
            raise EngineError("unknown execution provider %r (use cpu, cuda, tensorrt or a full onnxruntime "
                              "provider name)" % name)
        if full != CPU and full not in out:
            out.append(full)
    return out + [CPU]


def session_options(opts: OrtOptions) -> ort.SessionOptions:
    if opts.graph_optimization not in _GRAPH_OPT_LEVELS:
        raise EngineError("graph_optimization must be one of %s, got %r"
                          % (", ".join(_GRAPH_OPT_LEVELS), opts.graph_optimization))
    so = ort.SessionOptions()
    so.graph_optimization_level = _GRAPH_OPT_LEVELS[opts.graph_optimization]
    so.intra_op_num_threads = opts.intra_op_threads if opts.intra_op_threads is not None else physical_cores()
    if opts.inter_op_threads is not None:
        so.inter_op_num_threads = opts.inter_op_threads
    so.enable_cpu_mem_arena = opts.enable_cpu_mem_arena
    so.enable_mem_pattern = opts.enable_mem_pattern
    so.log_severity_level = opts.log_severity
    if opts.disable_prepacking:
        so.add_session_config_entry("session.disable_prepacking", "1")
    if opts.shared_cpu_arena and opts.enable_cpu_mem_arena:
        _register_shared_cpu_arena()
        so.add_session_config_entry("session.use_env_allocators", "1")
    return so


_shared_arena_registered = False


def _register_shared_cpu_arena() -> None:
    global _shared_arena_registered
    if _shared_arena_registered:
        return
    info = ort.OrtMemoryInfo("Cpu", ort.OrtAllocatorType.ORT_ARENA_ALLOCATOR, 0, ort.OrtMemType.DEFAULT)
    # OrtArenaCfg(max_mem, arena_extend_strategy, initial_chunk_size_bytes, max_dead_bytes_per_chunk):
    # no cap, 1 = kSameAsRequested, library defaults for the rest.
    ort.create_and_register_allocator(info, ort.OrtArenaCfg(0, 1, -1, -1))
    _shared_arena_registered = True


def _provider_entry(name: str, graph: str, opts: OrtOptions) -> Union[str, Tuple[str, Dict[str, str]]]:
    if name == TENSORRT:
        return (name, opts.tensorrt.provider_options(graph, opts.device_id))
    if name == CUDA:
        return (name, {"device_id": str(opts.device_id)})
    return name


# Inputs whose axis is the cache length: a warm-up must feed the real length there, because a
# TensorRT profile built for it rejects any other size.
_CONTEXT_AXES = {"past_key": 3, "past_value": 3, "past_mask": 1}


def dummy_feeds(session: ort.InferenceSession, max_context: Optional[int] = None) -> Dict[str, np.ndarray]:
    """Zero inputs for a warm-up run: a one-token step (other dynamic axes get 1) over an empty cache."""
    feeds = {}
    for i in session.get_inputs():
        if i.type not in _NP_DTYPES:
            raise EngineError("graph input %s has type %s, which the runtime does not feed" % (i.name, i.type))
        shape = [d if isinstance(d, int) and d > 0 else 1 for d in i.shape]
        axis = _CONTEXT_AXES.get(i.name)
        if max_context is not None and axis is not None and axis < len(shape) and not isinstance(i.shape[axis], int):
            shape[axis] = max_context
        feeds[i.name] = np.zeros(shape, dtype=_NP_DTYPES[i.type])
    return feeds


def open_session(path: Union[str, Path], graph: str, opts: OrtOptions,
                 max_context: Optional[int] = None) -> ort.InferenceSession:
    """A session on the first requested provider that is available and runs, else the next one."""
    available = set(ort.get_available_providers())
    chain = []
    for p in resolve_providers(opts.providers):
        if p in available:
            chain.append(p)
        else:
            log.warning("%s: %s is not in this onnxruntime build (it has %s); skipping it",
                        graph, p, ", ".join(sorted(available)))
    so = session_options(opts)
    for i, first in enumerate(chain):
        providers = chain[i:]
        try:
            t0 = time.perf_counter()
            session = ort.InferenceSession(str(path), sess_options=so,
                                           providers=[_provider_entry(p, graph, opts) for p in providers])
            if first not in session.get_providers():
                raise EngineError("onnxruntime registered %s but the session runs on %s"
                                  % (first, ", ".join(session.get_providers())))
            if opts.warmup:
                session.run(None, dummy_feeds(session, max_context))
            log.info("%s: %s ready on %s in %.1f s", graph, Path(path).name, ", ".join(session.get_providers()),
                     time.perf_counter() - t0)
            return session
        except _ORT_ERRORS + (EngineError,) as e:
            if first == CPU:
                raise EngineError("%s: cannot run %s on onnxruntime %s (%s): check that the bundle was exported "
                                  "for this runtime" % (graph, path, ort.__version__, e)) from e
            log.warning("%s: %s failed (%s); falling back to %s", graph, first, e, ", ".join(providers[1:]))
    raise AssertionError("unreachable: CPU is always in the chain")


def _check_io(session: ort.InferenceSession, graph: str, inputs: Sequence[str], outputs: Sequence[str]) -> None:
    have_in = [i.name for i in session.get_inputs()]
    have_out = [o.name for o in session.get_outputs()]
    missing = [n for n in inputs if n not in have_in] + [n for n in outputs if n not in have_out]
    if missing or len(have_in) != len(inputs):
        raise EngineError("%s graph has inputs %s and outputs %s; the bundle contract needs inputs %s and outputs %s "
                          "(missing: %s): re-export the bundle" % (graph, have_in, have_out, list(inputs),
                                                                  list(outputs), ", ".join(missing) or "none"))


def _dim(value: Any, expected: Optional[int], what: str) -> int:
    static = value if isinstance(value, int) and value > 0 else None
    if static is not None and expected is not None and static != expected:
        raise EngineError("the graph's %s is %d but the manifest says %d: the bundle is inconsistent, re-export it"
                          % (what, static, expected))
    if static is None and expected is None:
        raise EngineError("the graph's %s is dynamic (%r) and no manifest value was given" % (what, value))
    return static if static is not None else expected  # type: ignore[return-value]


class OrtEngine(Engine):
    """vision.onnx + decoder.onnx on ONNX Runtime; plain session.run, numpy in and out.

    `expected` (from the manifest) fills in dimensions a graph leaves dynamic and is checked
    against the ones it fixes.
    """

    def __init__(self, decoder_path: Union[str, Path], vision_path: Optional[Union[str, Path]] = None,
                 options: Optional[OrtOptions] = None, expected: Optional[EngineDims] = None) -> None:
        self.options = options or OrtOptions()
        self._decoder = open_session(decoder_path, "decoder", self.options,
                                     max_context=expected.max_context if expected else None)
        _check_io(self._decoder, "decoder", DECODER_INPUTS, DECODER_OUTPUTS)
        self._vision = None
        if vision_path is not None:
            self._vision = open_session(vision_path, "vision", self.options)
            _check_io(self._vision, "vision", VISION_INPUTS, VISION_OUTPUTS)
        self._dims = self._read_dims(expected)

    def _read_dims(self, expected: Optional[EngineDims]) -> EngineDims:
        ins = {i.name: i for i in self._decoder.get_inputs()}
        outs = {o.name: o for o in self._decoder.get_outputs()}
        if outs["logits"].type != "tensor(float)":
            raise EngineError("decoder logits are %s; the bundle contract says float32" % outs["logits"].type)
        embeds_type = ins["inputs_embeds"].type
        if embeds_type not in ("tensor(float)", "tensor(float16)") or ins["past_key"].type != embeds_type:
            raise EngineError("decoder inputs_embeds is %s and past_key %s; both must be float32 or both float16"
                              % (embeds_type, ins["past_key"].type))
        e = expected
        kv = ins["past_key"].shape
        if len(kv) != 5:
            raise EngineError("decoder past_key has rank %d, the contract says [L, 1, KVH, M, D]" % len(kv))
        n_image = e.num_image_tokens if e else None
        if self._vision is not None:
            img_shape = {o.name: o for o in self._vision.get_outputs()}["image_embeds"].shape
            n_image = _dim(img_shape[1], n_image, "image token count (image_embeds axis 1)")
        elif n_image is None:
            n_image = 0
        return EngineDims(
            num_layers=_dim(kv[0], e.num_layers if e else None, "layer count (past_key axis 0)"),
            num_kv_heads=_dim(kv[2], e.num_kv_heads if e else None, "KV head count (past_key axis 2)"),
            max_context=_dim(kv[3], e.max_context if e else None, "max context (past_key axis 3)"),
            head_dim=_dim(kv[4], e.head_dim if e else None, "head dim (past_key axis 4)"),
            vocab_size=_dim(outs["logits"].shape[-1], e.vocab_size if e else None, "vocab size (logits axis 1)"),
            hidden_size=_dim(ins["inputs_embeds"].shape[-1], e.hidden_size if e else None,
                             "hidden size (inputs_embeds axis 2)"),
            num_image_tokens=n_image,
            dtype=np.dtype(_NP_DTYPES[embeds_type]),
        )

    @property
    def dims(self) -> EngineDims:
        return self._dims

    @property
    def providers(self) -> Dict[str, List[str]]:
        out = {"decoder": list(self._decoder.get_providers())}
        if self._vision is not None:
            out["vision"] = list(self._vision.get_providers())
        return out

    def encode_image(self, pixel_values: np.ndarray) -> np.ndarray:
        if self._vision is None:
            raise EngineError("this engine was opened without a vision graph")
        spec = self._vision.get_inputs()[0]
        x = np.ascontiguousarray(pixel_values, dtype=_NP_DTYPES[spec.type])
        return self._run(self._vision, "vision", ["image_embeds"], {"pixel_values": x})[0]

    def decode(self, inputs_embeds: np.ndarray, position_ids: np.ndarray, past_key: np.ndarray,
               past_value: np.ndarray, past_mask: np.ndarray) -> Tuple[np.ndarray, np.ndarray, np.ndarray]:
        dt = self._dims.dtype
        feeds = {
            "inputs_embeds": np.ascontiguousarray(inputs_embeds, dtype=dt),
            "position_ids": np.ascontiguousarray(position_ids, dtype=np.int64),
            # The cache is already contiguous and in the model dtype, so these pass without a copy.
            "past_key": np.ascontiguousarray(past_key, dtype=dt),
            "past_value": np.ascontiguousarray(past_value, dtype=dt),
            "past_mask": np.ascontiguousarray(past_mask, dtype=np.int64),
        }
        logits, new_key, new_value = self._run(self._decoder, "decoder", list(DECODER_OUTPUTS), feeds)
        return logits, new_key, new_value

    @staticmethod
    def _run(session: ort.InferenceSession, graph: str, outputs: List[str],
             feeds: Dict[str, np.ndarray]) -> List[np.ndarray]:
        try:
            return session.run(outputs, feeds)
        except _ORT_ERRORS as e:
            shapes = ", ".join("%s %s" % (k, v.shape) for k, v in feeds.items())
            raise EngineError("%s graph failed on inputs %s: %s" % (graph, shapes, e)) from e

    def close(self) -> None:
        self._decoder = None  # type: ignore[assignment]
        self._vision = None
