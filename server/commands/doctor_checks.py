"""The checks of `tinyllava-med doctor`: what this device has and whether it can serve the bundle.

Each check returns a Check (ok | warn | fail | skip) with the facts found and, unless ok, the fix. A
Jetson is recognised by /etc/nv_tegra_release; there CUDA, TensorRT and ONNX Runtime's GPU providers
are required, while elsewhere their absence is a skip (the CPU backend serves). Every execution
provider ONNX Runtime lists is proven by running a tiny graph on it (a listed provider can still fail).
Torch-free and Python 3.8 (it runs in the Jetson image).
"""
from __future__ import annotations

import glob
import json
import platform
import re
import sys
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Dict, List, Optional

OK, WARN, FAIL, SKIP = "ok", "warn", "fail", "skip"
PROBE = Path(__file__).resolve().parents[1] / "assets" / "doctor" / "add.onnx"
# L4T release -> JetPack (jetson_stats jtop/core/jetson_variables.py; dusty-nv/jetson-containers l4t_version.py)
JETPACK = {"35.1.0": "5.0.2", "35.2.1": "5.1", "35.3.1": "5.1.1", "35.4.1": "5.1.2", "35.5.0": "5.1.3",
           "35.6.0": "5.1.4", "35.6.1": "5.1.5", "35.6.2": "5.1.5", "35.6.3": "5.1.5"}
_EP_ORDER = ("TensorrtExecutionProvider", "CUDAExecutionProvider", "CPUExecutionProvider")
_GIB = 1 << 30


@dataclass
class Check:
    name: str
    status: str
    summary: str
    fix: Optional[str] = None
    facts: Dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> Dict[str, Any]:
        return asdict(self)


@dataclass
class Device:
    """What the checks share: where the filesystem root is (a fake one in tests) and what was found."""

    root: Path = Path("/")
    l4t: Optional[str] = None  # "35.4.1" on a Jetson

    @property
    def jetson(self) -> bool:
        return self.l4t is not None


def check_python(dev: Device) -> Check:
    v = platform.python_version()
    facts = {"version": v, "executable": sys.executable}
    if sys.version_info < (3, 8):
        return Check("python", FAIL, "Python %s is too old" % v, "use Python 3.8 or newer", facts)
    if dev.jetson and sys.version_info[:2] != (3, 8):
        return Check("python", WARN, "Python %s on a Jetson" % v, "JetPack 5's TensorRT bindings are built for "
                     "Python 3.8: run the Jetson image (docker/Dockerfile.jetson)", facts)
    return Check("python", OK, "Python %s" % v, facts=facts)


def check_l4t(dev: Device) -> Check:
    path = dev.root / "etc" / "nv_tegra_release"
    try:
        text = path.read_text(errors="replace")
    except OSError:
        return Check("l4t", SKIP, "not a Jetson (no /etc/nv_tegra_release): the CPU backend serves",
                     facts={"machine": platform.machine()})
    m = re.search(r"R(\d+)\s*\(release\),\s*REVISION:\s*([\d.]+)", text)
    if m is None:
        return Check("l4t", WARN, "/etc/nv_tegra_release is unreadable", "check the JetPack install", {"text": text[:200]})
    release = "%s.%s" % (m.group(1), m.group(2))
    dev.l4t = release
    jetpack = JETPACK.get(release)
    facts = {"l4t": release, "jetpack": jetpack, "machine": platform.machine()}
    if m.group(1) != "35":
        return Check("l4t", WARN, "L4T R%s (JetPack %s)" % (release, jetpack or "?"), "this image targets L4T R35 "
                     "(JetPack 5.1.x, TensorRT 8.5, the last for Xavier): engines and wheels may not match", facts)
    return Check("l4t", OK, "L4T R%s = JetPack %s" % (release, jetpack or "5.1.x"), facts=facts)


def check_cuda(dev: Device) -> Check:
    versions = []
    for vf in sorted(glob.glob(str(dev.root / "usr" / "local" / "cuda*" / "version.json"))):
        try:
            versions.append(json.loads(Path(vf).read_text())["cuda"]["version"])
        except (OSError, ValueError, KeyError):
            continue
    gpu_nodes = [p for p in ("dev/nvhost-ctrl-gpu", "dev/nvidia0") if (dev.root / p).exists()]
    facts: Dict[str, Any] = {"cuda": versions[-1] if versions else None, "gpu_device_nodes": ["/" + p for p in gpu_nodes]}
    if versions and gpu_nodes:
        return Check("cuda", OK, "CUDA %s, GPU present" % versions[-1], facts=facts)
    if not dev.jetson and not gpu_nodes:
        return Check("cuda", SKIP, "no NVIDIA GPU: the CPU backend serves", facts=facts)
    missing = "CUDA (no /usr/local/cuda*/version.json)" if not versions else "the GPU device nodes"
    return Check("cuda", FAIL, "%s not found" % missing, "run the container with --runtime nvidia (compose: "
                 "runtime: nvidia) from the L4T r35 image (docker/Dockerfile.jetson)", facts)


def check_tensorrt(dev: Device) -> Check:
    try:
        import tensorrt  # noqa: F401 - only its version is read
    except ImportError:
        if not dev.jetson:
            return Check("tensorrt", SKIP, "TensorRT not installed: ONNX Runtime serves")
        return Check("tensorrt", FAIL, "TensorRT's Python bindings are not importable", "use the Jetson image: its "
                     "L4T base carries TensorRT 8.5 for Python 3.8 (python3-libnvinfer); do not pip-install tensorrt")
    v = str(getattr(tensorrt, "__version__", "0"))
    parts = [int(p) if p.isdigit() else 0 for p in (v.split(".") + ["0"])[:2]]
    if parts[0] >= 11:
        return Check("tensorrt", FAIL, "TensorRT %s" % v, "TensorRT 11 removed the precision flags the engine builder "
                     "uses: install TensorRT 8.5 to 10.x", {"version": v})
    if tuple(parts) < (8, 5):
        return Check("tensorrt", WARN, "TensorRT %s" % v, "TensorRT 8.5 or newer is expected (JetPack 5.1)",
                     {"version": v})
    return Check("tensorrt", OK, "TensorRT %s" % v, facts={"version": v})


def check_onnxruntime(dev: Device) -> Check:
    try:
        import onnxruntime as ort
    except ImportError:
        return Check("onnxruntime", FAIL, "ONNX Runtime is not installed", "install one flavour: pip install "
                     "'tinyllava-med[cpu]' (CPU), or on a Jetson NVIDIA's onnxruntime_gpu wheel (docs/jetson.md)")
    import numpy as np

    available = list(ort.get_available_providers())
    proven: List[str] = []
    errors: Dict[str, str] = {}
    x = np.arange(4, dtype=np.float32).reshape(1, 4)
    for ep in [p for p in _EP_ORDER if p in available]:
        try:
            so = ort.SessionOptions()
            so.log_severity_level = 3
            sess = ort.InferenceSession(str(PROBE), so, providers=[ep])
            (y,) = sess.run(None, {"x": x})
            if sess.get_providers()[0] == ep and np.array_equal(y, x + x):
                proven.append(ep)
            else:
                errors[ep] = "ran on %s instead" % sess.get_providers()[0]
        except Exception as e:  # noqa: BLE001 - a provider that cannot run is the finding
            errors[ep] = "%s: %s" % (type(e).__name__, str(e).splitlines()[0][:200] if str(e) else "")
    facts = {"version": ort.__version__, "distribution": _ort_distribution(), "available": available,
             "proven": proven, "errors": errors}
    summary = "ONNX Runtime %s (%s), proven: %s" % (ort.__version__, facts["distribution"] or "?",
                                                    ", ".join(p.replace("ExecutionProvider", "") for p in proven) or "none")
    if "CPUExecutionProvider" not in proven:
        return Check("onnxruntime", FAIL, summary, "reinstall ONNX Runtime: not even its CPU provider runs", facts)
    if dev.jetson and "CUDAExecutionProvider" not in proven:
        return Check("onnxruntime", FAIL, summary, "this is a CPU build on a Jetson: install NVIDIA's onnxruntime_gpu "
                     "wheel for JetPack 5 (docker/Dockerfile.jetson ORT_WHEEL) and remove PyPI's onnxruntime", facts)
    return Check("onnxruntime", OK, summary, facts=facts)


def _ort_distribution() -> Optional[str]:
    """Which package installed `onnxruntime`: PyPI's CPU build and NVIDIA's GPU build both write it."""
    from importlib.metadata import PackageNotFoundError, distribution

    for name in ("onnxruntime-gpu", "onnxruntime"):
        try:
            return "%s %s" % (name, distribution(name).version)
        except PackageNotFoundError:
            continue
    return None


def check_memory(dev: Device, bundle_bytes: Optional[int]) -> Check:
    import psutil

    vm = psutil.virtual_memory()
    facts = {"total_bytes": vm.total, "available_bytes": vm.available, "bundle_bytes": bundle_bytes}
    summary = "%.1f GiB RAM, %.1f GiB available" % (vm.total / _GIB, vm.available / _GIB)
    if bundle_bytes is not None and bundle_bytes > vm.total:
        return Check("memory", FAIL, summary + "; the bundle is %.1f GiB" % (bundle_bytes / _GIB),
                     "the bundle cannot fit: use a smaller precision (tinyllava-med quantize) or a device with more "
                     "memory", facts)
    if bundle_bytes is not None and bundle_bytes * 1.2 > vm.available:
        return Check("memory", WARN, summary + "; the bundle is %.1f GiB" % (bundle_bytes / _GIB),
                     "close other programs (on a Jetson the GPU shares this RAM) or add swap", facts)
    return Check("memory", OK, summary, facts=facts)


def check_power(dev: Device, jetson_snapshot: Dict[str, Any]) -> Check:
    if not dev.jetson:
        return Check("power", SKIP, "not a Jetson: no power mode", facts={"jtop": jetson_snapshot})
    if jetson_snapshot.get("status") != "ok":
        return Check("power", WARN, "power mode and power unknown: jtop telemetry is unavailable",
                     jetson_snapshot.get("reason"), {"jtop": jetson_snapshot})
    facts = {k: jetson_snapshot.get(k) for k in ("nvpmodel", "jetson_clocks", "power_w", "jetson_stats")}
    summary = "nvpmodel %s, jetson_clocks %s, %.1f W now" % (facts["nvpmodel"], "on" if facts["jetson_clocks"]
                                                           else "off", facts["power_w"] or 0.0)
    return Check("power", OK, summary, facts=facts)


def bundle_summary(bundle: Path) -> Check:
    from server.runtime.bundle import BundleError, read_manifest, verify_files

    try:
        manifest = read_manifest(bundle)
        verify_files(bundle, manifest, check_hashes=False)  # the server hashes every file when it loads
    except (BundleError, OSError) as e:
        return Check("bundle", FAIL, "the bundle at %s cannot be served" % bundle, str(e), {"path": str(bundle)})
    size = sum(int(f.get("size", 0)) for f in manifest.files.values())
    facts = {"path": str(bundle), "model": manifest.model.name, "precision": manifest.precision,
             "opset": manifest.opset, "schema_version": manifest.schema_version, "bytes": size}
    return Check("bundle", OK, "%s, %s, opset %d, %.1f MiB" % (manifest.model.name, manifest.precision,
                                                             manifest.opset, size / (1 << 20)), facts=facts)


def check_bundle_device(dev: Device, bundle: Check, has_gpu: bool) -> Check:
    """The bundle against this device: opset for TensorRT 8.5, precision for the backend that will run it."""
    if bundle.status == FAIL:
        return bundle
    precision, opset = bundle.facts["precision"], bundle.facts["opset"]
    if dev.jetson and opset > 17:
        return Check("bundle", FAIL, bundle.summary, "TensorRT 8.5 parses ONNX up to opset 17: re-export with "
                     "tinyllava-med export --opset 16", bundle.facts)
    if dev.jetson and "cpu" in precision:
        return Check("bundle", WARN, bundle.summary, "a CPU-only bundle on a Jetson leaves the GPU idle: serve the "
                     "fp16 or int8 bundle", bundle.facts)
    if not has_gpu and precision in ("float16", "fp16"):
        return Check("bundle", WARN, bundle.summary, "an FP16 bundle on a CPU is slow: serve the FP32 or int8-cpu "
                     "bundle here", bundle.facts)
    return bundle


def check_engines(dev: Device, bundle: Path, precision: str, builder_module: str, has_trt: bool) -> Check:
    from server.service.engines import BuilderMissing, resolve_builder

    facts = {"precision": precision, "builder": builder_module}
    if not dev.jetson and not has_trt:  # nothing can build or run a plan here, whether or not the builder imports
        return Check("engines", SKIP, "no TensorRT engines on this host (ONNX Runtime serves)", facts=facts)
    try:
        builder = resolve_builder(builder_module)
    except BuilderMissing as e:
        return Check("engines", FAIL, str(e).split(" (")[0], str(e), facts)
    try:
        ready = builder.engines_ready(bundle, precision)
    except Exception as e:  # noqa: BLE001 - whatever the builder raises is the finding
        return Check("engines", FAIL, "the engine cache cannot be checked", "%s: %s" % (type(e).__name__, e), facts)
    if ready:
        return Check("engines", OK, "%s engines cached for this device" % precision, facts=facts)
    return Check("engines", WARN, "%s engines not built yet" % precision, "the first start builds them (minutes; "
                 "TINYLLAVA_BUILD_ENGINES=1, the Jetson image's default), or run tinyllava-med build-engines", facts)


def run_checks(bundle: Path, precision: str = "fp16", builder_module: str = "engine_build.trt.build",
               root: Path = Path("/"), jetson_snapshot: Optional[Dict[str, Any]] = None) -> List[Check]:
    """Every check, in order; `root` and `jetson_snapshot` let tests stand in for a Jetson."""
    dev = Device(root=root)
    checks = [check_python(dev), check_l4t(dev)]  # l4t first: it decides whether GPU pieces are required
    cuda = check_cuda(dev)
    trt = check_tensorrt(dev)
    checks += [cuda, trt, check_onnxruntime(dev)]
    summary = bundle_summary(bundle)
    checks.append(check_memory(dev, summary.facts.get("bytes") if summary.status == OK else None))
    checks.append(check_power(dev, jetson_snapshot if jetson_snapshot is not None else _jtop_snapshot()))
    checks.append(check_bundle_device(dev, summary, has_gpu=cuda.status == OK))
    checks.append(check_engines(dev, bundle, precision, builder_module, has_trt=trt.status == OK))
    return checks


def _jtop_snapshot(timeout: float = 5.0) -> Dict[str, Any]:
    from server.service.jetson import JtopConfig, JtopTelemetry

    t = JtopTelemetry(JtopConfig())
    t.start()
    t.wait_settled(timeout)
    t.stop()
    return t.snapshot()


__all__ = ["FAIL", "OK", "SKIP", "WARN", "Check", "Device", "run_checks"]
