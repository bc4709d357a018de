"""Read the package's import graph from its source (ast, nothing imported).

Used by ``test_architecture.py`` and runnable as a script for the before/after numbers:
``python tests/integration/import_graph.py`` prints modules, cycles, levels and the
top-level entry count.
"""
from __future__ import annotations

import ast
import sys
from pathlib import Path

PKG = "interp_unlearn"
ROOT = Path(__file__).resolve().parents[2] / PKG


def module_name(path: Path) -> str:
    rel = path.relative_to(ROOT.parent).with_suffix("")
    parts = list(rel.parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _resolve(mod: str, is_pkg: bool, node: ast.ImportFrom) -> list[str]:
    if node.level:
        base = mod.split(".") if is_pkg else mod.split(".")[:-1]
        base = base[: len(base) - (node.level - 1)]
        target = ".".join(base + ([node.module] if node.module else []))
    else:
        target = node.module or ""
    # ``from pkg import sub`` names the submodule (when ``sub`` is one) and ``pkg`` itself
    # (when some name is not a submodule): graph() keeps the ones that are modules
    return [target, *(f"{target}.{a.name}" for a in node.names)]


def _in_type_checking(node: ast.AST, parents: dict) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            return True
    return False


def graph() -> dict[str, set[str]]:
    files = {module_name(p): p for p in ROOT.rglob("*.py")}
    mods = set(files)
    g: dict[str, set[str]] = {m: set() for m in mods}
    for mod, path in files.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        parents = {c: p for p in ast.walk(tree) for c in ast.iter_child_nodes(p)}
        is_pkg = path.name == "__init__.py"
        for node in ast.walk(tree):
            if _in_type_checking(node, parents):
                continue
            names: list[str] = []
            if isinstance(node, ast.Import):
                names = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                target, *subs = _resolve(mod, is_pkg, node)
                names = [n for n in subs if n in mods]
                if len(names) < len(subs):  # some name is an attribute of ``target``
                    names.append(target)
            for n in names:
                if n.startswith(PKG):
                    # the deepest known module that ``n`` names
                    while n and n not in mods:
                        n = n.rpartition(".")[0]
                    if n and n != mod and n != PKG:
                        g[mod].add(n)
    return g


def unit(mod: str) -> str:
    """The architectural unit a module belongs to: its top-level folder or flat module."""
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def unit_graph(g: dict[str, set[str]]) -> dict[str, set[str]]:
    ug: dict[str, set[str]] = {}
    for m, deps in g.items():
        u = unit(m)
        ug.setdefault(u, set())
        for d in deps:
            if unit(d) != u:
                ug[u].add(unit(d))
    return ug


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one node (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on: set[str] = set()
    out: list[list[str]] = []
    counter = [0]
    sys.setrecursionlimit(10000)

    def visit(v: str) -> None:
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on.add(v)
        for w in g.get(v, ()):
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(g):
        if v not in index:
            visit(v)
    return out


def levels(g: dict[str, set[str]]) -> int:
    """Length of the longest import chain between units (1 = nothing imported), on the
    condensation when there are cycles."""
    memo: dict[str, int] = {}

    def depth(v: str, seen: frozenset) -> int:
        if v in memo:
            return memo[v]
        d = 1 + max((depth(w, seen | {v}) for w in g.get(v, ()) if w not in seen), default=0)
        memo[v] = d
        return d

    return max(depth(v, frozenset()) for v in g)


def top_level_entries() -> list[str]:
    return sorted(p.name for p in ROOT.iterdir()
                  if p.name != "__pycache__" and not p.name.endswith(".pyc"))


def long_modules(limit: int = 400) -> dict[str, int]:
    out = {}
    for p in ROOT.rglob("*.py"):
        n = len(p.read_text(encoding="utf-8").splitlines())
        if n > limit:
            out[module_name(p)] = n
    return out


if __name__ == "__main__":
    g = graph()
    ug = unit_graph(g)
    print("modules:", len(g))
    print("top-level entries:", len(top_level_entries()), top_level_entries())
    print("module cycles:", cycles(g))
    print("unit cycles:", cycles(ug))
    print("unit levels:", levels(ug))
    print("module levels:", levels(g))
    print("modules over 400 lines:", long_modules())
    for u in sorted(ug):
        print(f"  {u} -> {sorted(ug[u])}")


# the layers, bottom up; a unit may import units of a strictly lower rank, and plotting
# imports core only (issue 17)
RANK = {"__init__": 9, "_compat": 9, "core": 0, "interventions": 1, "data": 1,
        "evaluation": 2, "localize": 3, "unlearn": 3, "attacks": 3, "plotting": 4,
        "pipeline": 5}
ALLOWED_EXTRA = {"plotting": {"core"}}


def violations(g: dict[str, set[str]]) -> list[tuple[str, str]]:
    """Module edges that point sideways or up."""
    bad = []
    for m, deps in g.items():
        um = unit(m)
        if um in ("__init__", "_compat"):
            continue
        for d in deps:
            ud = unit(d)
            if ud == um or ud == "_compat":
                continue
            if um in ALLOWED_EXTRA:
                ok = ud in ALLOWED_EXTRA[um]
            else:
                ok = RANK.get(ud, 99) < RANK.get(um, -1)
            if not ok:
                bad.append((m, d))
    return sorted(bad)
