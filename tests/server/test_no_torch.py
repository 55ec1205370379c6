"""Nothing under server/ imports torch or transformers: the Jetson image carries neither. Nor
does any server module import tqdm when loaded (it is in the export and eval extras only).

A subprocess installs an import hook that raises on torch/transformers, then imports every module
of the server package, builds the CLI parser (which imports every command module) and answers a
question from the embedded bundle. Runs on Python 3.8 too.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]

SCRIPT = textwrap.dedent("""
    import importlib, pkgutil, sys

    class Forbid:
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("torch", "transformers", "tqdm"):
                raise ImportError("forbidden import: " + name)
            return None

    sys.meta_path.insert(0, Forbid())
    import server
    names = [m.name for m in pkgutil.walk_packages(server.__path__, "server.") if m.name != "server.__main__"]
    for name in names:
        importlib.import_module(name)
    from server.cli import build_parser
    build_parser()
    from server.runtime.pipeline import BundlePipeline
    from server.service.settings import DEFAULT_BUNDLE
    out = BundlePipeline(DEFAULT_BUNDLE).ask(open(sys.argv[1], "rb").read(), "Is there a fracture?", max_tokens=4)
    assert len(out["output_token_ids"]) >= 1
    assert not [m for m in sys.modules if m.split(".")[0] in ("torch", "transformers", "tqdm")]
    print("ok", len(names))
""")


def test_server_package_imports_no_torch() -> None:
    image = ROOT / "models" / "assets" / "sample_ct.png"
    proc = subprocess.run([sys.executable, "-c", SCRIPT, str(image)], cwd=str(ROOT), capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr[-3000:]
    ok, count = proc.stdout.split()[-2:]
    assert ok == "ok" and int(count) > 30  # every server module was imported
