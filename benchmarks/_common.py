"""What the benchmark scripts share: running one configuration in a fresh child, printing tables."""

from __future__ import annotations

import json
import subprocess
import sys
from typing import Any


def run_child(script: str, **options: object) -> dict[str, Any]:
    """Run ``script --child --option value...`` in a fresh interpreter; return its last JSON line.

    A fresh process per configuration keeps peak RSS and CPU figures that run's own.
    """
    argv = [sys.executable, script, "--child"]
    for key, value in options.items():
        flag = f"--{key.replace('_', '-')}"
        if value is True:
            argv.append(flag)
        elif value is not None and value is not False:
            argv += [flag, str(value)]
    out = subprocess.run(argv, check=True, capture_output=True, text=True).stdout
    result: dict[str, Any] = json.loads(out.strip().splitlines()[-1])
    return result


def print_table(title: str, header: list[str], rows: list[list[str]], *, width: int = 0) -> None:
    """Figures and targets side by side, right-aligned."""
    from rich.console import Console
    from rich.table import Table

    table = Table(title=title)
    for name in header:
        table.add_column(name, justify="right")
    for row in rows:
        table.add_row(*row)
    console = Console()
    if width:
        console = Console(width=max(console.width, width))
    console.print(table)
