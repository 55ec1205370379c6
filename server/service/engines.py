"""First start: TensorRT engines for the mounted bundle are built before the service reports ready.

Engines are built on the device that runs them (they are not portable across TensorRT versions or GPUs),
once, and never inside a request: the loader thread asks the builder whether the bundle's engines for
this precision are ready and, when not, builds them while /ready answers 503 "building engines". The
builder is a module with two functions (by default `engine_build.trt.build`, the `build-engines` code):

    engines_ready(bundle_dir: Path, precision: str) -> bool   # cached plans valid for this device
    build_engines(bundle_dir: Path, precision: str) -> None   # build and cache them (minutes)

Tests put a fake module there (TINYLLAVA_ENGINE_BUILDER).
"""
from __future__ import annotations

import importlib
import logging
import time
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)

DEFAULT_BUILDER = "engine_build.trt.build"
PRECISIONS = ("fp16", "int8")


class BuilderMissing(RuntimeError):
    """No engine builder can be imported (an image without TensorRT, or a wrong TINYLLAVA_ENGINE_BUILDER)."""


class EngineBuilder:
    """The two calls the service makes, on a module that provides them."""

    def __init__(self, module: Any) -> None:
        self.module = module
        self.name = getattr(module, "__name__", repr(module))

    def engines_ready(self, bundle_dir: Path, precision: str) -> bool:
        return bool(self.module.engines_ready(bundle_dir, precision))

    def build_engines(self, bundle_dir: Path, precision: str) -> None:
        self.module.build_engines(bundle_dir, precision)


def resolve_builder(module_name: str = DEFAULT_BUILDER) -> EngineBuilder:
    """The builder module, imported now (lazily: TensorRT is only imported where engines are built)."""
    try:
        module = importlib.import_module(module_name)
    except ImportError as e:
        raise BuilderMissing("TensorRT builder not installed (%s could not be imported: %s): use the Jetson image, "
                             "or serve without TINYLLAVA_BUILD_ENGINES" % (module_name, e)) from None
    missing = [f for f in ("engines_ready", "build_engines") if not callable(getattr(module, f, None))]
    if missing:
        raise BuilderMissing("TensorRT builder not installed: %s has no %s()" % (module_name, ", ".join(missing)))
    return EngineBuilder(module)


def ensure_engines(builder: EngineBuilder, bundle_dir: Path, precision: str, on_build: Any = None) -> bool:
    """Build the bundle's engines unless they are ready; True when a build ran. `on_build()` is
    called just before building (the service turns /ready into "building engines")."""
    if builder.engines_ready(bundle_dir, precision):
        log.info("engines ready", extra={"precision": precision})
        return False
    if on_build is not None:
        on_build()
    log.warning("building %s TensorRT engines for this device: the first start takes minutes", precision)
    t0 = time.perf_counter()
    builder.build_engines(bundle_dir, precision)
    if not builder.engines_ready(bundle_dir, precision):
        raise RuntimeError("%s.build_engines() returned but the %s engines are still not ready: see the log above"
                           % (builder.name, precision))
    log.warning("engines built in %.0f s", time.perf_counter() - t0)
    return True


__all__ = ["BuilderMissing", "DEFAULT_BUILDER", "EngineBuilder", "PRECISIONS", "ensure_engines", "resolve_builder"]
