"""`tinyllava-med serve`: the HTTP service (FastAPI on uvicorn) over one bundle.

Flags override TINYLLAVA_* environment variables (server/service/settings.py lists them all); without
--bundle the embedded synthetic-image demo bundle is served (not for clinical use).
"""
from __future__ import annotations

import argparse
from typing import Any, Dict

# flag dest -> settings field, for flags given on the command line (None = not given)
_FLAGS = ("bundle", "backend", "host", "port", "api_key_file", "max_concurrency", "max_queue", "request_timeout",
          "drain_timeout", "cors_origins", "remote_image_prefixes", "log_level")

# After the drain, connections still open get this long before uvicorn cancels them.
_GRACEFUL_S = 1.0


def add_arguments(p: argparse.ArgumentParser) -> None:
    p.add_argument("--bundle", help="bundle directory (default: the embedded synthetic-image demo bundle, not for clinical use)")
    p.add_argument("--backend", choices=("auto", "onnxruntime", "tensorrt"),
                   help="auto (default): the bundle's TensorRT plans if valid ones exist for this device "
                        "(tinyllava-med build-engines), else ONNX Runtime")
    p.add_argument("--host", help="address to listen on (default 127.0.0.1; 0.0.0.0 for every interface)")
    p.add_argument("--port", type=int, help="port (default 8000)")
    p.add_argument("--api-key-file", help="file with one API key per line; keys also come from TINYLLAVA_API_KEYS")
    p.add_argument("--max-concurrency", type=int, help="requests generating at once (default 1)")
    p.add_argument("--max-queue", type=int, help="requests waiting beyond those; more get 503 (default 8)")
    p.add_argument("--request-timeout", type=float, help="seconds from admission to the last token (default 120)")
    p.add_argument("--drain-timeout", type=float, help="seconds in-flight requests get on SIGTERM (default 30)")
    p.add_argument("--cors-origin", dest="cors_origins", action="append",
                   help="an origin allowed by CORS (repeat for more; default: CORS off)")
    p.add_argument("--allow-remote-image", dest="remote_image_prefixes", action="append", metavar="PREFIX",
                   help="fetch image URLs under this prefix, e.g. https://pacs.example/wado/ (repeat for more; "
                        "default: data URLs only)")
    p.add_argument("--log-level", choices=("debug", "info", "warning", "error"), help="default info")


def settings_from_args(args: argparse.Namespace) -> Any:
    from pydantic import ValidationError

    from server.service.settings import Settings, SettingsError

    given: Dict[str, Any] = {k: getattr(args, k) for k in _FLAGS if getattr(args, k, None) is not None}
    try:
        return Settings(**given)
    except ValidationError as e:
        lines = ["%s: %s" % (".".join(str(x) for x in err["loc"]), err["msg"]) for err in e.errors()]
        raise SettingsError("invalid settings: " + "; ".join(lines)) from None


def main(args: argparse.Namespace) -> int:
    import uvicorn

    from server.app import create_app
    from server.service.connections import deadline_protocol
    from server.service.draining import DrainingServer
    from server.service.json_logs import configure_logging

    settings = settings_from_args(args)
    configure_logging(settings.log_level)
    app = create_app(settings)
    config = uvicorn.Config(app, host=settings.host, port=settings.port, log_config=None, access_log=False,
                            log_level=settings.log_level, server_header=False, lifespan="on",
                            timeout_graceful_shutdown=_GRACEFUL_S, http=deadline_protocol(settings.header_timeout),
                            limit_concurrency=settings.max_connections)
    DrainingServer(config, app.state.service, settings.drain_timeout).run()
    return 0
