"""Suite-wide fixtures and guards."""
from __future__ import annotations

import os
import sys

import pytest


def pytest_sessionstart(session: pytest.Session) -> None:
    # The Python 3.8 run stands in for the Jetson image, which carries no PyTorch: if torch were
    # importable there, torch-dependent tests would run and prove nothing about the runtime.
    if os.environ.get("TINYLLAVA_PY38_RUN") == "1":
        assert sys.version_info[:2] == (3, 8), "TINYLLAVA_PY38_RUN set on Python %s" % sys.version.split()[0]
        try:
            import torch  # noqa: F401
        except ImportError:
            return
        raise pytest.UsageError("torch is importable in the Python 3.8 venv; it must stay torch-free")


@pytest.fixture(scope="session")
def tiny_checkpoint(tmp_path_factory: pytest.TempPathFactory):
    """A random `tiny` checkpoint in the llava layout (needs torch)."""
    pytest.importorskip("torch")
    from models.checkpoint.writer import make_checkpoint

    return make_checkpoint(tmp_path_factory.mktemp("tiny-ckpt") / "ckpt", "tiny", "llava", seed=0, progress=False)


@pytest.fixture(scope="session")
def tiny_bundle(tiny_checkpoint, tmp_path_factory: pytest.TempPathFactory):
    """`tiny_checkpoint` exported to an fp32 bundle with a 128-token context (needs torch)."""
    from engine_build.export import export_bundle

    return export_bundle(str(tiny_checkpoint), str(tmp_path_factory.mktemp("tiny-bundle") / "bundle"),
                         max_context=128)
