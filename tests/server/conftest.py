"""Fixtures of the service tests (test_service_*.py): real servers in subprocesses."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Iterator

import pytest

from server.runtime.pipeline import BundlePipeline
from tests.server.service_process import DEFAULT_BUNDLE, ServerProcess, serving

# The shared server: small caps so the over-cap cases stay small and quick.
MAIN_SERVER_ENV = {
    "TINYLLAVA_MAX_BODY_BYTES": str(1024 * 1024),
    "TINYLLAVA_MAX_QUESTION_CHARS": "2000",
    "TINYLLAVA_MAX_TOKENS_CAP": "64",
    "TINYLLAVA_DEFAULT_MAX_TOKENS": "16",
    "TINYLLAVA_MAX_QUEUE": "32",
}


@pytest.fixture(scope="session")
def service_log_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("service-logs")


@pytest.fixture(scope="session")
def main_server(service_log_dir: Path) -> Iterator[ServerProcess]:
    """One server for the API, bad-input and patient-data tests (nothing here changes its state)."""
    with serving(ServerProcess(service_log_dir, MAIN_SERVER_ENV)) as server:
        yield server


def start_server(log_dir: Path, bundle: Path = DEFAULT_BUNDLE, **settings: object) -> ServerProcess:
    """A dedicated server; keyword settings become TINYLLAVA_<NAME> variables."""
    env = {"TINYLLAVA_" + k.upper(): str(v) for k, v in settings.items()}
    return ServerProcess(log_dir, env, bundle=bundle)


@pytest.fixture(scope="module")
def model_id() -> str:
    """The demo bundle's model name, as the servers of these tests report it."""
    with open(DEFAULT_BUNDLE / "manifest.json") as f:
        return str(json.load(f)["model"]["name"])


@pytest.fixture(scope="module")
def reference() -> BundlePipeline:
    """The runtime's own path on the demo bundle, in this process: the answers a server must give."""
    return BundlePipeline(DEFAULT_BUNDLE)
