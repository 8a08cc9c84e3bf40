"""The arrows of DESIGN.md point down: cli → recipes → (edits, baselines, verify, locate, export) →
capture, stats, text, suites → backends, sites → models. Every import in repedit/ (module level and
inside functions) is checked; a failure lists each offending module:line."""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1] / "repedit"


def _module(path: Path, root: Path) -> str:
    parts = ["repedit", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _targets(node: ast.AST, module: str, is_package: bool) -> list[str]:
    """Absolute names of what an import statement imports (`from x import y` gives x and x.y)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    return [base] + [f"{base}.{a.name}" for a in node.names]


def imports(root: Path = ROOT) -> list[tuple[str, int, list[str]]]:
    """(importing module, line, imported names) for every import statement under `root`."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module = _module(path, root)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                out.append((module, node.lineno, _targets(node, module, path.name == "__init__.py")))
    return out


def _in(name: str, room: str) -> bool:
    return name == room or name.startswith(room + ".")


def violations(root: Path = ROOT) -> list[str]:
    rules = [  # (who, what they must not import, why)
        (lambda m: not _in(m, "repedit.cli"), "repedit.cli", "only repedit/cli/ imports the command line"),
        (lambda m: _in(m, "repedit.edits") or _in(m, "repedit.baselines"), "repedit.verify",
         "an edit never grades itself (move shared helpers below both)"),
        (lambda m: _in(m, "repedit.edits") or _in(m, "repedit.baselines"), "repedit.cli", "edits sit below the cli"),
        (lambda m: not (_in(m, "repedit.recipes") or _in(m, "repedit.cli")), "repedit.recipes",
         "the core never imports recipes"),
    ]
    found = []
    for module, line, targets in imports(root):
        for who, banned, why in rules:
            hit = next((t for t in targets if _in(t, banned)), None) if who(module) else None
            if hit:
                found.append((module, line, f"{module}:{line} imports {hit}: {why}"))
    return [text for *_, text in sorted(found)]


def test_imports_point_down():
    bad = violations()
    print("\n".join(bad))
    assert not bad, "imports against DESIGN.md's arrows:\n" + "\n".join(bad)


def test_the_checker_sees_function_level_and_relative_imports(tmp_path):
    pkg = tmp_path / "edits"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "m.py").write_text("def f():\n    from ..verify.recall import recall\n")
    (tmp_path / "x.py").write_text("from .cli import app\n")
    assert violations(tmp_path) == [
        "repedit.edits.m:2 imports repedit.verify.recall: an edit never grades itself (move shared helpers below both)",
        "repedit.x:1 imports repedit.cli: only repedit/cli/ imports the command line",
    ]
