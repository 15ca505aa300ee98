"""Module structure: no import cycles among fedmm's modules, every module imports in a fresh
interpreter, and only the Flower app modules import ``flwr`` (``fedmm.engines.flower`` promises so)."""
from __future__ import annotations

import ast
import importlib.util
import json
import subprocess
import sys
from pathlib import Path

ROOTS = ("fedmm", "fedmm.cli", "fedmm.kernels")   # the last two are installed from cli/ and kernels/
FLOWER_APP = ("fedmm.engines.flower.client_app", "fedmm.engines.flower.exchange", "fedmm.engines.flower.records",
              "fedmm.engines.flower.server_app", "fedmm.engines.flower.worker")
OPTIONAL = {"fedmm.kernels": "triton", **{name: "flwr" for name in FLOWER_APP}}   # module tree -> what it needs


def modules() -> dict[str, Path]:
    """Every module of the installed fedmm packages: dotted name -> source file."""
    found: dict[str, Path] = {}
    for root in ROOTS:
        for folder in importlib.util.find_spec(root).submodule_search_locations:
            for path in sorted(Path(folder).rglob("*.py")):
                parts = path.relative_to(folder).with_suffix("").parts
                found.setdefault(".".join((root, *(parts[:-1] if parts[-1] == "__init__" else parts))), path)
    return found


def imported(name: str, path: Path, known: dict[str, Path]) -> set[str]:
    """The fedmm modules ``name`` imports anywhere in its source (an import inside a function
    closes a cycle as surely as one at the top, only later)."""
    package = name.split(".") if path.name == "__init__.py" else name.split(".")[:-1]
    out = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            out.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                base = ".".join(package[:len(package) - node.level + 1] + ([base] if base else []))
            out.update(f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names)
    return (out & set(known)) - {name}


def cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One closed path per back edge of a depth-first search of ``graph`` (empty: no cycle)."""
    state: dict[str, int] = {}   # 1 = on the current path, 2 = done
    path: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                found.append(path[path.index(nxt):] + [nxt])
            elif nxt not in state:
                visit(nxt)
        path.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)
    return found


def test_cycle_finder_finds_a_cycle():
    assert cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]
    assert cycles({"a": {"b", "c"}, "b": {"c"}, "c": set()}) == []


def test_no_import_cycles_between_fedmm_modules():
    known = modules()
    graph = {name: imported(name, path, known) for name, path in known.items()}
    assert {"fedmm.engines.loop", "fedmm.cli.app", "fedmm.engines.flower.launch"} <= set(graph)
    assert "fedmm.engines.loop" in graph["fedmm.engines.files"]                 # the parser sees real edges
    assert "fedmm.engines.flower" in graph["fedmm.engines.flower.launch"]       # (from a package's __init__ too)
    found = cycles(graph)
    assert not found, "import cycles:\n" + "\n".join(" -> ".join(c) for c in found)


_CHILD = """
import importlib, json, sys
rest, flower_app = json.loads(sys.stdin.read())
import fedmm.engines.flower, fedmm.engines.flower.launch
out = {"flwr_after_flower": "flwr" in sys.modules, "failed": {}}


def load(names):
    for name in names:
        try:
            importlib.import_module(name)
        except Exception as exc:
            out["failed"][name] = repr(exc)


load(rest)
out["flwr_after_rest"] = "flwr" in sys.modules
load(flower_app)
print(json.dumps(out))
"""


def test_every_module_imports_and_only_the_flower_apps_import_flwr():
    """One fresh interpreter: ``fedmm.engines.flower`` and its launcher first (no ``flwr``), then
    every other module (still no ``flwr``), then the Flower app modules; none fails to import.
    Modules whose optional dependency is not installed are left out (triton, flwr)."""
    def available(name: str) -> bool:
        need = next((pkg for tree, pkg in OPTIONAL.items() if name == tree or name.startswith(tree + ".")), None)
        return need is None or importlib.util.find_spec(need) is not None

    names = [n for n in sorted(modules()) if available(n)]
    rest, flower_app = [n for n in names if n not in FLOWER_APP], [n for n in names if n in FLOWER_APP]
    proc = subprocess.run([sys.executable, "-P", "-c", _CHILD], input=json.dumps([rest, flower_app]), text=True,
                          capture_output=True, timeout=600)
    assert proc.returncode == 0, proc.stderr[-3000:]
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    assert out["failed"] == {}
    assert out["flwr_after_flower"] is False, "importing fedmm.engines.flower (or its launcher) imports flwr"
    assert out["flwr_after_rest"] is False, "a module outside the Flower apps imports flwr"
    assert len(rest) > 50


FILE_IO = {"pathlib", "shutil", "tempfile", "os", "safetensors", "safetensors.numpy"}
IO_NAMES_ALLOWED = {"MessageError", "short_repr"}   # fedmm.io's error type and its formatter: no I/O


def test_the_algorithm_package_does_no_file_io():
    """fedmm.federated gets arrays and returns messages: it opens no file and imports nothing that
    reads or writes them (engines own the disk: fedmm.engines.wire, fedmm.engines.store)."""
    found = []
    for name, path in modules().items():
        if not name.startswith("fedmm.federated"):
            continue
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, ast.Import):
                found += [(name, a.name) for a in node.names if a.name in FILE_IO]
            elif isinstance(node, ast.ImportFrom) and node.module in FILE_IO:
                found.append((name, node.module))
            elif isinstance(node, ast.ImportFrom) and node.module == "fedmm.io":
                found += [(name, f"fedmm.io.{a.name}") for a in node.names if a.name not in IO_NAMES_ALLOWED]
            elif isinstance(node, ast.Call) and isinstance(node.func, ast.Name) and node.func.id == "open":
                found.append((name, "open()"))
    assert not found, found
