"""Three host architectures against the same emulated line (issue 3's numbers).

Every run gets a fresh umockdev line of N emulated devices (devices leave
flashing mode once booted) and boots all of them from the same SDI + WIM:

* ``sequential``   -- one device after another, as a shell loop of single-device
  runs would: ``parallel-flash boot --port P`` once per device, each its own
  process (start-up and image load included, N times).
* ``threads``      -- one thread per device with blocking 1 MiB writes (the
  architecture of Microsoft's ffutool and NXP's uuu), written with synchronous
  python-libusb1 calls (``bulkWrite``/``bulkRead``, an explicit zero-length
  write for the ZLP), in one process reading the image once.
* ``parallel-flash`` -- ``parallel-flash boot`` itself: one async pipeline per
  device, 4 transfers in flight, sized to the usbfs cap.

Links are throttled to 40 MB/s in the emulator, then unthrottled; N = 1, 4, 8.
The emulated kernel keeps the default usbfs cap of 16 MB.

Columns:

* wall s       -- start of the first process to exit of the last (all start-ups included)
* agg MB/s     -- N x image bytes / streaming window (first device's stream start to the
                  last device's status); MB = 10^6 bytes
* dev MB/s     -- per-device stream rate (image bytes / its own stream time), min / mean
* % link       -- per-device rate as a share of the 40 MB/s link, min (throttled runs only)
* CPU s/GB     -- user + system CPU of the host process(es), per GB sent
* RSS MB       -- peak resident memory of the host process (largest one for sequential)

CPU caveat (usb-testing.md): an emulated usbdevfs fd always polls ready, so
whoever handles libusb events under umockdev spins -- parallel-flash's event
thread, and every blocked synchronous transfer of the threads architecture.
The ``pf --sim`` reference rows run the same boot against in-process Python
devices (no libusb, no umockdev) to show the engine's own CPU cost.

Latency caveat: with 8 devices under the default 16 MB usbfs cap only 15
1 MiB transfers fit in flight (1.9 per device), so a device's link idles
whenever its next transfer is submitted late. Under umockdev a late
submission is common: the emulator holds an empty REAPURBNDELAY back for up
to 2 ms per device (to save CPU), which stalls libusb's event handling and
any ioctl on the same fd, and other load on a 2-CPU machine adds more. So
figures at N=8 vary with machine load; ``--usbfs-mb 0`` (the cap raised, as
parallel-flash's warning suggests) gives every device 4 transfers in flight
and takes that latency out of the picture.

Usage: python benchmarks/bench_architectures.py [--mib 64] [--devices 1 4 8]
           [--rates 40 0] [--arch sequential threads parallel-flash] [--usbfs-mb 16]
           [--verify] [--no-sim]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

WORKDIR = Path(os.environ.get("PF_BENCH_DIR", "/tmp/parallel-flash-bench"))
ARCHITECTURES = ("sequential", "threads", "parallel-flash")
LINK_RATE = 40.0
PF = [sys.executable, "-m", "parallel_flash"]
#: How the thread-per-device host sends its zero-length packets (--threads-zlp).
THREADS_ZLP = ["flag"]


# -- the thread-per-device host (ffutool / uuu architecture) ---------------------------


def threads_worker(sdi_path: str, wim_path: str, zlp: str = "flag") -> None:
    """Boot every device with one thread each, as ffutool and uuu do; print JSON.

    Faithful to that architecture, so nothing of it is slower than the real
    thing: each worker thread opens its *own* libusb context (no event lock
    or event thread shared with another device) and its own handle, and
    writes the image in blocking 1 MiB transfers, one at a time. The
    zero-length packet rides on the transfer as the ADD_ZERO_PACKET flag
    (``zlp="flag"``; WinUSB's SHORT_PACKET_TERMINATE policy does the same for
    ffutool) -- the thread blocks in its own context's event handling until
    that transfer completes, which is what ``libusb_bulk_transfer`` does
    inside. ``zlp="write"`` sends it as a separate zero-length write instead
    (a second blocking transfer per chunk). The only thing the threads share
    is the image, read once into one writable buffer; results are collected
    after ``join``, so no lock is taken while streaming.
    """
    import struct
    import threading

    import usb1  # the competitor's architecture, written directly against python-libusb1

    sdi = Path(sdi_path).read_bytes()
    wim = Path(wim_path).read_bytes()
    image = bytearray(sdi + wim)  # read once, writable: python-libusb1 uses it in place
    view = memoryview(image)
    size = 1 << 20
    header = struct.pack("<III", len(sdi), len(wim), size)

    def write_flagged(ctx: usb1.USBContext, transfer: usb1.USBTransfer, chunk: memoryview) -> None:
        done: list[int] = []
        transfer.setBulk(0x01, chunk, callback=lambda t: done.append(t.getStatus()), timeout=1000)
        transfer.submit()
        while not done:
            ctx.handleEventsTimeout(1.0)
        if done[0] != usb1.TRANSFER_COMPLETED or transfer.getActualLength() != len(chunk):
            raise usb1.USBError(f"transfer status {done[0]}")

    def boot(bus: int, address: int, entry: dict[str, Any]) -> None:
        try:
            with usb1.USBContext() as ctx:  # one context per thread: nothing shared
                device = next(
                    d for d in ctx.getDeviceIterator(skip_on_error=True)
                    if (d.getBusNumber(), d.getDeviceAddress()) == (bus, address)
                )
                handle = device.open()
                handle.claimInterface(0)
                mps = device.getMaxPacketSize(0x01)
                handle.controlWrite(0x21, 0x22, 1, 0, b"", 2000)
                handle.bulkWrite(0x01, b"\x01", 2000)
                handle.bulkRead(0x81, 16376, 2000)
                handle.bulkWrite(0x01, b"\x10", 1000)
                handle.bulkWrite(0x01, header, 1000)
                transfer = handle.getTransfer(add_zero_packet=True)
                entry["start"] = time.time()
                for start, length in ((0, len(sdi)), (len(sdi), len(wim))):
                    for offset in range(start, start + length, size):
                        chunk = view[offset : min(offset + size, start + length)]
                        needs_zlp = len(chunk) % mps == 0
                        if zlp == "flag":
                            transfer.setAddZeroPacket(needs_zlp)
                            write_flagged(ctx, transfer, chunk)
                        else:
                            handle.bulkWrite(0x01, chunk, 1000)
                            if needs_zlp:
                                handle.bulkWrite(0x01, b"", 1000)
                status = struct.unpack("<i", bytes(handle.bulkRead(0x81, 16376, 15000)[:4]))[0]
                entry["end"] = time.time()
                entry["ok"] = status >= 0
                transfer.close()
                handle.releaseInterface(0)
                handle.close()
        except (usb1.USBError, StopIteration) as exc:
            entry["error"] = repr(exc)

    with usb1.USBContext() as ctx:
        found = [
            (d.getBusNumber(), d.getDeviceAddress(), d.getBusNumber(), d.getPortNumberList())
            for d in ctx.getDeviceList(skip_on_error=True)
            if (d.getVendorID(), d.getProductID()) == (0x045E, 0x062A)
        ]
    results = [
        {"port": f"{bus}-" + ".".join(map(str, ports)), "ok": False}
        for _, _, bus, ports in found
    ]
    threads = [
        threading.Thread(target=boot, args=(bus, address, entry))
        for (bus, address, _, _), entry in zip(found, results, strict=True)
    ]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    print(json.dumps({"devices": results, "bytes": len(image)}))


# -- measuring one run ---------------------------------------------------------------------


@dataclass
class Run:
    arch: str
    devices: int
    rate: float  # MB/s per link, 0 = unthrottled
    wall: float = 0.0
    cpu: float = 0.0
    rss_mb: float = 0.0
    #: (start, end) wall-clock seconds of each device's stream, and its bytes.
    streams: list[tuple[float, float]] = field(default_factory=list)
    image_bytes: int = 0
    #: CPU seconds the emulator process used during the run (None for --sim).
    emulator_cpu: float | None = None
    ok: bool = False
    note: str = ""

    @property
    def device_rates(self) -> list[float]:
        return [self.image_bytes / (end - start) / 1e6 for start, end in self.streams]

    @property
    def aggregate(self) -> float:
        if not self.streams:
            return 0.0
        window = max(e for _, e in self.streams) - min(s for s, _ in self.streams)
        return self.image_bytes * len(self.streams) / window / 1e6

    @property
    def cpu_per_gb(self) -> float:
        sent = self.image_bytes * len(self.streams) / 1e9
        return self.cpu / sent if sent else 0.0


def _measured(
    argv: Sequence[str], env: dict[str, str], out: Path
) -> tuple[int, float, float, float]:
    """Run a process to completion: (exit status, CPU s, peak RSS MB, wall s)."""
    started = time.monotonic()
    with out.open("w") as stdout:
        process = subprocess.Popen(list(argv), env=env, stdout=stdout, stderr=subprocess.STDOUT)
        _, status, usage = os.wait4(process.pid, 0)
    process.returncode = os.waitstatus_to_exitcode(status)
    wall = time.monotonic() - started
    return process.returncode, usage.ru_utime + usage.ru_stime, usage.ru_maxrss / 1024, wall


def _report_streams(report: Path) -> list[tuple[float, float]]:
    streams = []
    for text in report.read_text().splitlines():
        record = json.loads(text)
        if record.get("type") != "device":
            continue
        end = dt.datetime.fromisoformat(record["finished"]).timestamp()
        streams.append((end - record["stream_seconds"], end))
    return streams


def run_emulated(
    arch: str, devices: int, rate: float, wim: Path, sdi: Path, usbfs_mb: int, verify: bool
) -> Run:
    import psutil

    from parallel_flash.emulator import EmulatedLine

    run = Run(arch, devices, rate, image_bytes=wim.stat().st_size + sdi.stat().st_size)
    expected = hashlib.sha256(sdi.read_bytes() + wim.read_bytes()).hexdigest()
    with EmulatedLine(
        devices,
        link_rate_mbps=rate or None,
        record_transcript=False,
        usbfs_memory_mb=usbfs_mb,
        verify_data=verify,
    ) as line, tempfile.TemporaryDirectory() as tmp:
        env = dict(os.environ, **line.environ())
        work = Path(tmp)
        emulator = psutil.Process(line.host_pid)
        emulator_cpu = sum(emulator.cpu_times()[:2])
        if arch == "sequential":
            for index, port in enumerate(line.ports):
                report = work / f"r{index}.jsonl"
                status, cpu, rss, wall = _measured(
                    [*PF, "boot", str(wim), "--sdi", str(sdi), "--port", port, "--plain",
                     "--report", str(report)],
                    env, work / f"out{index}.txt",
                )
                run.cpu += cpu
                run.rss_mb = max(run.rss_mb, rss)
                run.wall += wall
                run.streams += _report_streams(report)
                if status != 0:
                    run.note = (work / f"out{index}.txt").read_text()[-300:]
        elif arch == "parallel-flash":
            report = work / "r.jsonl"
            status, run.cpu, run.rss_mb, run.wall = _measured(
                [*PF, "boot", str(wim), "--sdi", str(sdi), "--plain", "--report", str(report)],
                env, work / "out.txt",
            )
            run.streams = _report_streams(report)
            if status != 0:
                run.note = (work / "out.txt").read_text()[-300:]
        else:
            status, run.cpu, run.rss_mb, run.wall = _measured(
                [sys.executable, __file__, "--threads-worker", str(sdi), str(wim),
                 "--threads-zlp", THREADS_ZLP[0]],
                env, work / "out.txt",
            )
            text = (work / "out.txt").read_text()
            try:
                result = json.loads(text.strip().splitlines()[-1])
                run.streams = [
                    (d["start"], d["end"]) for d in result["devices"] if d.get("ok")
                ]
            except (ValueError, IndexError, KeyError):
                run.note = text[-300:]
        run.emulator_cpu = sum(emulator.cpu_times()[:2]) - emulator_cpu
        summaries = line.summaries()
    run.ok = (
        len(summaries) == devices
        and len(run.streams) == devices
        and all(
            s["booted"] and (s["sha256"] == expected or not verify) for s in summaries.values()
        )
    )
    return run


def run_sim(devices: int, rate: float, wim: Path, sdi: Path) -> Run:
    """Reference: ``parallel-flash boot --sim N`` (in-process Python devices, no libusb)."""
    run = Run("pf --sim", devices, rate, image_bytes=wim.stat().st_size + sdi.stat().st_size)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.jsonl"
        status, run.cpu, run.rss_mb, run.wall = _measured(
            [*PF, "boot", str(wim), "--sdi", str(sdi), "--sim", str(devices),
             "--sim-rate", str(rate), "--plain", "--report", str(report)],
            dict(os.environ), Path(tmp) / "out.txt",
        )
        run.streams = _report_streams(report)
        run.ok = status == 0 and len(run.streams) == devices
    return run


# -- the table -------------------------------------------------------------------------------


def _row(run: Run) -> list[str]:
    rates = run.device_rates
    link = (
        f"{min(rates) / run.rate * 100:.1f} %" if run.rate and rates else "-"
    )
    return [
        f"{run.rate:g}" if run.rate else "unthrottled",
        str(run.devices),
        run.arch,
        f"{run.wall:.2f}",
        f"{run.aggregate:.1f}",
        f"{min(rates):.1f} / {sum(rates) / len(rates):.1f}" if rates else "-",
        link,
        f"{run.cpu_per_gb:.2f}",
        f"{run.rss_mb:.0f}",
        f"{run.emulator_cpu / run.wall * 100:.0f} %" if run.emulator_cpu is not None else "-",
        "yes" if run.ok else f"NO {run.note.strip()[-60:]!r}",
    ]


HEADER = ["link MB/s", "N", "architecture", "wall s", "agg MB/s", "dev MB/s min/mean",
          "% link min", "CPU s/GB", "RSS MB", "emulator CPU", "all booted"]


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), flush=True)


def targets(runs: list[Run]) -> list[str]:
    def find(arch: str, devices: int, rate: float) -> Run | None:
        return next(
            (r for r in runs if (r.arch, r.devices, r.rate) == (arch, devices, rate)), None
        )

    lines = []
    pf = find("parallel-flash", 8, LINK_RATE)
    seq = find("sequential", 8, LINK_RATE)
    if pf and pf.device_rates:
        share = min(pf.device_rates) / LINK_RATE * 100
        lines.append(f"throttled, N=8: parallel-flash per-device rate, min {share:.1f} % of "
                     f"the link (target >= 95 %): {'met' if share >= 95 else 'NOT met'}")
    if pf and seq:
        ratio = seq.wall / pf.wall
        lines.append(f"throttled, N=8: sequential / parallel-flash wall time {ratio:.2f} "
                     f"(target >= 7): {'met' if ratio >= 7 else 'NOT met'}")
    pf0, th0 = find("parallel-flash", 8, 0.0), find("threads", 8, 0.0)
    if pf0 and th0 and th0.aggregate:
        ratio = pf0.aggregate / th0.aggregate
        lines.append(f"unthrottled, N=8: parallel-flash / thread-per-device aggregate "
                     f"{ratio:.2f} x (target >= 1.15): {'met' if ratio >= 1.15 else 'NOT met'}")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads-worker", nargs=2, metavar=("SDI", "WIM"),
                        help=argparse.SUPPRESS)
    parser.add_argument(
        "--mib", type=int, default=256,
        help="WIM size in MiB (default 256: long enough that start-up jitter does not decide "
        "a device's average rate)",
    )
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 4, 8])
    parser.add_argument("--rates", type=float, nargs="+", default=[LINK_RATE, 0.0],
                        help="link rates in MB/s, 0 = unthrottled (default: 40 0)")
    parser.add_argument("--arch", nargs="+", choices=ARCHITECTURES, default=list(ARCHITECTURES))
    parser.add_argument(
        "--threads-zlp", choices=("flag", "write"), default="flag",
        help="thread-per-device host: ZLP as the ADD_ZERO_PACKET flag (default) or as a "
        "separate zero-length write",
    )
    parser.add_argument("--no-sim", action="store_true", help="skip the pf --sim reference rows")
    parser.add_argument("--verify", action="store_true",
                        help="devices hash what they receive (costs emulator CPU: lower figures)")
    parser.add_argument("--usbfs-mb", type=int, default=16,
                        help="the emulated kernel's usbfs_memory_mb (default 16, 0 = no cap)")
    args = parser.parse_args()
    if args.threads_worker:
        threads_worker(*args.threads_worker, zlp=args.threads_zlp)
        return

    from parallel_flash.demo_image import demo_inputs
    from parallel_flash.emulator import check_environment

    THREADS_ZLP[0] = args.threads_zlp
    problems = check_environment()
    if problems:
        raise SystemExit("cannot run the emulator: " + "; ".join(problems))
    wim, sdi = demo_inputs(WORKDIR, wim_size=args.mib << 20)
    size = (wim.stat().st_size + sdi.stat().st_size) / 1e6
    print(f"host: {os.cpu_count()} CPUs, {os.uname().release}; image {size:.1f} MB "
          f"(SDI + WIM); 1 MiB transfers; emulated usbfs cap {args.usbfs_mb} MB; devices "
          f"{'verify SHA-256' if args.verify else 'count bytes (no SHA-256: --verify)'}")
    runs: list[Run] = []
    rows: list[list[str]] = []
    print_table([])
    for rate in args.rates:
        for devices in args.devices:
            for arch in args.arch:
                run = run_emulated(arch, devices, rate, wim, sdi, args.usbfs_mb, args.verify)
                runs.append(run)
                rows.append(_row(run))
                print("  ".join(rows[-1]), flush=True)
            if not args.no_sim:
                run = run_sim(devices, rate, wim, sdi)
                runs.append(run)
                rows.append(_row(run))
                print("  ".join(rows[-1]), flush=True)
    print()
    print_table(rows)
    print()
    for line in targets(runs):
        print(line)


if __name__ == "__main__":
    main()
