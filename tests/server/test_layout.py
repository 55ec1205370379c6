"""server/ is laid out by concern: packages, plus the app factory, the CLI map and `python -m server`."""
from __future__ import annotations

from pathlib import Path

SERVER = Path(__file__).resolve().parents[2] / "server"
TOP_LEVEL_MODULES = {"__init__.py", "__main__.py", "app.py", "cli.py"}


def test_server_top_level_is_packages_and_entry_points() -> None:
    loose = sorted(p.name for p in SERVER.glob("*.py") if p.name not in TOP_LEVEL_MODULES)
    assert not loose, "put these modules in the package of their concern (imaging/, service/, bench/, ...): %s" % loose
    packages = {p.name for p in SERVER.iterdir() if (p / "__init__.py").is_file()}
    assert {"api", "bench", "commands", "eval", "imaging", "runtime", "service"} <= packages
