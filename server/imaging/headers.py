"""Width and height read from an encoded stream's header, before any decoder allocates pixels.

PNG and JPEG uploads, and the JPEG / JPEG-LS / JPEG 2000 frames inside compressed DICOM, are
checked against the caps with these readers; a decoder would otherwise size its buffer from
the same header fields. Each returns (width, height), or None when no header is found.
"""
from __future__ import annotations

import struct
from typing import Optional, Tuple

PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
JPEG_SOI = b"\xff\xd8"
# ISO/IEC 15444-1 A.4.1 / A.5.1: a codestream opens with SOC immediately followed by SIZ.
_J2K_SOC_SIZ = b"\xff\x4f\xff\x51"
# ITU-T T.81 Table B.1: SOF0-SOF15 except DHT (C4), JPG (C8), DAC (CC); ITU-T T.87: SOF55 (F7).
_JPEG_SOF = frozenset(range(0xC0, 0xD0)) - {0xC4, 0xC8, 0xCC} | {0xF7}
# T.81 B.1.1.2: TEM and RST0-7 stand alone (no length field); SOI too.
_JPEG_STANDALONE = frozenset([0x01]) | frozenset(range(0xD0, 0xD9))
# Markers before the frame header are a few APPn/DQT/DHT segments; a stream that has not
# reached SOF after this many steps is refused rather than walked to its end.
_JPEG_MAX_STEPS = 100000
# A JPEG 2000 codestream inside a JP2 wrapper sits after a few short boxes.
_J2K_SEARCH_BYTES = 65536


def png_size(data: bytes) -> Optional[Tuple[int, int]]:
    """PNG (ISO/IEC 15948 11.2.2): IHDR is the first chunk, width then height, big-endian."""
    if len(data) < 24 or not data.startswith(PNG_SIGNATURE) or data[12:16] != b"IHDR":
        return None
    width, height = struct.unpack(">II", data[16:24])
    return width, height


def jpeg_size(data: bytes) -> Optional[Tuple[int, int]]:
    """JPEG / JPEG-LS: walk the marker segments from SOI to the first frame header (SOFn)."""
    if not data.startswith(JPEG_SOI):
        return None
    pos, end = 2, len(data)
    for _ in range(_JPEG_MAX_STEPS):
        if pos + 4 > end or data[pos] != 0xFF:
            return None
        marker = data[pos + 1]
        if marker == 0xFF:  # fill byte before a marker
            pos += 1
            continue
        if marker in _JPEG_STANDALONE:
            pos += 2
            continue
        if marker in (0xD9, 0xDA):  # EOI or SOS before any frame header
            return None
        if marker in _JPEG_SOF:
            if pos + 9 > end:
                return None
            height, width = struct.unpack(">HH", data[pos + 5 : pos + 9])  # after Lf(2) and P(1)
            return width, height
        (length,) = struct.unpack(">H", data[pos + 2 : pos + 4])
        if length < 2:
            return None
        pos += 2 + length
    return None


def j2k_size(data: bytes) -> Optional[Tuple[int, int]]:
    """JPEG 2000 codestream (bare or JP2-wrapped): image area from SIZ, Xsiz - XOsiz by Ysiz - YOsiz."""
    at = data.find(_J2K_SOC_SIZ, 0, _J2K_SEARCH_BYTES)
    if at < 0 or at + 24 > len(data):
        return None
    # SIZ: marker, Lsiz(2), Rsiz(2), Xsiz(4), Ysiz(4), XOsiz(4), YOsiz(4)
    xsiz, ysiz, xosiz, yosiz = struct.unpack(">IIII", data[at + 8 : at + 24])
    if xosiz > xsiz or yosiz > ysiz:
        return None
    return xsiz - xosiz, ysiz - yosiz
