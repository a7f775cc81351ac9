"""Raw throughput of the umockdev emulator: python-libusb1 async bulk OUT, no engine.

Boots N emulated devices at once with the protocol.md sequence, streaming
SDI + WIM in 1 MiB transfers with 4 in flight per device (ADD_ZERO_PACKET
set), from one libusb event loop in one process under the preload. Prints a
table: devices, MB streamed, wall seconds, aggregate MB/s, CPU seconds of
the client and of the emulator process, and whether every device booted with
the right SHA-256.

This measures the emulator (and libusb under umockdev), not parallel-flash:
the numbers bound what any host architecture can reach against it. The
client busy-polls (the emulated fd always polls ready), so client CPU is
high by construction; see ../shared/docs/usb-testing.md.

    python benchmarks/emulator_throughput.py [--mib 64] [--devices 1 8] [--link-rate MB/s]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import sys
import tempfile
from pathlib import Path

import psutil

from parallel_flash.emulator import EmulatedLine
from parallel_flash.formats.sdi import build_sdi

CLIENT = r"""
import json, struct, sys, time, resource
import usb1

sdi_path, wim_path, in_flight = sys.argv[1], sys.argv[2], int(sys.argv[3])
sdi = open(sdi_path, "rb").read()
wim = open(wim_path, "rb").read()
SIZE = 1 << 20
chunks = [memoryview(sdi)[o:o + SIZE] for o in range(0, len(sdi), SIZE)]
chunks += [memoryview(wim)[o:o + SIZE] for o in range(0, len(wim), SIZE)]
buffers = [bytearray(c) for c in chunks]   # writable: zero-copy in python-libusb1

with usb1.USBContext() as ctx:
    handles = []
    for dev in ctx.getDeviceList(skip_on_error=True):
        if (dev.getVendorID(), dev.getProductID()) == (0x045E, 0x062A):
            h = dev.open()
            h.claimInterface(0)
            h.controlWrite(0x21, 0x22, 1, 0, b"", 1000)
            h.bulkWrite(0x01, b"\x01", 1000)
            h.bulkRead(0x81, 16376, 2000)
            h.bulkWrite(0x01, b"\x10", 1000)
            h.bulkWrite(0x01, struct.pack("<III", len(sdi), len(wim), SIZE), 1000)
            handles.append(h)
    state = {}
    done = [0]
    def callback(transfer):
        h = transfer.getUserData()
        st = state[h]
        if transfer.getStatus() != usb1.TRANSFER_COMPLETED:
            raise SystemExit(f"transfer failed: {transfer.getStatus()}")
        if st["next"] < len(buffers):
            transfer.setBulk(0x01, buffers[st["next"]], callback, h, 5000)
            st["next"] += 1
            transfer.submit()
        else:
            st["active"] -= 1
            if st["active"] == 0:
                done[0] += 1
    t0 = time.perf_counter()
    for h in handles:
        st = state[h] = {"next": 0, "active": 0}
        for _ in range(min(in_flight, len(buffers))):
            t = h.getTransfer(add_zero_packet=True)
            t.setBulk(0x01, buffers[st["next"]], callback, h, 5000)
            st["next"] += 1
            st["active"] += 1
            t.submit()
    while done[0] < len(handles):
        ctx.handleEventsTimeout(1)
    elapsed = time.perf_counter() - t0
    statuses = [struct.unpack("<i", bytes(h.bulkRead(0x81, 16376, 15000)[:4]))[0] for h in handles]
    for h in handles:
        h.releaseInterface(0)
        h.close()
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"devices": len(handles), "elapsed": elapsed, "statuses": statuses,
                  "cpu": usage.ru_utime + usage.ru_stime}))
"""


def _tiny_wim(directory: Path) -> Path:
    from parallel_flash.img2wim.wimlib import capture

    tree = directory / "tree"
    (tree / "Windows").mkdir(parents=True)
    (tree / "Windows" / "readme.txt").write_text("emulator benchmark\n")
    path = directory / "tiny.wim"
    capture(tree, path, image_name="Bench", compression="none", boot=True)
    return path


def run(
    devices: int,
    mib: int,
    link_rate: float | None,
    bus_rate: float | None,
    in_flight: int,
    work: Path,
    verify: bool = True,
) -> dict:
    sdi = work / f"bench-{mib}.sdi"
    if not sdi.exists():
        sdi.write_bytes(build_sdi(part_size=mib << 20))
    wim = work / "tiny.wim"
    if not wim.exists():
        _tiny_wim(work)
    expected = hashlib.sha256(sdi.read_bytes() + wim.read_bytes()).hexdigest()
    script = work / "client.py"
    script.write_text(CLIENT)
    with EmulatedLine(
        devices,
        link_rate_mbps=link_rate,
        bus_rate_mbps=bus_rate,
        usbfs_memory_mb=0,
        verify_data=verify,
    ) as line:
        host = psutil.Process(line.host_pid)
        cpu_before = sum(host.cpu_times()[:2])
        result = line.run(
            [sys.executable, str(script), str(sdi), str(wim), str(in_flight)],
            capture_output=True,
            text=True,
            timeout=600,
        )
        host_cpu = sum(host.cpu_times()[:2]) - cpu_before
        if result.returncode != 0:
            raise SystemExit(f"client failed:\n{result.stderr}")
        data = json.loads(result.stdout.strip().splitlines()[-1])
        summaries = line.summaries()
        stats = line.stats()
    ok = all(
        s["booted"]
        and s["received_bytes"] == s["expected_bytes"]
        and s["expected_bytes"]
        and (s["sha256"] == expected or not verify)
        for s in summaries.values()
    )
    total = devices * (sdi.stat().st_size + wim.stat().st_size)
    return {
        "devices": devices,
        "mb": total / 1e6,
        "seconds": data["elapsed"],
        "mbps": total / 1e6 / data["elapsed"],
        "client_cpu": data["cpu"],
        "host_cpu": host_cpu,
        "ok": ok,
        "reaps": stats["ioctls"].get("reapurbndelay", 0),
        "eagain": stats["ioctls"].get("reap_eagain", 0),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="SDI size per device in MiB")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 8])
    parser.add_argument("--link-rate", type=float, default=None, help="MB/s per device")
    parser.add_argument("--bus-rate", type=float, default=None, help="MB/s per bus")
    parser.add_argument("--in-flight", type=int, default=4)
    parser.add_argument(
        "--no-verify",
        action="store_true",
        help="devices count bytes only (no SHA-256): the emulator's fast mode",
    )
    args = parser.parse_args()
    print(
        f"host: {os.cpu_count()} CPUs; 1 MiB transfers, {args.in_flight} in flight per device; "
        f"link rate {args.link_rate or 'unthrottled'}, bus rate {args.bus_rate or 'none'}, "
        f"{'count only' if args.no_verify else 'SHA-256 verified'}"
    )
    print(
        f"{'devices':>7} {'MB':>8} {'seconds':>8} {'MB/s':>8} {'client CPU s':>12} "
        f"{'emulator CPU s':>14} {'boot+sha ok':>11}"
    )
    with tempfile.TemporaryDirectory() as tmp:
        for devices in args.devices:
            row = run(
                devices,
                args.mib,
                args.link_rate,
                args.bus_rate,
                args.in_flight,
                Path(tmp),
                verify=not args.no_verify,
            )
            print(
                f"{row['devices']:>7} {row['mb']:>8.1f} {row['seconds']:>8.2f} "
                f"{row['mbps']:>8.1f} {row['client_cpu']:>12.2f} {row['host_cpu']:>14.2f} "
                f"{row['ok']!s:>11}"
            )


if __name__ == "__main__":
    main()
