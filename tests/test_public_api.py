"""The public API: every name in ``parallel_flash.__all__`` imports and is documented."""

from __future__ import annotations

import ast
import inspect
import subprocess
import sys
from pathlib import Path

import pytest

import parallel_flash

PACKAGE = Path(parallel_flash.__file__)


def _public_objects() -> list[tuple[str, object]]:
    return [(name, getattr(parallel_flash, name)) for name in parallel_flash.__all__]


@pytest.mark.parametrize("name", parallel_flash.__all__)
def test_every_name_imports_and_is_documented(name: str) -> None:
    namespace: dict[str, object] = {}
    exec(f"from parallel_flash import {name}", namespace)
    value = namespace[name]
    if inspect.isclass(value) or inspect.isfunction(value):
        own = value.__doc__ or ""
        # a dataclass without a docstring gets its signature as one
        assert own.strip() and not own.startswith(f"{value.__name__}("), f"{name} has no docstring"
    else:
        assert f"``{name}``" in (parallel_flash.__doc__ or ""), (
            f"{name} is not described in the package docstring"
        )


def test_star_import_gives_exactly_all() -> None:
    namespace: dict[str, object] = {}
    exec("from parallel_flash import *", namespace)
    assert set(namespace) - {"__builtins__"} == set(parallel_flash.__all__)


def test_all_has_no_duplicates_and_dir_lists_it() -> None:
    assert len(parallel_flash.__all__) == len(set(parallel_flash.__all__))
    assert set(parallel_flash.__all__) <= set(dir(parallel_flash))


def test_unknown_name_is_an_attribute_error() -> None:
    with pytest.raises(AttributeError, match="no_such_name"):
        parallel_flash.no_such_name  # noqa: B018


def test_type_checking_imports_match_the_lazy_table() -> None:
    """The TYPE_CHECKING block (for type checkers) and _EXPORTS (at run time) agree."""
    tree = ast.parse(PACKAGE.read_text())
    typed: dict[str, str] = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.If) and ast.unparse(node.test) == "TYPE_CHECKING":
            for statement in node.body:
                assert isinstance(statement, ast.ImportFrom)
                for alias in statement.names:
                    assert alias.asname == alias.name, "re-export as `import X as X`"
                    typed[alias.name] = "." * statement.level + (statement.module or "")
    assert typed == parallel_flash._EXPORTS


def test_import_loads_no_dependency() -> None:
    """``import parallel_flash`` stays stdlib-only (the emulator host relies on it)."""
    code = (
        "import sys, parallel_flash\n"
        "loaded = sorted({m.split('.')[0] for m in sys.modules} & "
        "{'anyio', 'rich', 'construct', 'usb1', 'gi'})\n"
        "print(','.join(loaded))\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=60
    )
    assert result.stdout.strip() == ""


def test_readme_python_example_runs(
    tmp_path: Path,
    small_wim: Path,
    small_sdi: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    """The README's Python API example, run as written (on the tests' small WIM and SDI)."""
    readme = (Path(__file__).resolve().parent.parent / "README.md").read_text()
    section = readme.split("## Python API", 1)[1]
    example = section.split("```python\n", 1)[1].split("```", 1)[0]
    (tmp_path / "MMOS.wim").symlink_to(small_wim)
    (tmp_path / "boot.sdi").symlink_to(small_sdi)
    monkeypatch.chdir(tmp_path)
    exec(compile(example, "README.md", "exec"), {})
    assert capsys.readouterr().out.splitlines()[-1] == "8 0 []"
    assert len((tmp_path / "line.jsonl").read_text().splitlines()) >= 8
