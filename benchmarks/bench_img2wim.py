"""img2wim against ``wimlib-imagex capture`` of the same, already extracted, MainOS.

Builds a GPT disk whose NTFS MainOS holds >= 1 GiB of real file content (files
copied from this machine's /usr, topped up with generated data), writes it as
an FFU, then in the same run measures:

* wall time of ``parallel-flash img2wim`` (headers, hash check of every chunk,
  sparse extraction, NTFS-3G capture, LZX) against ``wimlib-imagex capture``
  of the MainOS partition image extracted beforehand (target ratio <= 1.2);
* peak resident memory of img2wim, from the child's rusage (target <= 256 MB);
* temporary disk use of img2wim: the sparse MainOS image's allocated blocks
  against the bytes the FFU writes into MainOS (target <= 1.1x).

Both sides compress with every CPU; figures are from one machine and say
nothing under other load. Run it alone: ``python benchmarks/bench_img2wim.py``.
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from rich.console import Console
from rich.table import Table

MiB = 1 << 20
TARGET_TIME = 1.2
TARGET_RSS = 256 * MiB
TARGET_DISK = 1.1


def build_tree(root: Path, size: int, seed: int = 5) -> int:
    """Copy regular files from /usr until ``size`` bytes, then top up with generated ones."""
    total = 0
    n = 0
    for base in ("/usr/lib", "/usr/share", "/usr/bin"):
        for dirpath, _dirs, files in os.walk(base):
            for name in sorted(files):
                src = Path(dirpath) / name
                if src.is_symlink() or not src.is_file():
                    continue
                try:
                    length = src.stat().st_size
                except OSError:
                    continue
                if length == 0 or length > 64 * MiB:
                    continue
                n += 1
                dst = root / f"d{n // 500:04d}" / f"{n:06d}_{name[:80]}"
                dst.parent.mkdir(parents=True, exist_ok=True)
                try:
                    shutil.copyfile(src, dst)
                except OSError:
                    continue
                total += length
                if total >= size:
                    return total
    rng = random.Random(seed)
    while total < size:  # not enough in /usr: half random, half repetitive text
        n += 1
        length = min(size - total, 4 * MiB)
        data = (
            rng.randbytes(length) if n % 2 else (b"generated filler line %d\n" % n) * (length // 30)
        )
        dst = root / "generated" / f"{n:06d}.bin"
        dst.parent.mkdir(parents=True, exist_ok=True)
        dst.write_bytes(data)
        total += len(data)
    return total


def run_measured(argv: list[str]) -> tuple[float, int, str]:
    """Wall time, peak RSS (bytes) and stdout of a child process."""
    start = time.monotonic()
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    _pid, status, usage = os.wait4(proc.pid, 0)
    elapsed = time.monotonic() - start
    assert proc.stdout is not None and proc.stderr is not None
    out, err = proc.stdout.read(), proc.stderr.read()
    proc.returncode = os.waitstatus_to_exitcode(status)
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(argv)} failed ({proc.returncode}):\n{err}")
    return elapsed, usage.ru_maxrss * 1024, out


def child(ffu: str, wim: str) -> None:
    """Run img2wim in this (measured) process and print what the parent needs as JSON."""
    from parallel_flash.img2wim.convert import img2wim

    result = img2wim(ffu, wim)
    json.dump(
        {
            "temp_allocated": result.temp_allocated,
            "mainos_written": result.mainos_written,
            "mainos_size": result.mainos.size,
            "chunks": result.chunks_verified,
            "seconds": result.seconds,
        },
        sys.stdout,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=float, default=1.0, help="GiB of file content (>= 1)")
    parser.add_argument("--workdir", type=Path, default=None, help="default: a temporary dir")
    parser.add_argument("--keep", action="store_true", help="keep the work directory")
    parser.add_argument("--child", nargs=2, metavar=("FFU", "WIM"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return

    from parallel_flash.demo.ffu import build_demo_disk
    from parallel_flash.demo.ffu_writer import write_ffu

    console = Console(highlight=False)
    work = args.workdir or Path(tempfile.mkdtemp(prefix="bench-img2wim-", dir="/var/tmp"))
    work.mkdir(parents=True, exist_ok=True)
    try:
        content = int(args.size * 1024 * MiB)
        t = time.monotonic()
        tree_bytes = build_tree(work / "tree", content)
        mainos_size = ((tree_bytes * 5 // 4) // MiB + 128) * MiB
        disk = build_demo_disk(work / "disk", tree=work / "tree", mainos_size=mainos_size)
        shutil.rmtree(work / "tree")
        ffu = write_ffu([disk.path], work / "mainos.ffu", version=2).path
        mainos = next(p for p in disk.partitions if p.name == "MainOS")
        volume = work / "mainos.ntfs"  # the "already extracted" partition for the baseline
        with disk.path.open("rb") as src, volume.open("wb") as dst:
            dst.truncate(mainos.size)
            src.seek(mainos.offset)
            for pos in range(0, mainos.size, 4 * MiB):
                piece = src.read(4 * MiB)
                if piece.count(0) != len(piece):
                    dst.seek(pos)
                    dst.write(piece)
        disk.path.unlink()
        console.print(
            f"setup: {tree_bytes / MiB:.0f} MiB of files in a {mainos.size / MiB:.0f} MiB MainOS, "
            f"FFU {ffu.stat().st_size / MiB:.0f} MiB, {time.monotonic() - t:.0f} s"
        )

        base_time, base_rss, _ = run_measured(
            ["wimlib-imagex", "capture", str(volume), str(work / "base.wim"), "MainOS",
             "--compress=LZX", "--boot"]
        )  # fmt: skip
        ours_time, ours_rss, out = run_measured(
            [sys.executable, __file__, "--child", str(ffu), str(work / "ours.wim")]
        )
        report = json.loads(out)
        base_wim, ours_wim = (work / "base.wim").stat().st_size, (work / "ours.wim").stat().st_size
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)

    disk_ratio = report["temp_allocated"] / report["mainos_written"]
    table = Table(
        title=f"img2wim, {tree_bytes / MiB:.0f} MiB of files in MainOS ({os.cpu_count()} CPUs)"
    )
    for col in ("metric", "img2wim", "wimlib-imagex capture", "ratio", "target", "met"):
        table.add_column(col, justify="right" if col not in ("metric", "met") else "left")

    def row(metric: str, ours: str, base: str, ratio: float | None, target: str, ok: bool) -> None:
        table.add_row(
            metric, ours, base, f"{ratio:.2f}x" if ratio else "", target, "yes" if ok else "NO"
        )

    row("wall time", f"{ours_time:.1f} s", f"{base_time:.1f} s", ours_time / base_time,
        f"<= {TARGET_TIME}x", ours_time / base_time <= TARGET_TIME)  # fmt: skip
    row("peak RSS", f"{ours_rss / MiB:.0f} MiB", f"{base_rss / MiB:.0f} MiB", None,
        f"<= {TARGET_RSS // MiB} MiB", ours_rss <= TARGET_RSS)  # fmt: skip
    row("temp disk use", f"{report['temp_allocated'] / MiB:.0f} MiB",
        f"(FFU writes {report['mainos_written'] / MiB:.0f} MiB)", disk_ratio,
        f"<= {TARGET_DISK}x written", disk_ratio <= TARGET_DISK)  # fmt: skip
    row("WIM size", f"{ours_wim / MiB:.0f} MiB", f"{base_wim / MiB:.0f} MiB", ours_wim / base_wim,
        "", True)  # fmt: skip
    console.print(table)
    stages = ", ".join(f"{k} {v:.1f} s" for k, v in report["seconds"].items())
    console.print(f"img2wim stages: {stages}; {report['chunks']} chunks verified")


if __name__ == "__main__":
    main()
