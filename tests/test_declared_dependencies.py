"""Every third-party package that server/ and the torch-free processor import is a declared runtime
dependency in pyproject.toml (the Jetson image installs exactly those), found by walking imports."""
from __future__ import annotations

import ast
import re
import sys
from pathlib import Path
from typing import Set

import pytest

if sys.version_info < (3, 11):
    pytest.skip("tomllib, sys.stdlib_module_names and packages_distributions need Python 3.11",
                allow_module_level=True)

import tomllib  # noqa: E402
from importlib.metadata import packages_distributions  # noqa: E402

ROOT = Path(__file__).resolve().parents[1]
RUNTIME = [ROOT / "server", ROOT / "models" / "processor", ROOT / "models" / "config.py", ROOT / "models" / "probes.py"]
FIRST_PARTY = {"server", "models", "engine_build", "tests"}
# Imported only inside functions of optional commands, each in the extra named beside it.
OPTIONAL = {"tqdm": "eval", "matplotlib": "eval", "torch": "export", "transformers": "test", "jtop": "jetson",
            "cuda": "tensorrt"}
# Required, but installed by choice: ONNX Runtime through the cpu / gpu extra or NVIDIA's wheel on a Jetson (one of
# them always), TensorRT from the system's bindings. Not in [project].dependencies, may be imported at module level.
INSTALL_CHOICES = {"onnxruntime": "cpu", "tensorrt": "system"}


def _norm(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def _imported(module_level_only: bool) -> Set[str]:
    names: Set[str] = set()
    files = [p for r in RUNTIME for p in ([r] if r.is_file() else r.rglob("*.py"))]
    for path in files:
        tree = ast.parse(path.read_text(encoding="utf-8"))
        nodes = tree.body if module_level_only else list(ast.walk(tree))
        for node in nodes:
            if isinstance(node, ast.Import):
                names.update(a.name.split(".")[0] for a in node.names)
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                names.add(node.module.split(".")[0])
    return {n for n in names if n not in FIRST_PARTY and n not in sys.stdlib_module_names and n != "__future__"}


def _declared() -> Set[str]:
    deps = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["dependencies"]
    return {_norm(re.split(r"[<>=!~;\[ ]", d, maxsplit=1)[0]) for d in deps}


def test_every_runtime_import_is_a_declared_dependency() -> None:
    dists = packages_distributions()
    declared = _declared()
    missing = {}
    for name in _imported(module_level_only=False) - set(OPTIONAL) - set(INSTALL_CHOICES):
        if not {_norm(d) for d in dists.get(name, [name])} & declared:
            missing[name] = dists.get(name)
    assert not missing, "imported by server/ or the processor but not in [project].dependencies: %s" % missing


def test_optional_packages_are_not_imported_at_module_level() -> None:
    assert not _imported(module_level_only=True) & set(OPTIONAL)
    assert "tqdm" not in _declared()  # in the export and eval extras only


def test_each_optional_import_names_an_extra_that_exists() -> None:
    extras = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))["project"]["optional-dependencies"]
    assert not {extra for extra in OPTIONAL.values() if extra not in extras}
