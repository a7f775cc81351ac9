"""Hostile inputs against their budget: time and peak memory per crafted case.

Issue 8's target: any FFU/WIM/SDI/.secwim of up to 64 MiB of hostile content
is refused or described within 5 s and 256 MB resident on this 2-core
machine. Each case (built by tests/_hostile.py, the same files the tests use)
runs ``parallel-flash info`` in a fresh interpreter; the table shows exit
code, wall and CPU time and peak RSS (VmHWM) beside the budget. The
"before" column is what the same file cost before the budgets existed, as
issue 8 measured it (where it did).

    .venv/bin/python benchmarks/bench_hostile.py
"""

from __future__ import annotations

import sys
import tempfile
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from _common import print_table
from _hostile import (
    BUDGET_RSS_MB,
    BUDGET_SECONDS,
    CASES,
    run_case,
    secwim_catalog_bomb,
    wim_integrity_bomb,
)

#: Issue 8's own measurements of the unbounded code, where it gave them.
BEFORE = {
    "400k validation entries": "98 s, 782 MB (4.7 MB FFU)",
    "1 block x 300k locations": "> 150 s (2.9 MB FFU)",
    "SectorSize 2^62": "MemoryError",
    "SectorSize 1 GiB": "2.1 GB RSS",
    "GPT: a 2^50-byte disk": "10 TiB sparse temp / OverflowError",
    "WIM integrity table, 60 MiB claimed": "reads it all first (3 GB case)",
}


def _small_wim(work: Path) -> Path:
    from parallel_flash.img2wim.wimlib import capture

    tree = work / "tree"
    (tree / "Windows").mkdir(parents=True)
    (tree / "Windows" / "a.txt").write_bytes(b"parallel-flash " * 4096)
    wim = work / "small.wim"
    capture(tree, wim, image_name="Small", compression="none", boot=True)
    return wim


def main() -> None:
    rows: list[list[str]] = []
    with tempfile.TemporaryDirectory(prefix="bench-hostile-") as tmp:
        work = Path(tmp)
        cases = {name: (build, command) for name, (build, command) in CASES.items()}
        wim = _small_wim(work)
        cases["WIM integrity table, 60 MiB claimed"] = (
            wim_integrity_bomb(wim),
            ("info", "--verify-integrity", "{path}"),
        )
        cases[".secwim: catalog of 4 GiB - 1"] = (secwim_catalog_bomb(wim), ("info", "{path}"))
        for name, (build, command) in cases.items():
            path = work / "case.bin"
            path.write_bytes(build())
            size = path.stat().st_size
            measured = run_case([part.format(path=path) for part in command])
            within = measured.seconds <= BUDGET_SECONDS and measured.peak_rss_mb <= BUDGET_RSS_MB
            rows.append(
                [
                    name,
                    f"{size / (1 << 20):.1f} MiB",
                    str(measured.exit_code),
                    f"{measured.seconds:.2f} s",
                    f"{measured.cpu_seconds:.2f} s",
                    f"{measured.peak_rss_mb:.0f} MB",
                    f"{BUDGET_SECONDS:.0f} s, {BUDGET_RSS_MB:.0f} MB",
                    "yes" if within else "NO",
                    BEFORE.get(name, "-"),
                ]
            )
            path.unlink()
    print_table(
        "hostile inputs: parallel-flash info, fresh process per case",
        ["case", "file", "exit", "wall", "CPU", "peak RSS", "budget", "within", "before"],
        rows,
        width=160,
    )


if __name__ == "__main__":
    main()
