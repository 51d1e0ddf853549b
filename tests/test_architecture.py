"""The import rules of docs/design.md sec. 1.3, read from the source: imports point one way, leaves stay leaves."""

from __future__ import annotations

import ast
from pathlib import Path

PKG = Path(__file__).resolve().parents[1] / "cmaudio"


def module_name(path: Path) -> str:
    parts = path.relative_to(PKG.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports_of(path: Path, *, top_level_only: bool) -> set[str]:
    """cmaudio modules `path` imports (module level only, or anywhere in the file)."""
    tree = ast.parse(path.read_text())
    nodes = tree.body if top_level_only else list(ast.walk(tree))
    out: set[str] = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("cmaudio"):
            for alias in node.names:  # `from cmaudio import checkpoint` imports the module cmaudio.checkpoint
                sub = f"{node.module}.{alias.name}"
                out.add(sub if (PKG.parent / Path(*sub.split("."))).with_suffix(".py").exists()
                        or (PKG.parent / Path(*sub.split("."))).is_dir() else node.module)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names if a.name.startswith("cmaudio"))
    return out


def graph(top_level_only: bool = True) -> dict[str, set[str]]:
    mods = {module_name(p): p for p in PKG.rglob("*.py")}
    return {m: {i for i in imports_of(p, top_level_only=top_level_only) if i != m} for m, p in mods.items()}


def test_no_import_cycle_among_modules():
    g = graph()
    # packages import their submodules; a cycle through a package's __init__ counts too
    state: dict[str, int] = {}

    def visit(m: str, stack: list[str]) -> None:
        state[m] = 1
        for d in sorted(g.get(m, ())):
            if d == "cmaudio" or d not in g:
                continue
            if state.get(d) == 1:
                raise AssertionError("import cycle: " + " -> ".join(stack + [m, d]))
            if not state.get(d):
                visit(d, stack + [m])
        state[m] = 2

    for m in sorted(g):
        if not state.get(m) and m != "cmaudio":
            visit(m, [])


def test_leaves_know_nothing_of_the_rest():
    """param imports nothing, features only errors, nets only errors, features and its own layers; the
    inference spec module sits below every facade and above no application."""
    g = graph(top_level_only=False)
    for m, deps in g.items():
        if m == "cmaudio.param":
            assert not deps, f"{m} imports {deps}"
        if m == "cmaudio.features":
            assert deps <= {"cmaudio.errors"}, f"{m} imports {deps}"
        if m.startswith("cmaudio.nets"):
            allowed = {"cmaudio.errors", "cmaudio.features"}
            assert all(d in allowed or d.startswith("cmaudio.nets") for d in deps), f"{m} imports {deps}"
    apps = {"cmaudio.vocoder", "cmaudio.mel", "cmaudio.build", "cmaudio.checkpoint", "cmaudio.train",
            "cmaudio.domains", "cmaudio.export", "cmaudio.evaluate", "cmaudio.bench", "cmaudio.cli"}
    assert not (g["cmaudio.generator"] & apps), g["cmaudio.generator"]
    for facade in ("cmaudio.vocoder", "cmaudio.mel"):
        assert not any(d.startswith("cmaudio.domains") for d in g[facade]), (facade, g[facade])
    assert "cmaudio.vocoder" not in g["cmaudio.mel"]  # the facades share cmaudio.generator, not each other
