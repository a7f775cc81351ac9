"""Host architectures against the same emulated line, side by side (issues 3 and 10).

Every run gets a fresh umockdev line of N emulated devices (real libusb
through python-libusb1; devices count bytes instead of hashing them unless
``--verify``, so the emulator is not the ceiling) and boots all of them from
the same SDI + WIM:

* ``threads``        -- the architecture of Microsoft's ffutool and NXP's uuu,
  written faithfully: one worker thread per device, each with its *own*
  libusb context and handle, blocking 1 MiB writes one at a time, the ZLP as
  the ADD_ZERO_PACKET flag on the transfer, no lock shared while streaming;
  one process reading the image once.
* ``parallel-flash`` -- ``parallel-flash boot`` itself: one async pipeline per
  device in one process and one task group, 4 transfers in flight, sized to
  the usbfs cap, completions resubmitted on the libusb event thread.
* ``sequential``     -- (``--arch sequential``) a shell loop of single-device
  ``parallel-flash boot --port P`` runs.

Each configuration runs ``--repeat`` times, the architectures alternating
(and their order flipped every other round, so drift in machine load hits
both alike); the table shows medians, with the range of the aggregate.

Columns:

* agg MB/s    -- N x image bytes / streaming window (the first device's first image
                 byte on its link to the last device's last one through it);
                 MB = 10^6 bytes; median (min-max)
* line s      -- command start to the last device's last image byte (start-up,
                 reading the image and streaming: what a line waits for); median
* emulator busy -- the emulator process's CPU over the streaming window, in % of
                 one core: its ioctls are answered by one worker thread, so near
                 100 % the emulator, not the host, sets the aggregate
* occupied    -- that worker thread's time over the window, in %: its CPU plus the
                 time its ioctl handlers spent blocked in client-memory round trips
                 (umockdev's READ_MEM: two per URB, answered by the host's thread).
                 CPU alone understates the worker's load; this is the ceiling
                 column. Both parts are counted over the whole run (the devices'
                 enumeration and identification too), so it may read a few % high.
                 Under the unthrottled rows the emulator's time per URB (occupied
                 seconds / URBs submitted) is printed for both hosts
* dev MB/s    -- slowest device's own stream rate (image bytes / its stream time)
* steal s     -- the most CPU time the virtual machine's host took away (steal, all
                 CPUs, psutil) during any one run of the cell: a row whose runs lost
                 seconds to it was measured on a slower machine than its neighbours

Stream times are the devices' own: the emulator notes, for each device, when
the image's first transfer was submitted (its first byte goes on the link
then) and when the last one was through the link, so every architecture is
timed by the same clock in the same way (no host's own bookkeeping in it).
* % link      -- that as a share of the link rate (throttled runs only)
* CPU s/GB    -- user + system CPU of the host process, per GB sent (start-up included)
* net s/GB    -- the same minus the emulator artefact: an emulated usbdevfs fd
                 always polls ready, so whoever waits for a completion under
                 umockdev spins on empty REAPURBNDELAY ioctls that a real kernel
                 would let sleep in poll(). The emulator counts those empty
                 reaps; each is charged at the client CPU one empty reap costs,
                 calibrated in the same run (``calibrate_empty_reap``), and
                 subtracted.
* empty reaps -- the emulator's count of empty reaps per GB (the spin itself)

Targets (issue 10), printed under the table with met / NOT met:

* unthrottled aggregate >= 1.15 x the thread-per-device host at every N;
* at 40 MB/s per link: slowest device >= 95 % of its link at N = 8 and 16
  under the 16 MB usbfs cap, and the largest N of the run that still holds;
* CPU s/GB of both at N = 8 x 40 MB/s;
* ``--startup``: command start to the first image byte on the link, 256 MiB
  WIM (imports, loading and hashing the image included) <= 0.5 s, and station
  mode's plug-to-first-transfer <= 50 ms.

Load: the machine's load average is printed with the table; on a shared
2-core machine absolute figures move with it, ratios of alternating runs
much less.

Usage: python benchmarks/bench_architectures.py [--mib 256] [--devices 1 4 8 16]
           [--rates 0 40] [--repeat 3] [--arch threads parallel-flash]
           [--usbfs-mb 16] [--event-threads K] [--startup] [--verify]
"""

from __future__ import annotations

import argparse
import datetime as dt
import hashlib
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import psutil

WORKDIR = Path(os.environ.get("PF_BENCH_DIR", "/tmp/parallel-flash-bench"))
ARCHITECTURES = ("sequential", "threads", "parallel-flash")
LINK_RATE = 40.0
PF = [sys.executable, "-m", "parallel_flash"]


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
    # Generous, as the real tools' are: a loaded 2-core host must not fail a device.
    DATA_TIMEOUT_MS = 30_000

    def write_flagged(ctx: usb1.USBContext, transfer: usb1.USBTransfer, chunk: memoryview) -> None:
        done: list[int] = []
        transfer.setBulk(0x01, chunk, callback=lambda t: done.append(t.getStatus()),
                         timeout=DATA_TIMEOUT_MS)
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
                for start, length in ((0, len(sdi)), (len(sdi), len(wim))):
                    for offset in range(start, start + length, size):
                        chunk = view[offset : min(offset + size, start + length)]
                        needs_zlp = len(chunk) % mps == 0
                        if zlp == "flag":
                            transfer.setAddZeroPacket(needs_zlp)
                            write_flagged(ctx, transfer, chunk)
                        else:
                            handle.bulkWrite(0x01, chunk, DATA_TIMEOUT_MS)
                            if needs_zlp:
                                handle.bulkWrite(0x01, b"", DATA_TIMEOUT_MS)
                status = struct.unpack("<i", bytes(handle.bulkRead(0x81, 16376, 15000)[:4]))[0]
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
    #: (start, end) wall-clock seconds of each device's stream.
    streams: list[tuple[float, float]] = field(default_factory=list)
    image_bytes: int = 0
    #: Empty REAPURBNDELAY ioctls the emulator answered (the always-ready fd's spin).
    empty_reaps: int = 0
    #: Wall clock when the host's command was started.
    started: float = 0.0
    #: CPU seconds the emulator process used during the run.
    emulator_cpu: float = 0.0
    #: Seconds umockdev's worker thread was occupied (see Run.emulator_occupancy).
    emulator_occupied: float = 0.0
    #: URBs the host submitted during the run.
    urbs: int = 0
    #: CPU seconds stolen from this (virtual) machine during the run, all CPUs.
    steal: float = 0.0
    ok: bool = False
    note: str = ""

    @property
    def device_rates(self) -> list[float]:
        return [self.image_bytes / (end - start) / 1e6 for start, end in self.streams]

    @property
    def slowest(self) -> float:
        """The slowest device's rate; a device that did not boot counts as 0."""
        if len(self.streams) < self.devices:
            return 0.0
        return min(self.device_rates, default=0.0)

    @property
    def aggregate(self) -> float:
        if not self.streams:
            return 0.0
        return self.image_bytes * len(self.streams) / self.window / 1e6

    @property
    def window(self) -> float:
        """The streaming window: first device's first image byte to the last one's last."""
        if not self.streams:
            return 0.0
        return max(e for _, e in self.streams) - min(s for s, _ in self.streams)

    @property
    def line_time(self) -> float:
        """Command start to the last device's last image byte: what the line waits for."""
        return max(e for _, e in self.streams) - self.started if self.streams else 0.0

    @property
    def emulator_busy(self) -> float:
        """The emulator's CPU over the streaming window, in % of one core.

        Its ioctls are answered by one worker thread (GIL-bound Python behind
        umockdev's socket protocol): near 100 % it is the line's ceiling,
        whatever host drives it.
        """
        return self.emulator_cpu / self.window * 100 if self.window else 0.0

    @property
    def emulator_occupancy(self) -> float:
        """The emulator's worker thread over the streaming window, in %: CPU + blocked.

        A handler that resolves client memory sends umockdev's READ_MEM and
        waits for the host's thread to answer; the worker takes no other
        ioctl meanwhile, yet uses no CPU. Near 100 % nothing more fits through
        it, whatever host drives it.
        """
        return self.emulator_occupied / self.window * 100 if self.window else 0.0

    @property
    def emulator_us_per_urb(self) -> float:
        return self.emulator_occupied / self.urbs * 1e6 if self.urbs else 0.0

    @property
    def gigabytes(self) -> float:
        return self.image_bytes * len(self.streams) / 1e9

    @property
    def cpu_per_gb(self) -> float:
        return self.cpu / self.gigabytes if self.gigabytes else 0.0

    def net_cpu_per_gb(self, empty_reap_cpu: float) -> float:
        if not self.gigabytes:
            return 0.0
        return max(0.0, self.cpu - self.empty_reaps * empty_reap_cpu) / self.gigabytes


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
    """The host's own view (``--sim`` runs, which have no emulated devices)."""
    streams = []
    for text in report.read_text().splitlines():
        record = json.loads(text)
        if record.get("type") != "device" or not record.get("ok"):
            continue
        end = dt.datetime.fromisoformat(record["finished"]).timestamp()
        streams.append((end - record["stream_seconds"], end))
    return streams


def _device_streams(summaries: dict[str, dict[str, Any]]) -> list[tuple[float, float]]:
    """(first image byte on the link, last one through it) of every booted device, wall clock."""
    return [
        (s["image_started_at"], s["image_finished_at"])
        for s in summaries.values()
        if s.get("booted") and s.get("image_started_at") and s.get("image_finished_at")
    ]


@dataclass(frozen=True)
class Setup:
    """What every run of one benchmark invocation shares."""

    wim: Path
    sdi: Path
    usbfs_mb: int
    verify: bool
    event_threads: int | None
    threads_zlp: str

    @property
    def image_bytes(self) -> int:
        return self.wim.stat().st_size + self.sdi.stat().st_size

    def pf_env(self, base: dict[str, str]) -> dict[str, str]:
        env = dict(base)
        if self.event_threads:
            env["PARALLEL_FLASH_EVENT_THREADS"] = str(self.event_threads)
        return env


def run_emulated(arch: str, devices: int, rate: float, setup: Setup) -> Run:
    from parallel_flash.emulator import EmulatedLine

    run = Run(arch, devices, rate, image_bytes=setup.image_bytes)
    wim, sdi = setup.wim, setup.sdi
    with EmulatedLine(
        devices,
        link_rate_mbps=rate or None,
        record_transcript=False,
        usbfs_memory_mb=setup.usbfs_mb,
        verify_data=setup.verify,
    ) as line, tempfile.TemporaryDirectory() as tmp:
        env = setup.pf_env(dict(os.environ, **line.environ()))
        work = Path(tmp)
        emulator = psutil.Process(line.host_pid)
        emulator_before = sum(emulator.cpu_times()[:2])
        worker_before = _WorkerClock(line, emulator)
        steal_before = _steal()
        run.started = time.time()
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
        elif arch.startswith("parallel-flash"):
            if "@" in arch:  # parallel-flash@K: K event threads (libusb contexts)
                env["PARALLEL_FLASH_EVENT_THREADS"] = arch.partition("@")[2]
            report = work / "r.jsonl"
            status, run.cpu, run.rss_mb, run.wall = _measured(
                [*PF, "boot", str(wim), "--sdi", str(sdi), "--plain", "--report", str(report)],
                env, work / "out.txt",
            )
            if status != 0:
                run.note = (work / "out.txt").read_text()[-300:]
        else:
            status, run.cpu, run.rss_mb, run.wall = _measured(
                [sys.executable, __file__, "--threads-worker", str(sdi), str(wim),
                 "--threads-zlp", setup.threads_zlp],
                env, work / "out.txt",
            )
            text = (work / "out.txt").read_text()
            try:
                result = json.loads(text.strip().splitlines()[-1])
                errors = [d.get("error", "status") for d in result["devices"] if not d.get("ok")]
                if errors:
                    run.note = f"{len(errors)} failed: {errors[0]}"
            except (ValueError, IndexError, KeyError):
                run.note = text[-300:]
        run.emulator_cpu = sum(emulator.cpu_times()[:2]) - emulator_before
        worker = _WorkerClock(line, emulator)
        run.emulator_occupied = worker.occupied_since(worker_before)
        run.urbs = worker.delta(worker_before, "submiturb")
        run.empty_reaps = worker.delta(worker_before, "reap_eagain")
        run.steal = _steal() - steal_before
        summaries = line.summaries()
    # Every architecture is timed by the devices themselves: first image byte
    # on the link to the last one through it (the emulator's clock).
    run.streams = _device_streams(summaries)
    expected = ""
    if setup.verify:
        expected = hashlib.sha256(sdi.read_bytes() + wim.read_bytes()).hexdigest()
    run.ok = (
        len(summaries) == devices
        and len(run.streams) == devices
        and all(s["booted"] and (not setup.verify or s["sha256"] == expected)
                for s in summaries.values())
    )
    return run


def _steal() -> float:
    """CPU seconds the hypervisor has taken from this machine so far (0 where not counted)."""
    return float(getattr(psutil.cpu_times(), "steal", 0.0))


def _empty_reaps(line: Any) -> int:
    return int(line.stats()["ioctls"].get("reap_eagain", 0))


class _WorkerClock:
    """umockdev's worker thread at one moment: CPU of every emulator thread, handler times."""

    def __init__(self, line: Any, emulator: psutil.Process) -> None:
        self.ioctls: dict[str, int] = line.stats()["ioctls"]
        self.threads = {t.id: t.user_time + t.system_time for t in emulator.threads()}

    def delta(self, before: _WorkerClock, key: str) -> int:
        """How far the emulator's ``key`` count moved between ``before`` and this."""
        return self.ioctls.get(key, 0) - before.ioctls.get(key, 0)

    def occupied_since(self, before: _WorkerClock) -> float:
        """Seconds the worker was taken between ``before`` and this: CPU + blocked."""
        tid = self.ioctls.get("worker_tid", 0)
        cpu = self.threads.get(tid, 0.0) - before.threads.get(tid, 0.0)
        wall, handler_cpu = self.delta(before, "handler_us"), self.delta(before, "handler_cpu_us")
        return cpu + max(0, wall - handler_cpu) / 1e6


CALIBRATE = r"""
import json, resource, sys, time
import usb1
with usb1.USBContext() as ctx:
    [device] = [d for d in ctx.getDeviceList(skip_on_error=True)
                if (d.getVendorID(), d.getProductID()) == (0x045E, 0x062A)]
    handle = device.open()
    handle.claimInterface(0)
    before = resource.getrusage(resource.RUSAGE_SELF)
    calls = 0
    deadline = time.monotonic() + float(sys.argv[1])
    while time.monotonic() < deadline:
        ctx.handleEventsTimeout(0)
        calls += 1
    after = resource.getrusage(resource.RUSAGE_SELF)
    handle.releaseInterface(0)
    handle.close()
cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
print(json.dumps({"calls": calls, "cpu": cpu}))
"""


def calibrate_empty_reap(seconds: float = 2.0) -> float:
    """Client CPU seconds one empty reap costs: an open, idle device polled in a loop.

    Each ``handleEventsTimeout(0)`` on an idle emulated device is one poll()
    that says ready and one REAPURBNDELAY answered EAGAIN -- exactly the
    spin a real kernel would not cause.
    """
    from parallel_flash.emulator import EmulatedLine

    with EmulatedLine(1, record_transcript=False, verify_data=False) as line:
        before = _empty_reaps(line)
        out = line.run([sys.executable, "-c", CALIBRATE, str(seconds)],
                       capture_output=True, text=True, timeout=60, check=True)
        reaps = _empty_reaps(line) - before
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return float(result["cpu"]) / max(1, reaps)


def run_sim(devices: int, rate: float, setup: Setup) -> Run:
    """Reference: ``parallel-flash boot --sim N`` (in-process Python devices, no libusb)."""
    run = Run("pf --sim", devices, rate, image_bytes=setup.image_bytes)
    with tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.jsonl"
        status, run.cpu, run.rss_mb, run.wall = _measured(
            [*PF, "boot", str(setup.wim), "--sdi", str(setup.sdi), "--sim", str(devices),
             "--sim-rate", str(rate), "--plain", "--report", str(report)],
            dict(os.environ), Path(tmp) / "out.txt",
        )
        run.streams = _report_streams(report)
        run.ok = status == 0 and len(run.streams) == devices
    return run


# -- start-up ------------------------------------------------------------------------------


def startup_once(setup: Setup, *, metrics: bool = False) -> float:
    """Command start to the first image byte on the link, one device, unthrottled.

    ``metrics``: as a station on the line's monitoring runs (``--metrics``):
    the image's digest labels ``station_info``, and nothing may wait for it.
    """
    from parallel_flash.emulator import EmulatedLine

    with EmulatedLine(1, record_transcript=False, verify_data=False,
                      usbfs_memory_mb=setup.usbfs_mb) as line, \
            tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.jsonl"
        env = setup.pf_env(dict(os.environ, **line.environ()))
        extra = ["--metrics", f"127.0.0.1:{_free_port()}"] if metrics else []
        started = time.time()
        subprocess.run([*PF, "boot", str(setup.wim), "--sdi", str(setup.sdi), "--plain",
                        "--report", str(report), *extra],
                       env=env, check=True, capture_output=True)
        [(stream_start, _)] = _device_streams(line.summaries())
    return stream_start - started


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
    return port


def station_plug_once(setup: Setup) -> float:
    """Station mode: plug a device into a running station; plug to its first image byte."""
    from parallel_flash.emulator import EmulatedLine

    with EmulatedLine(0, record_transcript=False, verify_data=False,
                      usbfs_memory_mb=setup.usbfs_mb) as line, \
            tempfile.TemporaryDirectory() as tmp:
        report = Path(tmp) / "r.jsonl"
        env = setup.pf_env(dict(os.environ, **line.environ()))
        process = subprocess.Popen(
            [*PF, "boot", str(setup.wim), "--sdi", str(setup.sdi), "--plain", "--watch",
             "--count", "1", "--report", str(report)],
            env=env, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
        )
        try:
            _wait_for_line(process, "station ready", timeout=120)
            time.sleep(0.5)  # let the hotplug enumeration of an empty line settle
            port = line.plug()
            process.wait(timeout=120)
            # When the emulator's add_from_string returned: the "add" uevent goes
            # out near its end (libusb saw the device 2-8 ms before it returned,
            # measured), and before that the emulator only builds sysfs (70-400 ms
            # under load), which is not the station's latency.
            plugged = next(e["at"] for e in line.events()
                           if e.get("event") == "plugged" and e.get("port") == port)
        finally:
            if process.poll() is None:
                process.kill()
                process.wait()
        [(stream_start, _)] = _device_streams(line.summaries())
    return stream_start - plugged


def _wait_for_line(process: subprocess.Popen[str], text: str, timeout: float) -> None:
    """Read the process's output until a line containing ``text`` (bounded)."""
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    for output in process.stdout:
        if text in output:
            return
        if time.monotonic() > deadline:
            break
    raise SystemExit(f"the station never printed {text!r}")


# -- the table -------------------------------------------------------------------------------


def _median(values: Sequence[float]) -> float:
    return statistics.median(values) if values else 0.0


def _median_of_runs(name: str) -> Any:
    """A read-only attribute: the median of ``name`` over the cell's runs."""
    return property(lambda cell: _median([getattr(run, name) for run in cell.runs]))


@dataclass
class Cell:
    """Every run of one architecture at one (link rate, N)."""

    arch: str
    devices: int
    rate: float
    runs: list[Run] = field(default_factory=list)

    # The medians of the runs' own figures.
    aggregate = _median_of_runs("aggregate")
    slowest = _median_of_runs("slowest")
    emulator_busy = _median_of_runs("emulator_busy")
    emulator_occupancy = _median_of_runs("emulator_occupancy")
    emulator_us_per_urb = _median_of_runs("emulator_us_per_urb")

    @property
    def link_share(self) -> float:
        return self.slowest / self.rate * 100 if self.rate else 0.0

    def cpu(self, empty_reap_cpu: float) -> tuple[float, float]:
        return (_median([r.cpu_per_gb for r in self.runs]),
                _median([r.net_cpu_per_gb(empty_reap_cpu) for r in self.runs]))

    def row(self, empty_reap_cpu: float) -> list[str]:
        aggs = [r.aggregate for r in self.runs]
        raw, net = self.cpu(empty_reap_cpu)
        reaps = _median([r.empty_reaps / r.gigabytes for r in self.runs if r.gigabytes])
        failed = [r for r in self.runs if not r.ok]
        emulated = self.arch != "pf --sim"
        return [
            f"{self.rate:g}" if self.rate else "none",
            str(self.devices),
            self.arch,
            str(len(self.runs)),
            f"{self.aggregate:.0f} ({min(aggs):.0f}-{max(aggs):.0f})",
            f"{_median([r.line_time for r in self.runs]):.2f}",
            f"{self.emulator_busy:.0f} %" if emulated else "-",
            f"{self.emulator_occupancy:.0f} %" if emulated else "-",
            f"{self.slowest:.1f}",
            f"{self.link_share:.1f} %" if self.rate else "-",
            f"{raw:.2f}",
            f"{net:.2f}" if emulated else "-",
            f"{reaps:.0f}" if emulated else "-",
            f"{_median([r.rss_mb for r in self.runs]):.0f}",
            f"{max(r.steal for r in self.runs):.2f}" if emulated else "-",
            "yes" if not failed else f"NO {failed[0].note.strip()[-50:]!r}",
        ]


HEADER = ["link MB/s", "N", "architecture", "runs", "agg MB/s median (range)",
          "line s", "emulator busy", "occupied", "slowest dev MB/s", "% link", "CPU s/GB",
          "net s/GB", "empty reaps/GB", "RSS MB", "steal s", "all booted"]


def load() -> str:
    one, five, _ = os.getloadavg()
    return f"load average {one:.2f} (1 min), {five:.2f} (5 min)"


def targets(cells: list[Cell], empty_reap_cpu: float) -> list[str]:
    def find(arch: str, devices: int, rate: float) -> Cell | None:
        return next((c for c in cells if (c.arch, c.devices, c.rate) == (arch, devices, rate)),
                    None)

    def verdict(ok: bool) -> str:
        return "met" if ok else "NOT met"

    lines = []
    for pf in (c for c in cells if c.arch.startswith("parallel-flash") and not c.rate):
        threads = find("threads", pf.devices, 0.0)
        if threads and threads.aggregate:
            ratio = pf.aggregate / threads.aggregate
            line_times = [_median([r.line_time for r in c.runs]) for c in (pf, threads)]
            lines.append(f"unthrottled, N={pf.devices}: {pf.arch} / thread-per-device "
                         f"aggregate {ratio:.2f} x (target >= 1.15): {verdict(ratio >= 1.15)}; "
                         f"emulator busy {pf.emulator_busy:.0f} % / {threads.emulator_busy:.0f} %"
                         f" of its one core, occupied {pf.emulator_occupancy:.0f} % / "
                         f"{threads.emulator_occupancy:.0f} % at {pf.emulator_us_per_urb:.0f} / "
                         f"{threads.emulator_us_per_urb:.0f} us per URB; "
                         f"line time {line_times[0]:.2f} / {line_times[1]:.2f} s")
    archs = [a for a in dict.fromkeys(c.arch for c in cells) if a != "pf --sim"]
    for arch in archs:
        throttled = sorted((c for c in cells if c.arch == arch and c.rate == LINK_RATE),
                           key=lambda c: c.devices)
        for cell in throttled:
            if arch.startswith("parallel-flash") and cell.devices in (8, 16):
                lines.append(f"{LINK_RATE:g} MB/s, N={cell.devices}: {arch} slowest device "
                             f"{cell.link_share:.1f} % of its link (target >= 95 %): "
                             f"{verdict(cell.link_share >= 95)}")
        breaks = [c.devices for c in throttled if c.link_share < 95]
        holding = [c.devices for c in throttled if not breaks or c.devices < min(breaks)]
        if throttled:
            lines.append(f"{LINK_RATE:g} MB/s: {arch} holds >= 95 % of the link up to N="
                         f"{max(holding) if holding else 'none'} of those run"
                         f"{f' (first below: N={min(breaks)})' if breaks else ''}")
    for arch in archs:
        cell = find(arch, 8, LINK_RATE)
        if cell:
            raw, net = cell.cpu(empty_reap_cpu)
            lines.append(f"{LINK_RATE:g} MB/s, N=8: {arch} CPU {raw:.2f} s/GB, "
                         f"{net:.2f} s/GB net of the emulator's empty reaps")
    return lines


def _architecture(text: str) -> str:
    name, _, threads = text.partition("@")
    if name not in ARCHITECTURES or (threads and (name != "parallel-flash"
                                                  or not threads.isdigit())):
        raise argparse.ArgumentTypeError(
            f"{text!r}: one of {', '.join(ARCHITECTURES)} or parallel-flash@K")
    return text


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads-worker", nargs=2, metavar=("SDI", "WIM"),
                        help=argparse.SUPPRESS)
    parser.add_argument("--mib", type=int, default=256,
                        help="WIM size in MiB (default 256: long enough that start-up jitter "
                        "does not decide a device's average rate)")
    parser.add_argument("--devices", type=int, nargs="+", default=[1, 4, 8, 16])
    parser.add_argument("--rates", type=float, nargs="+", default=[0.0, LINK_RATE],
                        help="link rates in MB/s, 0 = unthrottled (default: 0 40)")
    parser.add_argument("--scale", type=int, nargs="*", default=[24, 32],
                        help=f"extra N run at {LINK_RATE:g} MB/s only, to find where each "
                        "architecture stops holding 95 %% of the link (default: 24 32)")
    parser.add_argument("--repeat", type=int, default=3,
                        help="runs per configuration and architecture, alternating (default 3)")
    parser.add_argument("--arch", nargs="+", type=_architecture,
                        default=["threads", "parallel-flash"],
                        help="threads, parallel-flash, sequential, or parallel-flash@K "
                        "(K event threads); default: threads parallel-flash")
    parser.add_argument("--sim", action="store_true", help="add pf --sim reference rows")
    parser.add_argument("--startup", action="store_true",
                        help="also measure start-up and station plug-to-first-transfer")
    parser.add_argument("--verify", action="store_true",
                        help="devices hash what they receive (costs emulator CPU: lower figures)")
    parser.add_argument("--usbfs-mb", type=int, default=16,
                        help="the emulated kernel's usbfs_memory_mb (default 16, 0 = no cap)")
    parser.add_argument("--event-threads", type=int, default=None,
                        help="parallel-flash: $PARALLEL_FLASH_EVENT_THREADS for its runs")
    parser.add_argument("--threads-zlp", choices=("flag", "write"), default="flag",
                        help="thread-per-device host: ZLP as the ADD_ZERO_PACKET flag (default) "
                        "or as a separate zero-length write")
    args = parser.parse_args()
    if args.threads_worker:
        threads_worker(*args.threads_worker, zlp=args.threads_zlp)
        return

    from parallel_flash.demo.inputs import demo_inputs
    from parallel_flash.emulator import check_environment

    problems = check_environment()
    if problems:
        raise SystemExit("cannot run the emulator: " + "; ".join(problems))
    _compile_package()
    wim, sdi = demo_inputs(WORKDIR, wim_size=args.mib << 20)
    setup = Setup(wim, sdi, args.usbfs_mb, args.verify, args.event_threads, args.threads_zlp)
    print(f"host: {os.cpu_count()} CPUs, {os.uname().release}; image "
          f"{setup.image_bytes / 1e6:.1f} MB (SDI + WIM); 1 MiB transfers; emulated usbfs cap "
          f"{args.usbfs_mb} MB; devices "
          f"{'verify SHA-256' if args.verify else 'count bytes (no SHA-256: --verify)'}; "
          f"parallel-flash event threads {args.event_threads or 'default'}; {load()}",
          flush=True)
    empty_reap_cpu = calibrate_empty_reap()
    print(f"one empty reap costs the client {empty_reap_cpu * 1e6:.1f} us of CPU (calibrated)",
          flush=True)
    cells: list[Cell] = []
    plan = [(rate, devices) for rate in args.rates for devices in args.devices]
    if LINK_RATE in args.rates:
        plan += [(LINK_RATE, devices) for devices in args.scale if devices not in args.devices]
    for rate, devices in plan:
        row = {arch: Cell(arch, devices, rate) for arch in args.arch}
        for round_ in range(args.repeat):
            order = args.arch if round_ % 2 == 0 else list(reversed(args.arch))
            for arch in order:
                run = run_emulated(arch, devices, rate, setup)
                row[arch].runs.append(run)
                print(f"  {rate or 'none'} MB/s N={devices} {arch}: "
                      f"{run.aggregate:.0f} MB/s agg, slowest {run.slowest:.1f} MB/s, "
                      f"{'ok' if run.ok else 'FAILED ' + run.note[-80:]!r}", flush=True)
        cells += row.values()
        if args.sim:
            cells.append(Cell("pf --sim", devices, rate, [run_sim(devices, rate, setup)]))
    print()
    print(f"medians of {args.repeat} alternating runs; {load()} at the end")
    print_table([c.row(empty_reap_cpu) for c in cells])
    print()
    for line in targets(cells, empty_reap_cpu):
        print(line)
    if args.startup:
        starts, with_metrics = [], []
        for _ in range(args.repeat):  # alternating
            starts.append(startup_once(setup))
            with_metrics.append(startup_once(setup, metrics=True))
        plugs = [station_plug_once(setup) for _ in range(args.repeat)]
        print(f"start-up, command to first image byte ({args.mib} MiB WIM): median "
              f"{_median(starts):.3f} s (runs: {', '.join(f'{s:.3f}' for s in starts)}; "
              f"target <= 0.5 s): {'met' if _median(starts) <= 0.5 else 'NOT met'}")
        print(f"start-up with --metrics (prometheus-client imported, image digest not "
              f"waited for): median {_median(with_metrics):.3f} s "
              f"(runs: {', '.join(f'{s:.3f}' for s in with_metrics)})")
        print(f"station, plug to first image byte: median {_median(plugs) * 1000:.0f} ms "
              f"(runs: {', '.join(f'{p * 1000:.0f}' for p in plugs)}; target <= 50 ms): "
              f"{'met' if _median(plugs) <= 0.05 else 'NOT met'}")


def _compile_package() -> None:
    """Byte-compile parallel-flash, as an install does (pip writes .pyc files).

    An editable checkout run with PYTHONDONTWRITEBYTECODE=1 would otherwise
    compile every module from source on every start, which is not what a
    user's installed copy does and would dominate the start-up figure.
    """
    import compileall

    import parallel_flash

    for path in parallel_flash.__path__:
        compileall.compile_dir(path, quiet=1)


def print_table(rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [HEADER, *rows]) for i in range(len(HEADER))]
    print("  ".join(h.ljust(w) for h, w in zip(HEADER, widths, strict=True)))
    print("  ".join("-" * w for w in widths))
    for row in rows:
        print("  ".join(c.ljust(w) for c, w in zip(row, widths, strict=True)), flush=True)


if __name__ == "__main__":
    main()
