"""Open a bundle directory as a ready Runtime: verified manifest, engine, tokenizer, generator."""
from __future__ import annotations

import dataclasses
import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Optional, Sequence, Union

import numpy as np
from tokenizers import Tokenizer

from server.runtime.bundle import BundleError, Manifest, TensorSpec, bundle_eos_ids, load_manifest
from server.runtime.engine import Engine, EngineDims
from server.runtime.generator import Generator
from server.runtime.ort_backend import OrtEngine, OrtOptions

log = logging.getLogger(__name__)

# Prefill in chunks of this many positions. Each chunk attends over the whole fixed-size cache, so
# the attention scratch grows with chunk x max_context: unchunked, a 775-position TinyLLaVA-Med
# prompt peaks 0.8 GB above the weights; at 128 the prefill takes the same time (docs/benchmarks.md).
DEFAULT_PREFILL_CHUNK = 128


@dataclass
class Runtime:
    bundle_dir: Path
    manifest: Manifest
    engine: Engine
    tokenizer: Tokenizer
    embed_tokens: np.ndarray  # memory-mapped [V, H]
    generator: Generator

    def close(self) -> None:
        self.engine.close()


def expected_dims(manifest: Manifest) -> EngineDims:
    """The sizes the manifest promises; the engine checks its graphs against them."""
    text = manifest.model.text
    return EngineDims(
        num_layers=text.num_layers, num_kv_heads=text.num_kv_heads, head_dim=text.head_dim,
        max_context=manifest.max_context, vocab_size=text.vocab_size, hidden_size=text.hidden_size,
        num_image_tokens=manifest.model.num_image_tokens, dtype=np.dtype(manifest.embeddings.dtype),
    )


def load_embeddings(path: Path, spec: TensorSpec) -> np.ndarray:
    """The token-embedding table, memory-mapped: only the rows a prompt uses are read from disk."""
    try:
        table = np.load(str(path), mmap_mode="r", allow_pickle=False)
    except (OSError, ValueError) as e:
        raise BundleError("cannot read the embedding table %s (%s): copy the bundle again" % (path.name, e)) from None
    if list(table.shape) != [int(d) for d in spec.shape] or table.dtype != np.dtype(spec.dtype):
        raise BundleError("embedding table %s is %s %s, the manifest says %s %s: re-export the bundle"
                          % (path.name, table.dtype, list(table.shape), spec.dtype, spec.shape))
    return table


def load_tokenizer(path: Path) -> Tokenizer:
    try:
        tok = Tokenizer.from_file(str(path))
    except Exception as e:  # tokenizers raises a bare Exception for unreadable JSON
        raise BundleError("cannot read the tokenizer %s (%s): copy the bundle again" % (path.name, e)) from None
    tok.no_truncation()
    tok.no_padding()
    return tok


BACKENDS = ("auto", "onnxruntime", "tensorrt")


def open_engine(bundle_dir: Path, manifest: Manifest, backend: str, options: OrtOptions) -> Engine:
    """auto: the native TensorRT plans when this device has valid ones, else ONNX Runtime."""
    if backend not in BACKENDS:
        raise BundleError("backend %r is not one of %s" % (backend, ", ".join(BACKENDS)))
    graphs = manifest.graphs
    dims = expected_dims(manifest)
    if backend in ("auto", "tensorrt"):
        from server.runtime.trt_backend import TrtEngine, tensorrt_available

        if backend == "tensorrt" or tensorrt_available(bundle_dir, manifest):
            return TrtEngine(bundle_dir, manifest, dims)
        log.info("no TensorRT plans for this device in %s: using ONNX Runtime", bundle_dir)
    return OrtEngine(bundle_dir / graphs["decoder"].file, bundle_dir / graphs["vision"].file, options, expected=dims)


def load_runtime(bundle_dir: Union[str, Path], providers: Optional[Sequence[str]] = None,
                 options: Optional[OrtOptions] = None, check_hashes: bool = True, image_cache_size: int = 8,
                 prefix_reuse: bool = True, prefill_chunk: Optional[int] = DEFAULT_PREFILL_CHUNK,
                 stop_token_ids: Sequence[int] = (), backend: str = "onnxruntime") -> Runtime:
    """Verify and open a bundle on ONNX Runtime (or, with backend "tensorrt"/"auto", its TensorRT plans).

    providers (e.g. ["tensorrt", "cuda", "cpu"]) overrides options.providers; each graph runs on the
    first one that works here (see ort_backend). stop_token_ids: stops besides the tokenizer's EOS.
    """
    bundle_dir = Path(bundle_dir)
    manifest = load_manifest(bundle_dir, check_hashes=check_hashes)
    options = options or OrtOptions()
    if providers is not None:
        options = dataclasses.replace(options, providers=tuple(providers))
    graphs = manifest.graphs
    if "decoder" not in graphs or "vision" not in graphs:
        raise BundleError("the manifest lists graphs %s; a bundle needs 'vision' and 'decoder'" % sorted(graphs))
    engine = open_engine(bundle_dir, manifest, backend, options)
    if getattr(engine, "chunk", None):  # a TensorRT prefill profile bounds the chunk
        prefill_chunk = min(prefill_chunk or engine.chunk, engine.chunk)  # type: ignore[attr-defined]
    embed = load_embeddings(bundle_dir / manifest.embeddings.name, manifest.embeddings)
    tokenizer = load_tokenizer(bundle_dir / manifest.tokenizer["file"])
    # The checkpoint's end-of-sequence ids and the template's stop token, the first as eos_token_id.
    eos_ids = bundle_eos_ids(manifest.tokenizer)
    generator = Generator(engine, embed, tokenizer, eos_token_id=eos_ids[0] if eos_ids else None,
                          stop_token_ids=tuple(eos_ids[1:]) + tuple(stop_token_ids), image_cache_size=image_cache_size,
                          prefix_reuse=prefix_reuse, prefill_chunk=prefill_chunk)
    log.info("bundle %s (%s, %s) on %s", bundle_dir, manifest.model.name, manifest.precision, engine.providers)
    return Runtime(bundle_dir, manifest, engine, tokenizer, embed, generator)


__all__ = ["BACKENDS", "Runtime", "expected_dims", "open_engine", "load_embeddings", "load_runtime",
           "load_tokenizer"]
