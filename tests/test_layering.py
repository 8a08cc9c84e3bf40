"""Imports point down the layering table of docs/architecture.md. Every import in repedit/ (module level and
inside functions) is checked against the table read from that page; a failure lists each module:line."""

from __future__ import annotations

import ast
import re
from pathlib import Path

import pytest

pytestmark = pytest.mark.fast      # no packaged model: the fast tier (./dev test -m fast)

REPO = Path(__file__).resolve().parents[1]
ROOT = REPO / "repedit"
TABLE = REPO / "docs" / "architecture.md"


def read_table(page: Path = TABLE) -> tuple[dict[str, tuple[int, int]], dict[tuple[str, str], tuple[str, ...]]]:
    """(room -> (layer, position in its row), (room, peer) -> the only modules of the peer it may import)."""
    ranks, limits = {}, {}
    for line in page.read_text().splitlines():
        cells = [c.strip() for c in line.strip().strip("|").split("|")]
        if len(cells) == 2 and cells[0].isdigit():
            for pos, room in enumerate(c.strip() for c in cells[1].split(",")):
                ranks[room] = (int(cells[0]), pos)
        elif len(cells) == 3 and not set(cells[0]) <= set("-") and cells[0] != "room":
            limits[(cells[0], cells[1])] = tuple(c.strip() for c in cells[2].split(","))
    return ranks, limits


def _module(path: Path, root: Path) -> str:
    parts = ["repedit", *path.relative_to(root).with_suffix("").parts]
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_module(name: str, root: Path) -> bool:
    rel = Path(*name.split(".")[1:]) if "." in name else Path()
    return (root / rel).with_suffix(".py").is_file() or (root / rel / "__init__.py").is_file()


def _targets(node: ast.AST, module: str, is_package: bool, root: Path) -> list[str]:
    """The repedit modules an import statement loads (`from x import y` gives x.y when y is a module, else x)."""
    if isinstance(node, ast.Import):
        return [a.name for a in node.names]
    if node.level:
        package = module.split(".") if is_package else module.split(".")[:-1]
        base = ".".join(package[: len(package) - node.level + 1])
        base = f"{base}.{node.module}" if node.module else base
    else:
        base = node.module or ""
    return [f"{base}.{a.name}" if _is_module(f"{base}.{a.name}", root) else base for a in node.names]


def imports(root: Path = ROOT) -> list[tuple[str, int, list[str]]]:
    """(importing module, line, imported repedit modules) for every import statement under `root`."""
    out = []
    for path in sorted(root.rglob("*.py")):
        module = _module(path, root)
        for node in ast.walk(ast.parse(path.read_text(), str(path))):
            if isinstance(node, (ast.Import, ast.ImportFrom)):
                names = [t for t in _targets(node, module, path.name == "__init__.py", root)
                         if t == "repedit" or t.startswith("repedit.")]
                if names:
                    out.append((module, node.lineno, names))
    return out


def room_of(module: str) -> str:
    return module.split(".")[1] if "." in module else "repedit"


def violations(root: Path = ROOT, page: Path = TABLE) -> list[str]:
    ranks, limits = read_table(page)
    found = []
    for module, line, targets in imports(root):
        here = room_of(module)
        for target in targets:
            there = room_of(target)
            if here == there:
                continue
            if here not in ranks or there not in ranks:
                missing = here if here not in ranks else there
                found.append(f"{module}:{line} imports {target}: room {missing!r} is not in the layering table")
            elif ranks[there] >= ranks[here]:
                found.append(f"{module}:{line} imports {target}: {there} (layer {ranks[there][0]}) is not below "
                             f"{here} (layer {ranks[here][0]})")
            elif (here, there) in limits and not any(
                    re.fullmatch(rf"repedit\.{re.escape(m)}(\..*)?", target) for m in limits[(here, there)]):
                found.append(f"{module}:{line} imports {target}: {here} reads {there} only through "
                             f"{', '.join(limits[(here, there)])}")
    return sorted(set(found))


def test_every_room_is_in_the_table():
    ranks, _ = read_table()
    rooms = {room_of(_module(p, ROOT)) for p in ROOT.rglob("*.py")}
    assert rooms <= set(ranks), f"rooms missing from docs/architecture.md: {sorted(rooms - set(ranks))}"


def test_imports_point_down():
    bad = violations()
    print("\n".join(bad))
    assert not bad, "imports against docs/architecture.md's layering table:\n" + "\n".join(bad)


def test_the_checker_sees_function_level_relative_and_peer_imports(tmp_path):
    pkg = tmp_path / "repedit"
    for room in ("edits", "verify", "cli", "forward"):
        (pkg / room).mkdir(parents=True)
        (pkg / room / "__init__.py").write_text("")
    (pkg / "__init__.py").write_text("")
    (pkg / "edits" / "base.py").write_text("")
    (pkg / "edits" / "rocr.py").write_text("def f():\n    from ..verify import recall\n")
    (pkg / "verify" / "recall.py").write_text("from repedit.edits import rocr\nfrom repedit.edits.base import x\n")
    (pkg / "forward" / "m.py").write_text("from ..cli import app\nimport repedit\n")
    page = tmp_path / "architecture.md"
    page.write_text("| 6 | cli |\n| 5 | repedit |\n| 3 | edits, verify |\n| 2 | forward |\n"
                    "| room | may import from | only |\n|---|---|---|\n| verify | edits | edits.base |\n")
    assert violations(pkg, page) == [
        "repedit.edits.rocr:2 imports repedit.verify.recall: verify (layer 3) is not below edits (layer 3)",
        "repedit.forward.m:1 imports repedit.cli: cli (layer 6) is not below forward (layer 2)",
        "repedit.forward.m:2 imports repedit: repedit (layer 5) is not below forward (layer 2)",
        "repedit.verify.recall:1 imports repedit.edits.rocr: verify reads edits only through edits.base",
    ]
