"""TensorRT optimization profiles derived from the bundle manifest.

The decoder's only dynamic axis is `new_tokens` (S); the KV cache is static at max_context (the
bundle contract). Two profiles: decode (S = 1, what every generated token runs) and prefill
(1 <= S <= the runtime's prefill chunk). The runtime keeps one execution context per profile.
Graphs with only static inputs (vision) need no profile.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Dict, List, Tuple

from server.runtime.bundle import GraphSpec, Manifest

Shape = Tuple[int, ...]
DEFAULT_PREFILL_CHUNK = 128  # server/runtime/loader.py DEFAULT_PREFILL_CHUNK: the runtime never prefills more


@dataclass(frozen=True)
class Profile:
    name: str
    shapes: Dict[str, Tuple[Shape, Shape, Shape]]  # input -> (min, opt, max)


def _shapes(spec: GraphSpec, axes: Dict[str, Tuple[int, int, int]]) -> Dict[str, Tuple[Shape, Shape, Shape]]:
    out = {}
    for t in spec.inputs:
        lo: List[int] = []
        opt: List[int] = []
        hi: List[int] = []
        for d in t.shape:
            if isinstance(d, int):
                lo.append(d), opt.append(d), hi.append(d)
            elif d in axes:
                a, b, c = axes[d]
                lo.append(a), opt.append(b), hi.append(c)
            else:
                raise ValueError("input %s has dynamic axis %r that no profile bounds: re-export the bundle" % (t.name, d))
        out[t.name] = (tuple(lo), tuple(opt), tuple(hi))
    return out


def graph_profiles(manifest: Manifest, graph: str, prefill_chunk: int = DEFAULT_PREFILL_CHUNK) -> List[Profile]:
    spec = manifest.graphs[graph]
    dynamic = any(not isinstance(d, int) for t in spec.inputs for d in t.shape)
    if not dynamic:
        return []
    if graph != "decoder":
        raise ValueError("graph %s has dynamic inputs; only the decoder's new_tokens axis is expected" % graph)
    chunk = max(1, min(prefill_chunk, manifest.max_context))
    return [Profile("decode", _shapes(spec, {"new_tokens": (1, 1, 1)})),
            Profile("prefill", _shapes(spec, {"new_tokens": (1, chunk, chunk)}))]
