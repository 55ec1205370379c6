"""DICOM RLE Lossless (PS3.5 Annex G) frame decoding that never produces more than the frame.

pydicom's RLE decoders (2.4 and 3.0) grow a bytearray until a segment's data runs out: a replicate
run turns 2 input bytes into up to 128 output bytes, so a 64 MB upload could make 4 GB in a Python
loop. This decoder stops each segment at Rows x Columns bytes.
"""
from __future__ import annotations

import struct
from typing import List

import numpy as np


class RLEError(ValueError):
    """The RLE frame does not match PS3.5 Annex G or the image attributes."""


def _segment_offsets(frame: bytes, n_expected: int) -> List[int]:
    """G.5: a 64-byte header of 16 little-endian uint32: segment count, then up to 15 offsets."""
    if len(frame) < 64:
        raise RLEError("the RLE frame is shorter than its 64-byte header")
    header = struct.unpack("<16I", frame[:64])
    count = header[0]
    if count != n_expected:
        raise RLEError("the RLE frame has %d segments, the image attributes need %d" % (count, n_expected))
    offsets = list(header[1 : 1 + count])
    if offsets[0] != 64 or any(b < a for a, b in zip(offsets, offsets[1:])) or offsets[-1] > len(frame):
        raise RLEError("the RLE segment offsets are out of order or past the end of the frame")
    return offsets + [len(frame)]


def _decode_segment(src: bytes, size: int) -> bytes:
    """G.3.2 PackBits: n in 0..127 copies n+1 literal bytes, n in 129..255 repeats the next byte 257-n times."""
    out = bytearray()
    pos, end = 0, len(src)
    while len(out) < size and pos < end:
        n = src[pos]
        pos += 1
        if n < 128:
            out += src[pos : pos + n + 1]
            pos += n + 1
        elif n > 128:
            out += src[pos : pos + 1] * (257 - n)
            pos += 1
        # n == 128 is a no-op (G.3.2)
    if len(out) < size:
        raise RLEError("an RLE segment decodes to %d bytes, the image needs %d (truncated data?)" % (len(out), size))
    return bytes(out[:size])


def decode_rle_frame(
    frame: bytes, rows: int, columns: int, samples: int, bits_allocated: int, signed: bool
) -> np.ndarray:
    """One RLE frame as (rows, columns) or (rows, columns, samples), native byte order.

    G.2: one segment per byte of each sample, most significant byte first; samples are stored
    plane by plane (red segments, then green, then blue).
    """
    if bits_allocated not in (8, 16, 32):
        raise RLEError("RLE pixel data with %d bits allocated is not supported" % bits_allocated)
    n_bytes = bits_allocated // 8
    offsets = _segment_offsets(frame, samples * n_bytes)
    size = rows * columns
    planes = np.empty((samples, size, n_bytes), dtype=np.uint8)
    for seg in range(samples * n_bytes):
        sample, byte = divmod(seg, n_bytes)
        decoded = _decode_segment(frame[offsets[seg] : offsets[seg + 1]], size)
        planes[sample, :, byte] = np.frombuffer(decoded, dtype=np.uint8)
    kind = "i" if signed else "u"
    values = planes.view(">%s%d" % (kind, n_bytes))[..., 0].astype("=%s%d" % (kind, n_bytes))
    values = values.reshape(samples, rows, columns)
    return values[0] if samples == 1 else np.ascontiguousarray(values.transpose(1, 2, 0))
