"""models/ has no import cycle: every `import models.x` / `from models.x import y`, at module level
or inside a function, is an edge; a cycle is two modules that need each other (issue 9 found
checkpoint/tokenizer_files <-> tokenizer_build)."""
from __future__ import annotations

import ast
from pathlib import Path
from typing import Dict, List, Set

ROOT = Path(__file__).resolve().parents[2]


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def import_graph(package: str = "models") -> Dict[str, Set[str]]:
    """module -> the modules of `package` it imports (a `from pkg import name` naming a submodule
    is an edge to that submodule, else to the package itself)."""
    files = {_module_name(p): p for p in (ROOT / package).rglob("*.py")}
    graph: Dict[str, Set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets: List[str] = []
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                targets = [node.module + "." + a.name if node.module + "." + a.name in files else node.module
                           for a in node.names]
            graph[name].update(t for t in targets if t in files and t != name)
    return graph


def cycles(graph: Dict[str, Set[str]]) -> List[List[str]]:
    """Each cycle found by a depth-first walk, as the path that closes it."""
    found: List[List[str]] = []
    state: Dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(node: str, path: List[str]) -> None:
        state[node] = 1
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [node, nxt] if nxt in path else [node, nxt])
            elif nxt not in state:
                visit(nxt, path + [node])
        state[node] = 2

    for start in sorted(graph):
        if start not in state:
            visit(start, [])
    return found


def test_models_has_no_import_cycle() -> None:
    graph = import_graph("models")
    assert "models.checkpoint.tokenizer_files" in graph and len(graph) > 20  # the walk saw the package
    assert cycles(graph) == []


def test_the_walk_finds_the_cycle_issue_9_reported() -> None:
    old = {"models.checkpoint.tokenizer_files": {"models.tokenizer_build", "models.checkpoint.errors"},
           "models.tokenizer_build": {"models.checkpoint.tokenizer_files", "models.processor.templates"},
           "models.checkpoint.errors": set(), "models.processor.templates": set()}
    assert cycles(old) == [["models.checkpoint.tokenizer_files", "models.tokenizer_build",
                            "models.checkpoint.tokenizer_files"]]
    assert cycles({"a": {"b"}, "b": {"c"}, "c": set()}) == []
