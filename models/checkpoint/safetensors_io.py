"""Safetensors files: memory-mapped reading of single or sharded checkpoints, streaming writing.

Reading goes through `safetensors.safe_open`, whose tensors are views of a private (copy-on-write)
memory map: loading a 6 GB fp32 checkpoint costs page cache, not 6 GB of process memory.
Writing streams one tensor at a time (header first, computed from the shapes), so a checkpoint
larger than RAM can be generated.
"""
from __future__ import annotations

import json
import math
import os
import struct
from dataclasses import dataclass
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import torch
from safetensors import SafetensorError, safe_open

from models.checkpoint.errors import CheckpointNotFoundError, CorruptCheckpointError, UnsupportedCheckpointError

INDEX_NAME = "model.safetensors.index.json"
SINGLE_NAME = "model.safetensors"
# The safetensors format's dtype codes (safetensors/src/tensor.rs Dtype).
DTYPE_CODES: Dict[torch.dtype, str] = {
    torch.float32: "F32", torch.float16: "F16", torch.bfloat16: "BF16", torch.float64: "F64",
    torch.int64: "I64", torch.int32: "I32", torch.int16: "I16", torch.int8: "I8", torch.uint8: "U8",
    torch.bool: "BOOL",
}

Shape = Tuple[int, ...]


@dataclass(frozen=True)
class TensorRef:
    """Where one stored tensor lives, and what its header says."""

    name: str
    file: Path
    shape: Shape
    dtype: str  # safetensors code, e.g. "F32"


class WeightFiles:
    """The tensors of one directory's safetensors files, opened lazily and memory-mapped."""

    def __init__(self, refs: Dict[str, TensorRef]) -> None:
        self.refs = refs
        self._handles: Dict[Path, object] = {}

    def names(self) -> List[str]:
        return list(self.refs)

    def files(self) -> List[Path]:
        return sorted({r.file for r in self.refs.values()})

    def get(self, name: str) -> torch.Tensor:
        ref = self.refs[name]
        handle = self._handles.get(ref.file)
        if handle is None:
            handle = self._handles[ref.file] = _open(ref.file)
        try:
            return handle.get_tensor(name)  # type: ignore[attr-defined]
        except SafetensorError as e:
            raise CorruptCheckpointError("cannot read tensor %r from %s (%s): the file is damaged; download or "
                                         "re-create it" % (name, ref.file, e)) from None


def open_weights(directory: Path) -> WeightFiles:
    """All tensors of `directory`: model.safetensors, or the shards model.safetensors.index.json names.

    Raises CheckpointNotFoundError when there are none, CorruptCheckpointError for a bad index,
    a missing shard or an unreadable file.
    """
    index = directory / INDEX_NAME
    if index.is_file():
        return WeightFiles(_refs_from_index(directory, index))
    single = directory / SINGLE_NAME
    if single.is_file():
        return WeightFiles(_refs_of_file(single))
    others = sorted(directory.glob("*.safetensors"))
    if len(others) == 1:
        return WeightFiles(_refs_of_file(others[0]))
    if others:
        raise CorruptCheckpointError(
            "%s holds %d safetensors shards (%s, ...) but no %s saying which tensor is where; copy the index "
            "file from where the checkpoint came from" % (directory, len(others), others[0].name, INDEX_NAME))
    pickles = sorted(p.name for p in directory.glob("*.bin")) + sorted(p.name for p in directory.glob("*.pt"))
    if pickles:
        raise UnsupportedCheckpointError(
            "%s has only pickled weights (%s); they are not loaded because unpickling can run code. Convert them "
            "to safetensors (transformers: model.save_pretrained(dir, safe_serialization=True))"
            % (directory, ", ".join(pickles[:3])))
    raise CheckpointNotFoundError("no weights in %s: expected %s or %s with its shards"
                                  % (directory, SINGLE_NAME, INDEX_NAME))


def has_weights(directory: Path) -> bool:
    return (directory / INDEX_NAME).is_file() or any(directory.glob("*.safetensors"))


def _open(path: Path) -> object:
    try:
        return safe_open(str(path), framework="pt")
    except (SafetensorError, OSError) as e:
        raise CorruptCheckpointError(
            "%s is not a readable safetensors file (%s): it is truncated or damaged (%d bytes on disk); "
            "download or re-create it" % (path, e, path.stat().st_size if path.exists() else 0)) from None


def _refs_of_file(path: Path) -> Dict[str, TensorRef]:
    handle = _open(path)
    refs = {}
    for name in handle.keys():  # type: ignore[attr-defined]
        sl = handle.get_slice(name)  # type: ignore[attr-defined]
        refs[name] = TensorRef(name, path, tuple(sl.get_shape()), sl.get_dtype())
    return refs


def _refs_from_index(directory: Path, index: Path) -> Dict[str, TensorRef]:
    try:
        with open(index, encoding="utf-8") as f:
            weight_map = json.load(f)["weight_map"]
        if not isinstance(weight_map, dict):
            raise TypeError("weight_map is not an object")
    except (ValueError, KeyError, TypeError) as e:
        raise CorruptCheckpointError("%s is not a valid shard index (%s); copy it again from the checkpoint's "
                                     "source" % (index, e)) from None
    by_shard: Dict[str, List[str]] = {}
    for name, shard in weight_map.items():
        by_shard.setdefault(shard, []).append(name)
    refs: Dict[str, TensorRef] = {}
    for shard, names in sorted(by_shard.items()):
        path = directory / shard
        if not path.is_file():
            raise CorruptCheckpointError(
                "%s names shard %s (%d tensors, e.g. %s) but %s does not exist; the download is incomplete: "
                "fetch the missing shard" % (index.name, shard, len(names), names[0], path))
        in_file = _refs_of_file(path)
        absent = [n for n in names if n not in in_file]
        if absent:
            raise CorruptCheckpointError("%s says %s holds %s but that shard does not; the index and the shards "
                                         "come from different saves" % (index.name, shard, ", ".join(absent[:3])))
        extra = sorted(set(in_file) - set(names))
        if extra:
            raise CorruptCheckpointError("shard %s holds %s, which %s does not list; the index and the shards come "
                                         "from different saves" % (shard, ", ".join(extra[:3]), index.name))
        refs.update(in_file)
    return refs


# ---- writing ----------------------------------------------------------------------------------

def write_file(path: Path, entries: Sequence[Tuple[str, Shape]], dtype: torch.dtype,
               produce: Callable[[str], torch.Tensor], on_tensor: Optional[Callable[[int], None]] = None,
               metadata: Optional[Dict[str, str]] = None) -> None:
    """Write one safetensors file, producing (and dropping) one tensor at a time.

    The header is computed from `entries` before any data is generated. The file appears under its
    name only once complete (written to a temporary name, then renamed).
    """
    itemsize = torch.empty((), dtype=dtype).element_size()
    header: Dict[str, object] = {"__metadata__": dict(metadata or {"format": "pt"})}
    offset = 0
    for name, shape in entries:
        nbytes = math.prod(shape) * itemsize
        header[name] = {"dtype": DTYPE_CODES[dtype], "shape": list(shape), "data_offsets": [offset, offset + nbytes]}
        offset += nbytes
    raw = json.dumps(header, separators=(",", ":")).encode("utf-8")
    raw += b" " * (-len(raw) % 8)  # the format pads the header so tensor data starts 8-aligned
    tmp = path.with_name(path.name + ".partial")
    with open(tmp, "wb") as f:
        f.write(struct.pack("<Q", len(raw)))
        f.write(raw)
        for name, shape in entries:
            t = produce(name)
            if tuple(t.shape) != tuple(shape) or t.dtype != dtype:
                raise ValueError("produced %s %s for %r, header says %s %s" % (t.dtype, tuple(t.shape), name, dtype, shape))
            data = t.detach().contiguous().reshape(-1).view(torch.uint8).numpy()
            f.write(memoryview(data))
            if on_tensor is not None:
                on_tensor(data.nbytes)
            del t, data
    os.replace(tmp, path)


def plan_shards(entries: Sequence[Tuple[str, Shape]], itemsize: int, max_shard_bytes: int) -> List[List[Tuple[str, Shape]]]:
    """Greedy, order-preserving split into shards of at most max_shard_bytes (a bigger tensor gets its own)."""
    shards: List[List[Tuple[str, Shape]]] = [[]]
    size = 0
    for entry in entries:
        nbytes = math.prod(entry[1]) * itemsize
        if shards[-1] and size + nbytes > max_shard_bytes:
            shards.append([])
            size = 0
        shards[-1].append(entry)
        size += nbytes
    return shards


def write_checkpoint_files(directory: Path, entries: Sequence[Tuple[str, Shape]], dtype: torch.dtype,
                           produce: Callable[[str], torch.Tensor], max_shard_bytes: int,
                           on_tensor: Optional[Callable[[int], None]] = None) -> List[Path]:
    """model.safetensors, or model-0000k-of-0000n.safetensors + model.safetensors.index.json."""
    itemsize = torch.empty((), dtype=dtype).element_size()
    shards = plan_shards(entries, itemsize, max_shard_bytes)
    if len(shards) == 1:
        path = directory / SINGLE_NAME
        write_file(path, shards[0], dtype, produce, on_tensor)
        return [path]
    paths = []
    weight_map: Dict[str, str] = {}
    for k, shard in enumerate(shards, start=1):
        path = directory / ("model-%05d-of-%05d.safetensors" % (k, len(shards)))
        write_file(path, shard, dtype, produce, on_tensor)
        paths.append(path)
        weight_map.update({name: path.name for name, _ in shard})
    total = sum(math.prod(s) for _, s in entries) * itemsize
    with open(directory / INDEX_NAME, "w", encoding="utf-8") as f:
        json.dump({"metadata": {"total_size": total}, "weight_map": dict(sorted(weight_map.items()))}, f, indent=2)
        f.write("\n")
    return paths
