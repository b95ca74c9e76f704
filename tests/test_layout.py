"""The house's shape, checked: no import circles in genq or its benchmarks, and the command line's options as recorded.

The option record (``tests/data/cli_options.json``) is every command's options as a user sees them: names, old
spellings, types, defaults and help. A change to it is a change to genq's interface, made on purpose:
``GENQ_UPDATE_CLI_OPTIONS=1 python -m pytest tests/test_layout.py`` rewrites it, and the diff shows the change.
"""

from __future__ import annotations

import ast
import json
import os
from pathlib import Path

import click

ROOT = Path(__file__).resolve().parent.parent
OPTIONS_RECORD = Path(__file__).parent / "data" / "cli_options.json"


def describe_commands(command: click.Command, path: list[str]) -> dict:
    """Every command under ``command`` with its options, as plain data."""
    described = {" ".join(path): {
        "help": command.help, "short_help": command.short_help,
        "params": [{"name": p.name, "kind": type(p).__name__, "opts": list(p.opts),
                    "secondary_opts": list(p.secondary_opts), "type": str(getattr(p.type, "name", p.type)),
                    "required": p.required, "multiple": p.multiple, "nargs": p.nargs, "default": repr(p.default),
                    "is_flag": getattr(p, "is_flag", None), "help": getattr(p, "help", None),
                    "hidden": getattr(p, "hidden", None), "old_names": sorted(getattr(p, "old_names", []) or []),
                    "envvar": p.envvar, "show_default": getattr(p, "show_default", None), "metavar": p.metavar,
                    "expose_value": p.expose_value, "is_eager": p.is_eager}
                   for p in command.params]}}
    if isinstance(command, click.Group):
        for name, sub in sorted(command.commands.items()):
            described.update(describe_commands(sub, path + [name]))
    return described


def test_every_command_keeps_its_options():
    from genq.cli import main

    now = describe_commands(main, ["genq"])
    if os.environ.get("GENQ_UPDATE_CLI_OPTIONS"):
        OPTIONS_RECORD.write_text(json.dumps(now, indent=1, sort_keys=True) + "\n")
    recorded = json.loads(OPTIONS_RECORD.read_text())
    assert sorted(now) == sorted(recorded), "commands added or removed"
    for command in recorded:
        assert now[command] == recorded[command], f"`{command}` changed its options or help"


def import_graph(package: Path) -> dict[str, set[str]]:
    """Module -> the modules of the same package it imports, at any depth (function-level imports included)."""
    modules = {}
    for path in package.rglob("*.py"):
        parts = path.relative_to(package.parent).with_suffix("").parts
        modules[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path

    def owner(name: str) -> str | None:
        while name and name not in modules:
            name = name.rpartition(".")[0]
        return name or None

    graph: dict[str, set[str]] = {name: set() for name in modules}
    for name, path in modules.items():
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            targets = []
            if isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                targets = [owner(f"{node.module}.{alias.name}") for alias in node.names]
            elif isinstance(node, ast.Import):
                targets = [owner(alias.name) for alias in node.names]
            graph[name].update(t for t in targets if t and t != name and t.split(".")[0] == package.name)
    return graph


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    found: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = []
            while True:
                member = stack.pop()
                component.append(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for node in graph:
        if node not in index:
            visit(node)
    return found


def test_circle_finder_finds_a_circle():
    assert circles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c"]]
    assert circles({"a": {"b"}, "b": set()}) == []


def test_genq_imports_have_no_circle():
    assert circles(import_graph(ROOT / "genq")) == []


def test_benchmarks_import_no_circle():
    assert circles(import_graph(ROOT / "benchmarks")) == []


def test_no_genq_module_imports_the_command_line_or_a_public_face():
    """The command line is the top floor, and ``genq.generate`` is the generation package's face for users: genq's
    own modules import from where a thing lives."""
    graph = import_graph(ROOT / "genq")
    for name, targets in graph.items():
        if not name.startswith("genq.cli") and name != "genq.__main__":  # `python -m genq` is the command line
            assert not {t for t in targets if t.startswith("genq.cli")}, f"{name} imports the command line"
        if name not in ("genq.generate", "genq.cli") and not name.startswith("genq.cli."):
            assert "genq.generate" not in targets, f"{name} imports genq.generate, not the module that holds it"
