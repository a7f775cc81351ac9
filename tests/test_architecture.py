"""The architecture holds: the import-linter contracts and no import cycles.

The contracts live in pyproject.toml ([tool.importlinter]); this test is how
CI enforces them, so ``bash scripts/run.sh test`` fails on an upward import.
"""

from __future__ import annotations

import re
import subprocess
import sys
import sysconfig
from pathlib import Path

import grimp

ROOT = Path(__file__).resolve().parent.parent


def test_import_contracts_are_kept() -> None:
    lint_imports = Path(sysconfig.get_path("scripts")) / "lint-imports"
    if not lint_imports.exists():  # an interpreter whose scripts live elsewhere
        lint_imports = Path(sys.executable).with_name("lint-imports")
    result = subprocess.run(
        [str(lint_imports), "--no-cache", "--no-logo"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "0 broken" in result.stdout, result.stdout


def _cycles(imports: dict[str, set[str]]) -> list[frozenset[str]]:
    """Strongly connected components of more than one module (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[frozenset[str]] = []

    def visit(module: str) -> None:
        index[module] = low[module] = len(index)
        stack.append(module)
        on_stack.add(module)
        for target in imports.get(module, ()):
            if target not in index:
                visit(target)
                low[module] = min(low[module], low[target])
            elif target in on_stack:
                low[module] = min(low[module], index[target])
        if low[module] == index[module]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == module:
                    break
            if len(component) > 1:
                found.append(frozenset(component))

    for module in sorted(imports):
        if module not in index:
            visit(module)
    return found


def test_cycle_finder_finds_cycles() -> None:
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": {"e"}}
    assert _cycles(graph) == [frozenset({"a", "b", "c"})]


def test_no_import_cycles() -> None:
    # Imports made only for type checking never run, so they cannot form a cycle.
    graph = grimp.build_graph("parallel_flash", exclude_type_checking_imports=True)
    imports = {module: graph.find_modules_directly_imported_by(module) for module in graph.modules}
    cycles = _cycles(imports)
    assert not cycles, "import cycles: " + "; ".join(" <-> ".join(sorted(c)) for c in cycles)


#: The top of the package: the layers and the tools beside them (issue 9), nothing else.
#: A new module goes into the package of its layer; a new layer needs a contract first.
_TOP_LEVEL = {
    "__init__", "__main__", "_version",
    "cli", "session", "output", "engine", "transport", "image", "protocol", "formats",
    "errors", "logs",
    "img2wim", "demo", "emulator",
}  # fmt: skip


def test_every_top_level_module_belongs_to_a_layer() -> None:
    package = ROOT / "src" / "parallel_flash"
    found = {
        entry.stem
        for entry in package.iterdir()
        if entry.suffix == ".py" or (entry / "__init__.py").is_file()
    }
    assert found <= _TOP_LEVEL, f"not in any layer: {sorted(found - _TOP_LEVEL)}"


def _layer_table() -> list[tuple[list[str], list[str]]]:
    """The README's layer table: (the 'where' paths, the paths its text names) per row."""
    text = (ROOT / "README.md").read_text(encoding="utf-8")
    table = text.split("| layer, top to bottom |", 1)[1].split("\n\n", 1)[0]
    rows = []
    for line in table.splitlines()[2:]:
        _layer, where, what = (cell.strip() for cell in line.strip("|").split("|"))
        rows.append((re.findall(r"`([^`]+)`", where), re.findall(r"`([\w/]+(?:\.py|/))`", what)))
    return rows


def test_readme_layer_table_matches_the_tree() -> None:
    package = ROOT / "src" / "parallel_flash"
    rows = _layer_table()
    listed = {path.rstrip("/").removesuffix(".py") for where, _ in rows for path in where}
    present = {
        entry.stem
        for entry in package.iterdir()
        if entry.suffix == ".py" or (entry / "__init__.py").is_file()
    } - {"_version", "__main__"}
    assert listed == present, (
        f"README lists {sorted(listed - present)}, misses {sorted(present - listed)}"
    )
    for where, named in rows:
        bases = [package] + [package / path for path in where if path.endswith("/")]
        for path in named:
            assert any((base / path).exists() for base in bases), (
                f"README names {path}: not in {where}"
            )
