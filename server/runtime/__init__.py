"""The torch-free runtime: answers from an ONNX bundle on ONNX Runtime (CPU by default).

    rt = load_runtime("bundle/")                      # verifies hashes, opens the graphs
    result = rt.generator.generate(prompt_ids, pixel_values, GenerationParams(max_tokens=64))
    for delta in rt.generator.stream(prompt_ids, pixel_values): ...

Runs on Python 3.8 with numpy, onnxruntime and tokenizers; imports no torch.
"""
from __future__ import annotations

from server.runtime.detokenizer import IncrementalDetokenizer
from server.runtime.engine import Engine, EngineDims
from server.runtime.errors import ContextLengthError, EngineError, GeneratorBusyError, RequestError
from server.runtime.generator import GenerationStream, Generator
from server.runtime.image_cache import ImageEmbeddingCache, pixel_hash
from server.runtime.kv_cache import KVCache
from server.runtime.loader import Runtime, expected_dims, load_runtime
from server.runtime.ort_backend import OrtEngine, OrtOptions, TensorRTOptions
from server.runtime.request import GenerationParams
from server.runtime.results import GenerationResult, StreamDelta, Timings
from server.runtime.sampling import Sampler, SamplingParams
from server.runtime.stop import StopStrings

__all__ = [
    "ContextLengthError", "Engine", "EngineDims", "EngineError", "GenerationParams", "GenerationResult",
    "GenerationStream", "Generator", "GeneratorBusyError", "ImageEmbeddingCache", "IncrementalDetokenizer",
    "KVCache", "OrtEngine", "OrtOptions", "RequestError", "Runtime", "Sampler", "SamplingParams", "StopStrings",
    "StreamDelta", "TensorRTOptions", "Timings", "expected_dims", "load_runtime", "pixel_hash",
]
