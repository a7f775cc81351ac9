"""Throughput, CPU and memory of the engine on the simulated line (issue 2's numbers).

Runs each configuration in a fresh child process (so peak RSS is that run's
own) and prints one table per question with the figures and the target side
by side:

1. 8 devices at 40 MB/s: each device's rate as a share of its link (>= 98 %).
2. 256 devices, links unthrottled, device model in count-only mode, 1 MiB
   transfers: host CPU seconds per GB sent (<= 0.05).
3. Resident memory, 1 vs 256 devices, 256 MiB WIM: growth (<= 64 MB).

Usage: python benchmarks/bench_sim_line.py [--wim-mib 256] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import time
from pathlib import Path

from _common import print_table, run_child

WORKDIR = Path(os.environ.get("PF_BENCH_DIR", "/tmp/parallel-flash-bench"))


def child(args: argparse.Namespace) -> None:
    """One run: boot ``--devices`` simulated devices and print a JSON line of figures."""
    import anyio
    import psutil

    from parallel_flash.demo.inputs import demo_inputs
    from parallel_flash.engine.pipeline import BootOptions, boot_line
    from parallel_flash.image import ImageBuffer
    from parallel_flash.transport.sim import simulated_line

    wim, sdi = demo_inputs(WORKDIR, wim_size=args.wim_mib << 20)
    image = ImageBuffer.load(wim, sdi)
    process = psutil.Process()
    rss_loaded = process.memory_info().rss
    links = simulated_line(
        args.devices,
        rate=args.rate * 1e6 if args.rate else None,
        count_only=args.count_only,
        record_transcript=False,
    )
    options = BootOptions(transfer_size=args.transfer_size, in_flight=4)
    cpu0 = time.process_time()
    wall0 = time.perf_counter()
    records = anyio.run(lambda: boot_line(links, image, options=options))
    wall = time.perf_counter() - wall0
    cpu = time.process_time() - cpu0
    sent = sum(r.bytes_done for r in records)
    print(json.dumps({
        "devices": args.devices,
        "booted": sum(r.ok for r in records),
        "errors": sorted({r.error for r in records if r.error}),
        "bytes": sent,
        "wall": wall,
        "cpu": cpu,
        "rates": [r.rate() for r in records],
        "rss_loaded": rss_loaded,
        "peak_rss": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024,
        "image_bytes": image.total_length,
    }))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--child", action="store_true", help=argparse.SUPPRESS)
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--rate", type=float, default=40.0)
    parser.add_argument("--count-only", action="store_true")
    parser.add_argument("--transfer-size", type=int, default=1 << 20)
    parser.add_argument("--wim-mib", type=int, default=256)
    parser.add_argument("--quick", action="store_true", help="smaller WIM for a fast look")
    args = parser.parse_args()
    if args.child:
        child(args)
        return
    wim_mib = 32 if args.quick else args.wim_mib
    WORKDIR.mkdir(parents=True, exist_ok=True)

    # 1. link-rate share at 8 x 40 MB/s (full device model: hashes every byte)
    rate = run_child(__file__, devices=8, rate=40, wim_mib=wim_mib)
    shares = [r / 40e6 for r in rate["rates"]]  # type: ignore[union-attr]
    print_table(
        f"8 simulated devices at 40 MB/s, {wim_mib} MiB WIM (target: each >= 98 % of link)",
        ["devices booted", "min MB/s", "mean MB/s", "min % of link", "target", "met"],
        [[f"{rate['booted']}/8", f"{min(rate['rates']) / 1e6:.2f}",  # type: ignore[arg-type]
          f"{sum(rate['rates']) / 8e6:.2f}",  # type: ignore[arg-type]
          f"{min(shares) * 100:.2f} %", ">= 98 %", "yes" if min(shares) >= 0.98 else "NO"]],
    )

    # 2. CPU per GB: 256 devices, unthrottled, count-only
    cpu = run_child(__file__, devices=256, rate=0, count_only=True, wim_mib=wim_mib)
    gb = cpu["bytes"] / 1e9  # type: ignore[operator]
    per_gb = cpu["cpu"] / gb  # type: ignore[operator]
    print_table(
        "256 devices, unthrottled, count-only model, 1 MiB transfers (target <= 0.05 CPU s/GB)",
        ["booted", "GB sent", "wall s", "aggregate GB/s", "CPU s", "CPU s per GB", "target", "met"],
        [[f"{cpu['booted']}/256", f"{gb:.1f}", f"{cpu['wall']:.2f}",
          f"{gb / cpu['wall']:.2f}", f"{cpu['cpu']:.2f}",  # type: ignore[operator]
          f"{per_gb:.4f}", "<= 0.05", "yes" if per_gb <= 0.05 else "NO"]],
    )

    # 3. RSS: 1 vs 256 devices on the same image
    one = run_child(__file__, devices=1, rate=0, count_only=True, wim_mib=wim_mib)
    many = cpu
    growth = (many["peak_rss"] - one["peak_rss"]) / 1e6  # type: ignore[operator]
    print_table(
        f"Peak resident memory, {wim_mib} MiB WIM (target: growth 1 -> 256 devices <= 64 MB)",
        ["image MB", "RSS 1 device MB", "RSS 256 devices MB", "growth MB", "target", "met"],
        [[f"{one['image_bytes'] / 1e6:.1f}", f"{one['peak_rss'] / 1e6:.1f}",  # type: ignore[operator]
          f"{many['peak_rss'] / 1e6:.1f}", f"{growth:.1f}",  # type: ignore[operator]
          "<= 64", "yes" if growth <= 64 else "NO"]],
    )


if __name__ == "__main__":
    main()
