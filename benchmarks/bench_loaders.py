"""Per-device throughput of each loader through real libusb on emulated devices (issue 11).

SimpleIO streams with several transfers in flight and no reply until the end;
the Lumia and UFP loaders allow one message and then wait for its reply. So
their ceiling at a given link rate is not the link rate but

    image bytes / sum over messages (message bytes / link rate + reply turnaround)

which this script computes per device from that device's own turnaround (the
median time its reply reads waited during the boot) and prints beside the
measured rate: the honest comparison is against what the protocol allows, not
against SimpleIO. The turnaround is the emulator's (umockdev serves every
device from one worker thread on a shared 2-core machine); a phone's would be
its SHA-256 and RAM copy of one piece. The "send beyond link time" column is
the rest of the gap: what one transfer costs the emulated USB stack (ioctl
round trips through umockdev, copying the message out of the client) on top
of its bytes at the link rate -- SimpleIO hides it behind four transfers in
flight, one-message-one-reply cannot.

Each configuration runs 8 emulated devices, each link throttled to 40 MB/s,
in a fresh emulator, with ``parallel-flash boot`` run through the Python API
(real python-libusb1 and libusb under umockdev's preload). Then a mixed line
of 8 (2 of each) boots a .secwim and an FFU in one run and the aggregate is
printed. Figures are the emulator's; no hardware was involved.

Usage: python benchmarks/bench_loaders.py [--mib 64] [--rate 40] [--devices 8]
"""

from __future__ import annotations

import argparse
import json
import os
import random
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from _common import print_table

WORKDIR = Path(os.environ.get("PF_BENCH_DIR", "/tmp/parallel-flash-bench")) / "loaders"
#: (label, device kind, input file key)
CONFIGS = (
    ("SimpleIO (.secwim)", "simpleio", "secwim"),
    ("Lumia MMOS (.secwim)", "lumia", "secwim"),
    ("UFP v1 (FFU)", "ufp-v1", "ffu"),
    ("UFP v2 (FFU)", "ufp-v2", "ffu"),
)


def build_inputs(mib: int) -> dict[str, Path]:
    """A .secwim and an FFU of about ``mib`` MiB each, built once per size."""
    from parallel_flash.demo.ffu_writer import write_ffu
    from parallel_flash.demo.inputs import demo_inputs
    from parallel_flash.formats.gpt import PartitionSpec, build_gpt
    from parallel_flash.formats.secwim import build_secwim

    WORKDIR.mkdir(parents=True, exist_ok=True)
    secwim = WORKDIR / f"mmos-{mib}.secwim"
    if not secwim.exists():
        wim, sdi = demo_inputs(WORKDIR, wim_size=mib << 20)
        secwim.write_bytes(build_secwim(sdi.read_bytes(), wim.read_bytes()))
    ffu = WORKDIR / f"ram-{mib}.ffu"
    if not ffu.exists():
        layout = build_gpt([PartitionSpec("EFIESP", 1 << 20), PartitionSpec("MainOS", mib << 20)])
        disk = WORKDIR / f"disk-{mib}.img"
        with disk.open("wb") as f:
            f.truncate(layout.disk_size)
            f.write(layout.head)
            f.seek(layout.disk_size - len(layout.tail))
            f.write(layout.tail)
            f.seek(layout.partitions[1].offset)
            f.write(random.Random(11).randbytes(mib << 20))
        write_ffu([disk], ffu, version=2)
        disk.unlink()
    return {"secwim": secwim, "ffu": ffu}


# -- the child: runs under the emulator's preload ------------------------------------


async def _child(files: list[str]) -> dict[str, Any]:
    import anyio

    from parallel_flash.engine.discovery import DeviceFilters, find_devices, read_nok_info
    from parallel_flash.engine.pipeline import boot_line
    from parallel_flash.image import ImageBuffer, ImageSet
    from parallel_flash.protocol.selection import Loader, loader_for
    from parallel_flash.transport.base import Link
    from parallel_flash.transport.libusb import UsbContext

    images = ImageSet([ImageBuffer.load(path) for path in files])
    waits: dict[str, list[float]] = {}
    sends: dict[str, list[tuple[int, float]]] = {}

    def timed(link: Link) -> None:
        """Record each reply read's wait (the reply turnaround) and each message's send time."""
        read, stream = link.bulk_in, link.stream_out
        samples = waits.setdefault(link.port, [])
        sent = sends.setdefault(link.port, [])

        async def bulk_in(size: int, *, timeout: float) -> bytes:
            start = time.perf_counter()
            data = await read(size, timeout=timeout)
            samples.append(time.perf_counter() - start)
            return data

        async def stream_out(chunks: Any, **options: Any) -> None:
            chunks = list(chunks)
            start = time.perf_counter()
            await stream(chunks, **options)
            sent.append((sum(len(c.data) for c in chunks), time.perf_counter() - start))

        link.bulk_in = bulk_in  # type: ignore[method-assign]
        link.stream_out = stream_out  # type: ignore[method-assign]

    async with UsbContext() as ctx:
        links = [await ctx.open(device) for device in find_devices(ctx, DeviceFilters())]
        nokv: dict[str, dict[str, Any]] = {}
        for link in links:
            if loader_for(*link.usb_ids) is not Loader.SIMPLEIO:
                nokv[link.port] = (await read_nok_info(link)).describe()
                timed(link)
        start = time.perf_counter()
        records = await boot_line(links, images)
        wall = time.perf_counter() - start
        await anyio.lowlevel.checkpoint()
    return {
        "wall": wall,
        "devices": [
            {"port": r.port, "loader": r.loader, "ok": r.ok, "error": r.error,
             "bytes": r.bytes_done, "rate": r.rate(), "nokv": nokv.get(r.port, {}),
             "turnaround": statistics.median(waits[r.port]) if waits.get(r.port) else None,
             "sends": sends.get(r.port, [])}
            for r in records
        ],
    }


def child(files: list[str]) -> None:
    import anyio

    print(json.dumps(anyio.run(_child, files)))


# -- the parent ---------------------------------------------------------------------


def run_config(kinds: list[str], files: list[Path], rate: float) -> dict[str, Any]:
    from parallel_flash.emulator import DeviceSpec, EmulatedLine

    specs = [DeviceSpec(kind=kind) for kind in kinds]
    with EmulatedLine(specs, link_rate_mbps=rate, verify_data=False) as line:
        done = line.run(
            [sys.executable, __file__, "--child", *map(str, files)],
            capture_output=True, text=True, timeout=900,
        )
    if done.returncode != 0:
        raise SystemExit(f"child failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.strip().splitlines()[-1])
    return result


def protocol_bound(
    kind: str, path: Path, rate: float, turnaround: float, nokv: dict[str, Any]
) -> float:
    """Bytes/s one-message-one-reply allows: image / sum(message / link + turnaround)."""
    from parallel_flash.formats.ffu import read_ffu
    from parallel_flash.protocol.nokia.xfl import XFL_HEAD_SIZE
    from parallel_flash.protocol.nokia.xfs import HEAD_SIZES, XfsKind

    size = path.stat().st_size
    rate_bps = rate * 1e6
    write_buffer = nokv.get("write_buffer_size") or 0x240000
    messages: list[int] = []
    if kind == "lumia":
        messages = [
            min(write_buffer, size - o) + XFL_HEAD_SIZE for o in range(0, size, write_buffer)
        ]
    else:
        ffu = read_ffu(path)
        header = ffu.stores[0].payload_offset
        payload = size - header
        if kind == "ufp-v1":
            chunk = ffu.chunk_size
            messages = [header + HEAD_SIZES[XfsKind.HEADER_V1]]
            messages += [chunk + HEAD_SIZES[XfsKind.PAYLOAD_V1]] * -(-payload // chunk)
        else:
            messages = [min(write_buffer, header - o) + HEAD_SIZES[XfsKind.HEADER_V2]
                        for o in range(0, header, write_buffer)]
            messages += [min(write_buffer, payload - o) + HEAD_SIZES[XfsKind.PAYLOAD_V2]
                         for o in range(0, payload, write_buffer)]
    seconds = sum(length / rate_bps + turnaround for length in messages)
    return size / seconds


def main() -> None:
    if len(sys.argv) > 1 and sys.argv[1] == "--child":
        child(sys.argv[2:])
        return
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--mib", type=int, default=64, help="size of each input (default 64)")
    parser.add_argument("--rate", type=float, default=40.0, help="MB/s per link (default 40)")
    parser.add_argument("--devices", type=int, default=8)
    args = parser.parse_args()
    files = build_inputs(args.mib)

    rows = []
    for label, kind, key in CONFIGS:
        result = run_config([kind] * args.devices, [files[key]], args.rate)
        devices = result["devices"]
        rates = [d["rate"] for d in devices]
        booted = sum(d["ok"] for d in devices)
        link = args.rate * 1e6
        overheads = [
            statistics.median(seconds - length / link for length, seconds in d["sends"])
            for d in devices
            if d["sends"]
        ]
        if kind == "simpleio":
            bounds, turns = [args.rate * 1e6] * len(devices), []
        else:
            turns = [d["turnaround"] for d in devices]
            bounds = [
                protocol_bound(kind, files[key], args.rate, d["turnaround"], d["nokv"])
                for d in devices
            ]
        shares = [rate / bound for rate, bound in zip(rates, bounds, strict=True)]
        rows.append([
            label, f"{booted}/{args.devices}", f"{min(rates) / 1e6:.2f}",
            f"{statistics.mean(rates) / 1e6:.2f}",
            f"{statistics.median(turns) * 1e3:.1f}" if turns else "-",
            f"{statistics.median(overheads) * 1e3:.1f}" if overheads else "-",
            f"{statistics.mean(bounds) / 1e6:.2f}",
            f"{min(shares) * 100:.1f} / {statistics.mean(shares) * 100:.1f} %",
        ])
    print_table(
        f"{args.devices} emulated devices per loader, {args.rate:g} MB/s links, "
        f"{args.mib} MiB inputs (real libusb under umockdev)",
        ["loader", "booted", "min MB/s", "mean MB/s", "reply turnaround ms (median)",
         "send beyond link time ms (median)", "protocol bound MB/s (mean)",
         "rate / bound min / mean"],
        rows,
    )

    per_kind = max(1, args.devices // 4)
    kinds = [kind for _, kind, _ in CONFIGS for _ in range(per_kind)]
    result = run_config(kinds, [files["secwim"], files["ffu"]], args.rate)
    total = sum(d["bytes"] for d in result["devices"])
    booted = sum(d["ok"] for d in result["devices"])
    by_loader: dict[str, list[float]] = {}
    for device in result["devices"]:
        by_loader.setdefault(device["loader"], []).append(device["rate"])
    print_table(
        f"Mixed line of {len(kinds)} ({per_kind} of each kind) booting a .secwim and an FFU "
        "in one run",
        ["booted", "MB sent", "wall s", "aggregate MB/s",
         *(f"{loader} mean MB/s" for loader in by_loader)],
        [[f"{booted}/{len(kinds)}", f"{total / 1e6:.1f}", f"{result['wall']:.2f}",
          f"{total / result['wall'] / 1e6:.2f}",
          *(f"{statistics.mean(r) / 1e6:.2f}" for r in by_loader.values())]],
    )


if __name__ == "__main__":
    main()
