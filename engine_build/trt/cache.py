"""Where plans live and how they are keyed: (TensorRT version, device, compute capability, precision, bundle hash).

A plan is valid only for the TensorRT version and GPU it was built with (TensorRT support matrix:
engines are not portable), so the key names all of them; the bundle hash ties it to the graphs.
"""
from __future__ import annotations

import hashlib
import json
from pathlib import Path
from typing import Any, Dict

from engine_build.trt.device import DeviceInfo

ENGINE_DIR = "engines"
ENGINE_PRECISIONS = ("fp16", "int8")


def cache_key(trt_version: str, device: DeviceInfo, precision: str, bundle_sha256: str, graph: str,
              prefill_chunk: int) -> str:
    ident = {"tensorrt": trt_version, "device": device.name, "compute_capability": device.compute_capability,
             "precision": precision, "bundle": bundle_sha256, "graph": graph, "prefill_chunk": prefill_chunk}
    return hashlib.sha256(json.dumps(ident, sort_keys=True).encode("utf-8")).hexdigest()[:24]


def plan_name(graph: str, precision: str, key: str) -> str:
    return "%s/%s-%s-%s.plan" % (ENGINE_DIR, graph, precision, key)


def record(key: str, graph: str, precision: str, trt_version: str, device: DeviceInfo, file: str, sha256: str,
           size: int, prefill_chunk: int, pinned_layers: int, profiles: Any) -> Dict[str, Any]:
    return {"graph": graph, "precision": precision, "tensorrt": trt_version, "device": device.name,
            "compute_capability": device.compute_capability, "file": file, "sha256": sha256, "size": size,
            "prefill_chunk": prefill_chunk, "fp32_pinned_layers": pinned_layers, "profiles": profiles,
            "key": key}


def plan_valid(bundle_dir: Path, rec: Dict[str, Any]) -> bool:
    from server.runtime.bundle import sha256_file

    p = Path(bundle_dir) / rec["file"]
    return p.is_file() and p.stat().st_size == rec["size"] and sha256_file(p) == rec["sha256"]
