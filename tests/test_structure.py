"""The package structure: no import cycles (imports inside functions and under TYPE_CHECKING
count too), bot/ never imports worker/, and no module of bot/, worker/, jobs/ over 450 lines."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("bot", "worker", "jobs")
MAX_LINES = 450


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def _modules() -> dict[str, Path]:
    return {_module_name(p): p for pkg in PACKAGES for p in sorted((ROOT / pkg).rglob("*.py"))}


def _imports(name: str, path: Path, known: set[str]) -> set[str]:
    """Every project module `name` imports, wherever the import statement sits."""
    is_package = path.name == "__init__.py"
    out: set[str] = set()
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                stem = ".".join(base + ([node.module] if node.module else []))
            else:
                stem = node.module or ""
            # `from pkg import sub` imports the submodule pkg.sub when there is one
            targets = [f"{stem}.{a.name}" if f"{stem}.{a.name}" in known else stem for a in node.names]
        else:
            continue
        for target in targets:
            while target and target not in known:  # `import a.b.c` of a non-module attribute path
                target = target.rpartition(".")[0]
            if target and target != name:
                out.add(target)
    return out


def _graph() -> dict[str, set[str]]:
    modules = _modules()
    known = set(modules)
    return {name: _imports(name, path, known) for name, path in modules.items()}


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components with more than one module (Tarjan, iterative)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    out: list[list[str]] = []
    counter = 0
    for root in sorted(graph):
        if root in index:
            continue
        work = [(root, iter(sorted(graph[root])))]
        index[root] = low[root] = counter
        counter += 1
        stack.append(root)
        on_stack.add(root)
        while work:
            node, children = work[-1]
            for child in children:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                    break
                if child in on_stack:
                    low[node] = min(low[node], index[child])
            else:
                work.pop()
                if work:
                    low[work[-1][0]] = min(low[work[-1][0]], low[node])
                if low[node] == index[node]:
                    component = []
                    while True:
                        member = stack.pop()
                        on_stack.discard(member)
                        component.append(member)
                        if member == node:
                            break
                    if len(component) > 1:
                        out.append(sorted(component))
    return out


def _in(pkg: str, module: str) -> bool:
    return module == pkg or module.startswith(pkg + ".")


def test_the_checker_finds_cycles_and_function_level_imports(tmp_path):
    assert _cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert _cycles({"a": {"b"}, "b": set()}) == []
    mod = tmp_path / "m.py"
    mod.write_text("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import jobs.keys\n"
                   "def f():\n    from jobs import queue\n    from . import sibling\n")
    assert _imports("jobs.m", mod, {"jobs", "jobs.keys", "jobs.queue", "jobs.sibling"}) == {
        "jobs.keys", "jobs.queue", "jobs.sibling"}


def test_no_import_cycles_through_jobs_or_worker():
    cycles = [c for c in _cycles(_graph()) if any(_in("jobs", m) or _in("worker", m) for m in c)]
    assert cycles == []


def test_no_import_cycles_in_bot():
    cycles = [c for c in _cycles(_graph()) if any(_in("bot", m) for m in c)]
    assert cycles == []


def test_bot_imports_nothing_from_worker():
    graph = _graph()
    wrong = {m: sorted(t for t in targets if _in("worker", t)) for m, targets in graph.items() if _in("bot", m)}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_jobs_imports_nothing_from_bot_or_worker():
    graph = _graph()
    wrong = {m: sorted(t for t in targets if _in("bot", t) or _in("worker", t))
             for m, targets in graph.items() if _in("jobs", m)}
    assert {m: t for m, t in wrong.items() if t} == {}


def test_no_module_over_the_line_limit():
    long = {name: n for name, path in _modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert long == {}
