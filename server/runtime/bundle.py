"""The bundle: the one contract between engine_build/ (writer) and server/ (reader).

A bundle is a directory:
    manifest.json      this schema (SCHEMA_VERSION), with the sha256 and size of every other file
    vision.onnx        pixel_values [1,3,S,S] -> image_embeds [1,N,H] (tower + connector, static size)
    decoder.onnx       one graph for prefill (S tokens) and decode (S = 1), see DECODER_IO below
    embed_tokens.npy   token-embedding table [V,H]; the runtime gathers text embeddings and splices
                       image embeddings in before the decoder
    tokenizer.json     Hugging Face `tokenizers` format
    *.onnx.data        external weights of a graph, when it has them

Torch-free and Python 3.8: the server reads this on the Jetson.
"""
from __future__ import annotations

import hashlib
import json
import os
from dataclasses import asdict, dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Dict, List, Optional

from models.config import ModelConfig

# 2: precision may be float16 / int8 / int8-cpu, with `quantization` (how) and `engines` (TensorRT plans
# built on a device). Version 1 bundles (FP32/FP16 exports without those fields) stay readable.
SCHEMA_VERSION = 2
READABLE_SCHEMA_VERSIONS = (1, 2)
PRECISIONS = ("float32", "float16", "int8", "int8-cpu")
# int8-cpu graphs use dynamic W8A8 integer ops (MatMulInteger) that TensorRT cannot parse: CPU only.
CPU_ONLY_PRECISIONS = ("int8-cpu",)
FORMAT_NAME = "tinyllava-med-bundle"
MANIFEST_FILE = "manifest.json"
VISION_FILE = "vision.onnx"
DECODER_FILE = "decoder.onnx"
EMBEDDINGS_FILE = "embed_tokens.npy"
TOKENIZER_FILE = "tokenizer.json"

# Decoder graph I/O. The KV cache is runtime-owned and preallocated at max_context: the graph
# reads the whole cache (static shape, masked by past_mask) and returns only the K/V of its S
# new tokens, which the runtime writes into the cache at their positions. One graph serves
# prefill (dynamic S) and decode (S = 1): one set of weights in memory, no If node.
#   inputs_embeds [1, S, H]          model dtype
#   position_ids  [1, S]             int64
#   past_key      [L, 1, KVH, M, D]  model dtype (M = max_context)
#   past_value    [L, 1, KVH, M, D]
#   past_mask     [1, M]             int64, 1 where the cache holds a token to attend to
#   -> logits     [1, V]             float32, last position only
#   -> new_key    [L, 1, KVH, S, D]
#   -> new_value  [L, 1, KVH, S, D]
DECODER_INPUTS = ("inputs_embeds", "position_ids", "past_key", "past_value", "past_mask")
DECODER_OUTPUTS = ("logits", "new_key", "new_value")
VISION_INPUTS = ("pixel_values",)
VISION_OUTPUTS = ("image_embeds",)

_HASH_CHUNK = 8 << 20


class BundleError(Exception):
    """A bundle is missing, malformed, from another schema version, or fails its hash check."""


@dataclass
class TensorSpec:
    name: str
    shape: List[Any]  # ints, or strings naming dynamic axes
    dtype: str  # numpy dtype name: float32, float16, int64


@dataclass
class GraphSpec:
    file: str
    inputs: List[TensorSpec]
    outputs: List[TensorSpec]
    external_data: Optional[str] = None


@dataclass
class Manifest:
    model: ModelConfig
    template: str
    precision: str  # one of PRECISIONS
    opset: int
    max_context: int
    graphs: Dict[str, GraphSpec]
    embeddings: TensorSpec  # name = file name
    tokenizer: Dict[str, Any]  # file, bos_token_id, eos_token_id, eos_token, stop_token_ids (every id that ends)
    files: Dict[str, Dict[str, Any]] = field(default_factory=dict)  # name -> {sha256, size}
    tools: Dict[str, str] = field(default_factory=dict)
    source: Dict[str, Any] = field(default_factory=dict)
    # quantize: {"precision", "source_bundle_sha256", "cpu_only", "calibration": {...}, "tools": {...},
    #  "graphs": {name: {"precision", "fp32_nodes": [...], "quantized_nodes": [...], "excluded": [...]}}}
    quantization: Dict[str, Any] = field(default_factory=dict)
    # build-engines: cache key -> {"file", "sha256", "size", "tensorrt", "device", "compute_capability", ...}
    engines: Dict[str, Any] = field(default_factory=dict)
    schema_version: int = SCHEMA_VERSION
    format: str = FORMAT_NAME

    def to_json(self) -> Dict[str, Any]:
        d = asdict(self)
        d["model"] = self.model.to_dict()
        return d

    @classmethod
    def from_json(cls, d: Dict[str, Any]) -> "Manifest":
        def spec(x: Dict[str, Any]) -> TensorSpec:
            return TensorSpec(x["name"], list(x["shape"]), x["dtype"])

        graphs = {
            k: GraphSpec(g["file"], [spec(t) for t in g["inputs"]], [spec(t) for t in g["outputs"]],
                         g.get("external_data"))
            for k, g in d["graphs"].items()
        }
        return cls(
            model=ModelConfig.from_dict(d["model"]), template=d["template"], precision=d["precision"],
            opset=int(d["opset"]), max_context=int(d["max_context"]), graphs=graphs,
            embeddings=spec(d["embeddings"]), tokenizer=dict(d["tokenizer"]), files=dict(d["files"]),
            tools=dict(d.get("tools", {})), source=dict(d.get("source", {})),
            quantization=dict(d.get("quantization", {})), engines=dict(d.get("engines", {})),
            schema_version=int(d["schema_version"]), format=d["format"],
        )


def package_version() -> str:
    """This project's installed version ("0.0.0" in a source tree without package metadata)."""
    try:
        return version("tinyllava-med")
    except PackageNotFoundError:
        return "0.0.0"


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(_HASH_CHUNK), b""):
            h.update(chunk)
    return h.hexdigest()


def write_manifest(bundle_dir: Path, manifest: Manifest, rehash: bool = True) -> Path:
    """Hash every file in the bundle directory into the manifest and write manifest.json.

    rehash=False keeps `files` as it is (recording engines built later must not re-hash GBs of graphs).
    """
    bundle_dir = Path(bundle_dir)
    if rehash:
        manifest.files = {}
        for p in sorted(bundle_dir.iterdir()):
            if p.name == MANIFEST_FILE or not p.is_file():
                continue
            manifest.files[p.name] = {"sha256": sha256_file(p), "size": p.stat().st_size}
    out = bundle_dir / MANIFEST_FILE
    tmp = out.with_suffix(".json.tmp")
    tmp.write_text(json.dumps(manifest.to_json(), indent=2, sort_keys=True) + "\n")
    os.replace(tmp, out)
    return out


def bundle_eos_ids(tokenizer: Dict[str, Any]) -> List[int]:
    """The manifest's end-of-sequence id first, then its other stop ids (older bundles: the first only)."""
    eos = tokenizer.get("eos_token_id")
    first = [int(eos)] if eos is not None else []
    return first + [int(t) for t in tokenizer.get("stop_token_ids", []) if t != eos]


def read_manifest(bundle_dir: Path) -> Manifest:
    bundle_dir = Path(bundle_dir)
    path = bundle_dir / MANIFEST_FILE
    if not bundle_dir.is_dir():
        raise BundleError("bundle directory %s does not exist: export one with `tinyllava-med export`" % bundle_dir)
    if not path.is_file():
        raise BundleError("%s is missing: %s is not a bundle (export one with `tinyllava-med export`)"
                          % (MANIFEST_FILE, bundle_dir))
    try:
        raw = json.loads(path.read_text())
    except (ValueError, UnicodeDecodeError) as e:
        raise BundleError("%s is not valid JSON (%s): re-export the bundle" % (MANIFEST_FILE, e)) from None
    if not isinstance(raw, dict) or raw.get("format") != FORMAT_NAME:
        raise BundleError("%s is not a tinyllava-med bundle manifest" % MANIFEST_FILE)
    version = raw.get("schema_version")
    if version not in READABLE_SCHEMA_VERSIONS:
        raise BundleError("%s has schema version %r, this runtime reads version %d (and older %s): re-export the "
                          "bundle with this version of `tinyllava-med export`"
                          % (MANIFEST_FILE, version, SCHEMA_VERSION,
                             ", ".join(str(v) for v in READABLE_SCHEMA_VERSIONS if v != SCHEMA_VERSION)))
    try:
        return Manifest.from_json(raw)
    except (KeyError, TypeError, ValueError) as e:
        raise BundleError("%s is malformed (%s: %s): re-export the bundle" % (MANIFEST_FILE, type(e).__name__, e)) from None


def verify_files(bundle_dir: Path, manifest: Manifest, check_hashes: bool = True) -> None:
    """Refuse a bundle whose files are missing, truncated or altered, naming the file."""
    bundle_dir = Path(bundle_dir)
    needed = {g.file for g in manifest.graphs.values()} | {manifest.embeddings.name, manifest.tokenizer["file"]}
    needed |= {g.external_data for g in manifest.graphs.values() if g.external_data}
    unlisted = sorted(needed - set(manifest.files))
    if unlisted:
        raise BundleError("manifest lists no hash for %s: re-export the bundle" % ", ".join(unlisted))
    for name, meta in sorted(manifest.files.items()):
        p = bundle_dir / name
        if not p.is_file():
            raise BundleError("bundle file %s is missing from %s: copy the whole bundle directory again"
                              % (name, bundle_dir))
        size = p.stat().st_size
        if size != meta["size"]:
            raise BundleError("bundle file %s has %d bytes, the manifest says %d (truncated or altered): copy the "
                              "bundle again" % (name, size, meta["size"]))
        if check_hashes and sha256_file(p) != meta["sha256"]:
            raise BundleError("bundle file %s fails its sha256 check (altered or corrupt): copy the bundle again"
                              % name)


def bundle_hash(manifest: Manifest) -> str:
    """sha256 over the graphs', embeddings' and tokenizer's hashes and the precision: what an engine is built from.

    Engines and the manifest's own engine records are not part of it, so recording a plan keeps it stable.
    """
    h = hashlib.sha256(manifest.precision.encode("utf-8"))
    for name in sorted(manifest.files):
        if name.endswith(".plan"):
            continue
        h.update(("\0%s\0%s" % (name, manifest.files[name]["sha256"])).encode("utf-8"))
    return h.hexdigest()


def load_manifest(bundle_dir: Path, check_hashes: bool = True) -> Manifest:
    """Read and verify a bundle's manifest and files."""
    manifest = read_manifest(bundle_dir)
    verify_files(bundle_dir, manifest, check_hashes=check_hashes)
    return manifest
