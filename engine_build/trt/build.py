"""Build TensorRT plans for a bundle on the device it runs on; reuse them while they are valid.

    engines_ready(bundle_dir, "fp16")  -> True when every graph has a valid plan for this device
    build_engines(bundle_dir, "int8")  -> builds what is missing (idempotent), records it in the manifest

Plans go to BUNDLE/engines/ and are recorded in manifest["engines"] under their cache key (cache.py);
the manifest's file hashes are kept, so the bundle still verifies. FP32 pins: the nodes the quantizer
kept in FP32 (manifest quantization.graphs[g].fp32_nodes) are pinned with OBEY_PRECISION_CONSTRAINTS.
"""
from __future__ import annotations

import logging
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Set, Tuple

from engine_build.trt import compat
from engine_build.trt.cache import ENGINE_DIR, ENGINE_PRECISIONS, cache_key, plan_name, plan_valid, record
from engine_build.trt.device import DeviceInfo, current_device
from engine_build.trt.profiles import DEFAULT_PREFILL_CHUNK, Profile, graph_profiles
from server.runtime import bundle as B

log = logging.getLogger(__name__)

# bundle precision -> the engine precisions it can be built as
_BUILDABLE = {"float32": ("fp16",), "float16": ("fp16",), "int8": ("int8",)}


class EngineBuildError(Exception):
    """A plan cannot be built from this bundle on this device; the message says what to do."""


def default_precision(manifest: B.Manifest) -> str:
    return "int8" if manifest.precision == "int8" else "fp16"


def _check_precision(manifest: B.Manifest, precision: str) -> None:
    if precision not in ENGINE_PRECISIONS:
        raise EngineBuildError("engine precision %r is not one of %s" % (precision, ", ".join(ENGINE_PRECISIONS)))
    if manifest.precision in B.CPU_ONLY_PRECISIONS:
        raise EngineBuildError("this is an %s bundle (dynamic integer ops for ONNX Runtime CPU only); TensorRT cannot "
                               "build it: quantize the FP32 bundle with --precision int8 (or fp16) instead"
                               % manifest.precision)
    if precision not in _BUILDABLE.get(manifest.precision, ()):
        hint = ("quantize it first: `tinyllava-med quantize BUNDLE --precision int8 --out DIR`" if precision == "int8"
                else "build int8 engines from it, or fp16 engines from the FP32 / FP16 bundle")
        raise EngineBuildError("%s engines cannot be built from a %s bundle: %s" % (precision, manifest.precision, hint))


def pinned_nodes(manifest: B.Manifest, graph: str) -> List[str]:
    return list(manifest.quantization.get("graphs", {}).get(graph, {}).get("fp32_nodes", []))


class PlanBuilder:
    """One TensorRT session of plan building; `trt` and `device` are injectable (tests use stand-ins)."""

    def __init__(self, trt: Optional[Any] = None, device: Optional[DeviceInfo] = None,
                 prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> None:
        self.trt = compat.load_tensorrt(trt)
        self.device = device or current_device()
        self.prefill_chunk = prefill_chunk

    @property
    def version(self) -> str:
        return str(self.trt.__version__)

    def key(self, manifest: B.Manifest, graph: str, precision: str) -> str:
        return cache_key(self.version, self.device, precision, B.bundle_hash(manifest), graph, self.prefill_chunk)

    def missing(self, bundle_dir: Path, manifest: B.Manifest, precision: str) -> List[str]:
        out = []
        for graph in manifest.graphs:
            rec = manifest.engines.get(self.key(manifest, graph, precision))
            if rec is None or not plan_valid(bundle_dir, rec):
                out.append(graph)
        return out

    def build_plan(self, onnx_path: Path, precision: str, profiles: Sequence[Profile], pins: Sequence[str],
                   workspace_mb: Optional[int], timing_cache: Optional[Path]) -> Tuple[bytes, int]:
        """Serialized plan bytes and the number of layers pinned to FP32."""
        trt = self.trt
        logger = trt.Logger(trt.Logger.WARNING)
        builder = trt.Builder(logger)
        network = builder.create_network(compat.network_flags(trt))
        parser = trt.OnnxParser(network, logger)
        if not parser.parse_from_file(str(onnx_path)):  # path-based: finds external data next to the graph
            errors = "; ".join(str(parser.get_error(i)) for i in range(parser.num_errors))
            raise EngineBuildError("TensorRT %s cannot parse %s: %s (check the bundle with the TensorRT 8.5 gate)"
                                   % (self.version, onnx_path.name, errors))
        config = builder.create_builder_config()
        if workspace_mb:
            config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace_mb) << 20)
        config.set_flag(trt.BuilderFlag.FP16)  # INT8 plans keep their unquantized layers in FP16
        if precision == "int8":
            config.set_flag(trt.BuilderFlag.INT8)  # explicit Q/DQ: no calibrator
        pinned = self._pin(network, set(pins))
        if pinned:
            config.set_flag(trt.BuilderFlag.OBEY_PRECISION_CONSTRAINTS)
        elif pins:
            log.warning("%s: none of the %d FP32 pins matched a TensorRT layer name", onnx_path.name, len(pins))
        for prof in profiles:
            p = builder.create_optimization_profile()
            for name, (lo, opt, hi) in prof.shapes.items():
                p.set_shape(name, lo, opt, hi)
            config.add_optimization_profile(p)
        cache = None
        if timing_cache is not None:
            data = timing_cache.read_bytes() if timing_cache.is_file() else b""
            cache = config.create_timing_cache(data)
            config.set_timing_cache(cache, False)
        plan = builder.build_serialized_network(network, config)
        if plan is None:
            raise EngineBuildError(
                "TensorRT %s could not build %s as %s on %s (see the TensorRT log above): if it ran out of memory, "
                "stop other GPU processes or pass a smaller --workspace-mb; engines must be built on the device "
                "that runs them" % (self.version, onnx_path.name, precision, self.device.name))
        if cache is not None and timing_cache is not None:
            timing_cache.write_bytes(bytes(memoryview(config.get_timing_cache().serialize())))
        return bytes(memoryview(plan)), pinned

    def _pin(self, network: Any, pins: Set[str]) -> int:
        trt = self.trt
        n = 0
        for i in range(network.num_layers):
            layer = network.get_layer(i)
            if layer.name not in pins:
                continue
            layer.precision = trt.float32
            for j in range(layer.num_outputs):
                if layer.get_output(j).dtype in (trt.float32, trt.float16):
                    layer.set_output_type(j, trt.float32)
            n += 1
        return n

    def build(self, bundle_dir: Path, precision: str, workspace_mb: Optional[int] = None,
              timing_cache: Optional[Path] = None) -> Dict[str, Dict[str, Any]]:
        """Build the missing plans; returns graph -> engine record for all graphs."""
        bundle_dir = Path(bundle_dir)
        manifest = B.load_manifest(bundle_dir)
        _check_precision(manifest, precision)
        todo = self.missing(bundle_dir, manifest, precision)
        (bundle_dir / ENGINE_DIR).mkdir(exist_ok=True)
        for graph in todo:
            key = self.key(manifest, graph, precision)
            profiles = graph_profiles(manifest, graph, self.prefill_chunk)
            log.info("building %s %s plan for %s (TensorRT %s)", graph, precision, self.device.name, self.version)
            plan, pinned = self.build_plan(bundle_dir / manifest.graphs[graph].file, precision, profiles,
                                           pinned_nodes(manifest, graph), workspace_mb, timing_cache)
            name = plan_name(graph, precision, key)
            tmp = bundle_dir / (name + ".tmp")
            tmp.write_bytes(plan)
            os.replace(tmp, bundle_dir / name)
            # drop this graph's records for other keys of the same device and precision (stale bundle hash)
            for k in [k for k, r in manifest.engines.items() if r.get("graph") == graph and r.get("precision") ==
                      precision and r.get("device") == self.device.name and r.get("tensorrt") == self.version]:
                del manifest.engines[k]
            manifest.engines[key] = record(
                key, graph, precision, self.version, self.device, name, B.sha256_file(bundle_dir / name), len(plan),
                self.prefill_chunk, pinned, [{"name": p.name, "shapes": {k: [list(s) for s in v]
                                                                          for k, v in p.shapes.items()}}
                                             for p in profiles])
            B.write_manifest(bundle_dir, manifest, rehash=False)
        return {g: manifest.engines[self.key(manifest, g, precision)] for g in manifest.graphs}


def engines_ready(bundle_dir: Path, precision: str) -> bool:
    """True when every graph of the bundle has a valid `precision` plan for this TensorRT and GPU.

    False (never an exception) when TensorRT or a GPU is missing or the bundle cannot be built as asked.
    """
    try:
        builder = PlanBuilder()
        manifest = B.load_manifest(Path(bundle_dir), check_hashes=False)
        _check_precision(manifest, precision)
        return not builder.missing(Path(bundle_dir), manifest, precision)
    except (compat.TensorRTUnavailable, EngineBuildError, B.BundleError) as e:
        log.info("no %s engines ready for %s: %s", precision, bundle_dir, e)
        return False


def build_engines(bundle_dir: Path, precision: str, workspace_mb: Optional[int] = None,
                  timing_cache: Optional[Path] = None) -> None:
    """Build (or reuse) the `precision` plans of every graph for this device; raises with what to do."""
    PlanBuilder().build(Path(bundle_dir), precision, workspace_mb, timing_cache)
