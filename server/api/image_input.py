"""Image bytes from what a request carries: base64, a data URL, or an allow-listed http(s) URL.

Remote URLs are refused unless they lie under a configured prefix, compared as normalised URLs
(scheme, host, port, and the path's segments after percent-decoding and resolving `.` and `..`), so
`.../images/../secret` and `.../images/%2e%2e/secret` do not pass; the URL fetched is the normalised
one, so the server asks for exactly what was checked. A fetch has a timeout and a size cap, follows
no redirect (a redirect could leave the allow-list), and runs in a small pool of its own threads: a
slow image server ties up those, never the threads that decode images. The URL itself is never
logged or echoed: it may name a patient.
"""
from __future__ import annotations

import asyncio
import base64
import binascii
import re
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Dict, List, NamedTuple, Optional, Tuple

from server.api.errors import APIError
from server.service.settings import Settings

_WHITESPACE = re.compile(r"\s+")
_DEFAULT_PORTS = {"http": 80, "https": 443}
_POOLS: Dict[int, ThreadPoolExecutor] = {}  # remote fetch threads, by pool size
_DATA_URL = re.compile(r"^data:([\w.+-]+/[\w.+-]+)?((?:;[\w.+-]+=[\w.+-]+)*);base64,", re.IGNORECASE)


def decode_base64(text: str, max_bytes: int, param: str = "image") -> bytes:
    """Strict base64 (standard or URL-safe alphabet; whitespace ignored); 413 before decoding a too-long one."""
    data = _WHITESPACE.sub("", text)
    if not data:
        raise APIError(400, "%s is empty: send the image file as base64 or a data URL" % param, "image_missing",
                       param=param)
    if len(data) // 4 * 3 > max_bytes + 3:
        raise APIError(413, "the image is about %d bytes; the limit is %d: send a smaller or downscaled image"
                       % (len(data) // 4 * 3, max_bytes), "image_too_large", param=param)
    if "-" in data or "_" in data:
        data = data.replace("-", "+").replace("_", "/")
    try:
        return base64.b64decode(data + "=" * (-len(data) % 4), validate=True)
    except (binascii.Error, ValueError):
        raise APIError(400, "%s is not valid base64: encode the file's bytes (e.g. `base64 -w0 ct.dcm`) or send a "
                       "data URL (data:image/png;base64,...)" % param, "invalid_base64", param=param) from None


def from_data_url(url: str, max_bytes: int, param: str) -> bytes:
    m = _DATA_URL.match(url)
    if m is None:
        raise APIError(400, "%s is not a base64 data URL: write it as data:<type>;base64,<data>" % param,
                       "invalid_image_url", param=param)
    return decode_base64(url[m.end():], max_bytes, param)


def fetch_remote(url: str, prefixes: List[str], max_bytes: int, timeout: float, param: str) -> bytes:
    """GET an allow-listed URL (blocking: run it in a thread)."""
    if not prefixes:
        raise APIError(400, "remote image URLs are off on this server: send the image inline as a data URL "
                       "(data:image/png;base64,...)", "remote_image_refused", param=param)
    url = allowed_url(url, prefixes)
    if url is None:
        raise APIError(400, "this image URL is not under a prefix the server allows (TINYLLAVA_REMOTE_IMAGE_PREFIXES):"
                       " send the image inline as a data URL", "remote_image_refused", param=param)
    opener = urllib.request.build_opener(_NoRedirect())
    try:
        with opener.open(urllib.request.Request(url, method="GET"), timeout=timeout) as resp:
            data = resp.read(max_bytes + 1)
    except urllib.error.HTTPError as e:
        raise APIError(400, "fetching the image URL failed with HTTP %d" % e.code, "image_fetch_failed",
                       param=param) from None
    except (urllib.error.URLError, OSError, ValueError) as e:
        raise APIError(400, "fetching the image URL failed (%s)" % type(e).__name__, "image_fetch_failed",
                       param=param) from None
    if len(data) > max_bytes:
        raise APIError(413, "the image at that URL is over the limit of %d bytes" % max_bytes, "image_too_large",
                       param=param)
    return data


class _Url(NamedTuple):
    scheme: str
    host: str
    port: int
    segments: Tuple[str, ...]  # decoded, with . and .. resolved
    query: str


def _normalise(url: str) -> Optional[_Url]:
    """The URL's parts as a server would resolve them; None for one that has no safe reading."""
    try:
        parts = urllib.parse.urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in _DEFAULT_PORTS or not parts.hostname or parts.username is not None or "\\" in parts.path:
        return None
    if re.search(r"%(2f|5c|00)", parts.path, re.IGNORECASE):
        return None  # an encoded '/', '\\' or NUL: servers disagree on what it means
    segments: List[str] = []
    raw = parts.path.split("/")[1:] if parts.path else []
    for i, seg in enumerate(raw):
        try:
            seg = urllib.parse.unquote(seg, errors="strict")
        except UnicodeDecodeError:
            return None
        if seg == "..":
            if segments:
                segments.pop()
        elif seg != ".":
            segments.append(seg)
        if seg in (".", "..") and i == len(raw) - 1:
            segments.append("")  # "a/b/.." names the directory "a/"
    return _Url(scheme, parts.hostname.lower(), port or _DEFAULT_PORTS[scheme], tuple(segments), parts.query)


def _under(url: _Url, prefix: _Url) -> bool:
    # A prefix ends in '/' (settings check), so its last segment is "": the URL must have every
    # segment before it, and at least one more.
    dirs = prefix.segments[:-1]
    return ((url.scheme, url.host, url.port) == (prefix.scheme, prefix.host, prefix.port)
            and url.segments[:len(dirs)] == dirs and len(url.segments) > len(dirs))


def allowed_url(url: str, prefixes: List[str]) -> Optional[str]:
    """The normalised form of `url` when it lies under one of `prefixes`, else None."""
    parsed = _normalise(url)
    if parsed is None:
        return None
    for prefix in prefixes:
        p = _normalise(prefix)
        if p is not None and _under(parsed, p):
            default = _DEFAULT_PORTS[parsed.scheme] == parsed.port
            netloc = parsed.host if default else "%s:%d" % (parsed.host, parsed.port)
            if ":" in parsed.host:
                netloc = "[%s]" % parsed.host if default else "[%s]:%d" % (parsed.host, parsed.port)
            path = "/" + "/".join(urllib.parse.quote(s, safe="") for s in parsed.segments)
            return urllib.parse.urlunsplit((parsed.scheme, netloc, path, parsed.query, ""))
    return None


def _fetch_pool(workers: int) -> ThreadPoolExecutor:
    pool = _POOLS.get(workers)
    if pool is None:
        pool = _POOLS[workers] = ThreadPoolExecutor(workers, thread_name_prefix="image-fetch")
    return pool


async def image_bytes(settings: Settings, value: str, param: str, bare_base64: bool = True) -> bytes:
    """The bytes an `image` field or `image_url.url` names: a data URL, bare base64, or an allowed URL."""
    s = settings
    if is_remote(value):
        loop = asyncio.get_event_loop()
        return await loop.run_in_executor(_fetch_pool(s.remote_image_workers), fetch_remote, value,
                                          s.remote_image_prefixes, s.max_image_bytes, s.remote_image_timeout, param)
    if value[:5].lower() == "data:":
        return from_data_url(value, s.max_image_bytes, param)
    if not bare_base64:
        raise APIError(400, "%s must be a data URL (data:image/png;base64,...) or an http(s) URL" % param,
                       "invalid_image_url", param=param)
    return decode_base64(value, s.max_image_bytes, param)


def is_remote(url: str) -> bool:
    return url[:8].lower().startswith(("http://", "https://"))


class _NoRedirect(urllib.request.HTTPRedirectHandler):
    def redirect_request(self, *args: Any, **kwargs: Any) -> None:
        return None  # urllib then raises HTTPError for the 3xx


__all__ = ["allowed_url", "decode_base64", "fetch_remote", "from_data_url", "image_bytes", "is_remote"]
