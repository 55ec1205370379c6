"""The service's settings: one pydantic-settings class, read from TINYLLAVA_* environment variables.

`tinyllava-med serve` flags override the environment (server/commands/serve.py). Secrets (API keys)
have no default: without one the service runs open, which suits a device on a private network.
"""
from __future__ import annotations

from pathlib import Path
from typing import List, Literal, Optional

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import BaseSettings, NoDecode, SettingsConfigDict
from typing_extensions import Annotated

from server.imaging.limits import ImageLimits

# The bundle served when none is given: the synthetic-image demo model, shipped in the package
# (server/assets/README.md; not for clinical use).
DEFAULT_BUNDLE = Path(__file__).resolve().parents[1] / "assets" / "default-bundle"

_MIB = 1024 * 1024
_LOG_LEVELS = ("debug", "info", "warning", "error", "critical")
CommaList = Annotated[List[str], NoDecode]  # "a,b" in the environment, a list in Python


class SettingsError(ValueError):
    """A setting cannot be used as given (an unreadable key file, a bad allow-list entry)."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="TINYLLAVA_", extra="ignore")

    bundle: Optional[Path] = Field(None, description="bundle directory; None serves the embedded default bundle")
    # auto: the bundle's TensorRT plans when valid ones exist for this device (build-engines), else ONNX Runtime
    backend: Literal["auto", "onnxruntime", "tensorrt"] = "auto"
    host: str = "127.0.0.1"
    port: int = Field(8000, ge=0, le=65535)
    api_keys: Optional[SecretStr] = Field(None, description="comma-separated API keys")
    api_key_file: Optional[Path] = Field(None, description="file with one API key per line ('#' comments)")

    # Admission: C requests generate at once (one KV cache each), Q more wait; the rest get 503.
    max_concurrency: int = Field(1, ge=1, le=64)
    max_queue: int = Field(8, ge=0, le=10000)
    request_timeout: float = Field(120.0, gt=0, description="seconds from admission to the last token")
    drain_timeout: float = Field(30.0, ge=0, description="seconds in-flight requests get to finish on SIGTERM")

    cors_origins: CommaList = Field(default_factory=list, description="origins allowed by CORS; none = CORS off")
    # Remote image_url fetches: only URLs under these prefixes (each ending in '/'); none = data URLs only.
    remote_image_prefixes: CommaList = Field(default_factory=list)
    remote_image_timeout: float = Field(10.0, gt=0)
    # Fetches run in their own threads, never in the pool that decodes images.
    remote_image_workers: int = Field(4, ge=1, le=64, description="remote image fetches at once")

    # Connections: a client that trickles its headers or body holds a socket, a task and (for a body)
    # a place in the queue; these bound how long and how many.
    header_timeout: float = Field(10.0, gt=0, description="seconds from connect (or the last response) to "
                                                          "a request's complete headers")
    body_timeout: float = Field(60.0, gt=0, description="seconds from a request's headers to its last body byte")
    max_connections: int = Field(64, ge=2, description="open connections; a request on one more gets 503")
    max_body_readers: int = Field(2, ge=1, description="request bodies read and parsed at once (memory bound)")

    # Caps on what a request may ask for, checked before any work.
    max_body_bytes: int = Field(48 * _MIB, ge=1024, description="request body, counted as it arrives")
    max_question_chars: int = Field(4000, ge=1)
    max_messages: int = Field(64, ge=1)
    max_tokens_cap: int = Field(1024, ge=1, description="the most tokens one request may ask for")
    default_max_tokens: int = Field(256, ge=1)
    max_image_bytes: int = Field(32 * _MIB, ge=1)
    max_image_pixels: int = Field(4096 * 4096, ge=1)
    max_image_side: int = Field(8192, ge=1)
    max_dicom_frames: int = Field(2048, ge=1)

    log_level: str = "info"

    # First start on a device (server/service/engines.py): build missing TensorRT engines for the bundle
    # before /ready turns 200 (the Jetson image sets it); never inside a request.
    build_engines: bool = False
    precision: str = Field("fp16", description="engine precision to build and serve: fp16 | int8")
    engine_builder: str = Field("engine_build.trt.build", description="module with engines_ready/build_engines")

    # Jetson telemetry (server/service/jetson.py): jtop's sampling interval and the jtop.service socket.
    jtop_interval: float = Field(0.5, gt=0, le=60)
    jtop_socket: Path = Path("/run/jtop.sock")

    # Testing knobs: simulate a slow device. Both 0 in production.
    warmup_delay: float = Field(0.0, ge=0, description="extra seconds before /ready turns 200")
    token_delay: float = Field(0.0, ge=0, description="extra seconds per generated token")
    # Testing knob: a gate the tests open and close. While this file exists, loading does not turn
    # /ready 200, and every generation pauses after each token that adds text and before it ends
    # (a cancel or timeout still stops it).
    hold_file: Optional[Path] = None

    @field_validator("cors_origins", "remote_image_prefixes", mode="before")
    @classmethod
    def _split(cls, value: object) -> object:
        if isinstance(value, str):
            return [part.strip() for part in value.split(",") if part.strip()]
        return value

    @field_validator("log_level")
    @classmethod
    def _check_level(cls, value: str) -> str:
        if value.lower() not in _LOG_LEVELS:
            raise ValueError("log level %r is not one of %s" % (value, ", ".join(_LOG_LEVELS)))
        return value.lower()

    @field_validator("precision")
    @classmethod
    def _check_precision(cls, value: str) -> str:
        if value not in ("fp16", "int8"):
            raise ValueError("precision %r is not fp16 or int8" % value)
        return value

    @field_validator("remote_image_prefixes")
    @classmethod
    def _check_prefixes(cls, value: List[str]) -> List[str]:
        for prefix in value:
            # "https://pacs.local" would also admit "https://pacs.local.evil.example/".
            if not prefix.startswith(("http://", "https://")) or not prefix.endswith("/") or prefix.count("/") < 3:
                raise ValueError("remote image prefix %r must be an http(s) URL ending in '/' after the host, "
                                 "e.g. https://pacs.example/images/" % prefix)
        return value

    @property
    def bundle_dir(self) -> Path:
        return self.bundle if self.bundle is not None else DEFAULT_BUNDLE

    @property
    def image_limits(self) -> ImageLimits:
        return ImageLimits(max_bytes=self.max_image_bytes, max_pixels=self.max_image_pixels,
                           max_side=self.max_image_side, max_dicom_frames=self.max_dicom_frames)

    def load_api_keys(self) -> List[str]:
        """Every configured key: the environment's list, then the key file's lines."""
        keys: List[str] = []
        if self.api_keys is not None:
            keys += [k.strip() for k in self.api_keys.get_secret_value().split(",") if k.strip()]
        if self.api_key_file is not None:
            try:
                text = self.api_key_file.read_text(encoding="utf-8")
            except OSError as e:
                raise SettingsError("cannot read the API key file %s (%s)" % (self.api_key_file, e.strerror)) from None
            lines = (line.strip() for line in text.splitlines())
            keys += [line for line in lines if line and not line.startswith("#")]
            if not keys:
                raise SettingsError("the API key file %s holds no key (one per line)" % self.api_key_file)
        return keys


__all__ = ["DEFAULT_BUNDLE", "Settings", "SettingsError"]
