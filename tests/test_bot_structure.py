"""bot/'s shape, read from its source with `ast`: no import cycles (imports inside functions and
under TYPE_CHECKING count), no module over 450 lines, no import of worker/."""
from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
BOT = ROOT / "bot"
MAX_LINES = 450


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


def bot_modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted(BOT.rglob("*.py"))}


def imported_names(source: str, package: str) -> set[str]:
    """Every module name an import statement anywhere in `source` may load, including `from pkg import mod`;
    `package` resolves relative imports."""
    names: set[str] = set()
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:
                anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                base = ".".join(anchor + ([base] if base else []))
            names.add(base)
            names.update(f"{base}.{alias.name}" for alias in node.names)
    return names


def imports_of(path: Path) -> set[str]:
    name = module_name(path)
    return imported_names(path.read_text(), name if path.name == "__init__.py" else name.rpartition(".")[0])


def import_graph() -> dict[str, set[str]]:
    """Module -> the bot modules it imports; importing `bot.a.b` also runs `bot` and `bot.a`."""
    modules = bot_modules()
    graph: dict[str, set[str]] = {}
    for name, path in modules.items():
        targets = set()
        for imported in imports_of(path):
            parts = imported.split(".")
            targets.update(".".join(parts[:i]) for i in range(1, len(parts) + 1) if ".".join(parts[:i]) in modules)
        targets.discard(name)
        graph[name] = targets
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1: on the current path, 2: done
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        path.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return path[path.index(nxt):] + [nxt]
            if nxt not in state:
                found = visit(nxt)
                if found:
                    return found
        path.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state:
            found = visit(node)
            if found:
                return found
    return None


def test_the_checker_sees_function_level_type_checking_and_relative_imports():
    in_function = "def f():\n    from bot import dispatcher\n"
    type_only = "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from bot.app import ClipBot\n"
    assert "bot.dispatcher" in imported_names(in_function, "bot")
    assert "bot.app" in imported_names(type_only, "bot")
    assert "bot.imagine.buttons" in imported_names("from ..imagine import buttons\n", "bot.cogs")
    assert find_cycle({"x": {"y"}, "y": {"z"}, "z": {"x"}}) == ["x", "y", "z", "x"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_bot_has_no_import_cycles():
    graph = import_graph()
    assert "bot.app" in graph and graph["bot.cogs.imagine"] >= {"bot.app", "bot.imagine.messages"}
    assert find_cycle(graph) is None, " -> ".join(find_cycle(graph))


def test_the_event_dispatcher_imports_no_cog_and_not_the_bot():
    graph = import_graph()
    assert not {m for m in graph["bot.dispatcher"] if m == "bot.app" or m.startswith(("bot.cogs", "bot.imagine"))}
    assert not {m for m in graph["bot.app"] if m.startswith(("bot.cogs", "bot.imagine", "bot.replies"))}


def test_no_bot_module_is_over_450_lines():
    long = {name: n for name, path in bot_modules().items() if (n := len(path.read_text().splitlines())) > MAX_LINES}
    assert not long, long


def test_bot_imports_nothing_from_worker():
    # the entry point is the exception for now: in single-machine mode it starts a local worker process
    offenders = {name: sorted(m for m in imports_of(path) if m == "worker" or m.startswith("worker."))
                 for name, path in bot_modules().items() if name != "bot.__main__"}
    assert not {name: found for name, found in offenders.items() if found}, offenders
