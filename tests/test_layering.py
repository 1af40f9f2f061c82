"""The package layout is the pipeline: lower layers never import higher ones.

Every `import` of every module counts, also those inside functions (synscope imports lazily to
keep start-up short, and a lazy import up the stack is still a cycle in the design).
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

PACKAGE = Path(__file__).resolve().parent.parent / "synscope"

# Low to high. A module may import synscope modules of its own layer or of a lower one.
LAYERS: dict[str, int] = {
    "core": 0,  # records and definitions every stage shares
    "capture": 1,  # libpcap filters and live sockets (ctypes)
    "read": 2,  # source -> decode -> track -> analyse -> verdict -> findings; compiled
    "probe": 3,  # builds and sends probes, feeds what it captures into read
    "render": 4,  # words and tables for people
    "watch": 5,  # the live loop, prints with render
    "lab": 6,  # namespace sandboxes and the demo
    "cli": 7,  # one module per command
}

# Third-party packages and where they may be imported. The read path stays free of scapy (about
# a second of start-up and 100x slower dissection) and of click/tabulate (presentation).
ALLOWED_THIRD_PARTY: dict[str, set[str]] = {
    "scapy": {"probe"},
    "click": {"cli"},
    "tabulate": {"render"},
}


def _layer_of(module: str) -> str | None:
    parts = module.split(".")
    if parts[0] != "synscope" or len(parts) < 2:
        return None
    return parts[1] if parts[1] in LAYERS else None


def _modules() -> list[tuple[str, Path]]:
    found = []
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__init__":
            parts.pop()
        found.append((".".join(parts), path))
    return found


def _imports(path: Path, module: str) -> list[tuple[int, str]]:
    """(line, imported module) for every import statement in the file."""
    tree = ast.parse(path.read_text(encoding="utf-8"))
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    out: list[tuple[int, str]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            out.extend((node.lineno, alias.name) for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                target = ".".join(base + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            out.append((node.lineno, target))
            # `from synscope import fmt` names a module through its package
            out.extend((node.lineno, f"{target}.{alias.name}") for alias in node.names if target == "synscope")
    return out


def test_every_module_sits_in_a_known_layer() -> None:
    """A new top-level package must be given a place in LAYERS (and in docs/architecture.md)."""
    loose = [m for m, _ in _modules() if m not in ("synscope", "synscope.__main__") and _layer_of(m) is None]
    assert loose == []


@pytest.mark.parametrize("module,path", _modules(), ids=[m for m, _ in _modules()])
def test_imports_go_down_only(module: str, path: Path) -> None:
    own = _layer_of(module)
    if own is None:
        return  # synscope/__init__ and __main__ sit above everything
    wrong = []
    for line, target in _imports(path, module):
        top = target.split(".")[0]
        if top == "synscope":
            layer = _layer_of(target)
            if layer is not None and LAYERS[layer] > LAYERS[own]:
                wrong.append(f"line {line}: {target} ({layer}) from {own}")
        elif top in ALLOWED_THIRD_PARTY and own not in ALLOWED_THIRD_PARTY[top]:
            wrong.append(f"line {line}: {top} imported in {own}/")
    assert wrong == [], f"{module} imports upwards or outside its allowance"


def test_no_cycles_between_modules() -> None:
    """No two modules import each other, directly or around a loop."""
    graph: dict[str, set[str]] = {}
    names = {m for m, _ in _modules()}
    for module, path in _modules():
        deps = set()
        for _, target in _imports(path, module):
            while target and target not in names:
                target = target.rpartition(".")[0]
            if target and target != module and target != "synscope":
                deps.add(target)
        graph[module] = deps
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> None:
        state[node] = 1
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = stack[stack.index(dep) :] + [dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep)
        stack.pop()
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node)


def test_layering_test_sees_an_upward_import(tmp_path: Path) -> None:
    """The checker itself: an upward import in a read module is found."""
    bad = tmp_path / "x.py"
    bad.write_text("def f():\n    from synscope.render.text import write_connection\n")
    found = [t for _, t in _imports(bad, "synscope.read.x")]
    assert "synscope.render.text" in found
    assert LAYERS[_layer_of("synscope.render.text") or ""] > LAYERS["read"]
