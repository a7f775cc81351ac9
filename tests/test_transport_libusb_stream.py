"""UsbLink.stream_out through real libusb: cancellation, stalls, usbfs back-off.

Each test runs a small client of the transport API (:data:`CLIENT`) as a
subprocess under umockdev's preload. The client asks the emulator, through
its control socket, how much usbfs memory is still held by submitted URBs:
after ``stream_out`` returns -- normally, by cancellation or by a stall --
that must be zero, i.e. libusb gave every buffer back before we returned.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from parallel_flash.emulator import EmulatedLine

pytestmark = pytest.mark.umockdev

#: argv: SDI WIM MODE [BUDGET_MB]; MODE is cancel | stall | full. Prints one JSON line.
CLIENT = r"""
import json, logging, os, socket, sys, time
import anyio
from parallel_flash.engine.discovery import DeviceFilters, find_devices, identify
from parallel_flash.errors import TransferTimeout
from parallel_flash.image import ImageBuffer
from parallel_flash.protocol.host import TransferPlan
from parallel_flash.protocol.messages import Opcode, WimBootHeader, parse_status
from parallel_flash.transport.base import OutChunk
from parallel_flash.transport.libusb import UsbContext
from parallel_flash.transport.usbfs import UsbfsBudget

sdi, wim, mode = sys.argv[1:4]
budget = UsbfsBudget(int(sys.argv[4]) << 20) if len(sys.argv) > 4 else None
warnings = []

class Keep(logging.Handler):
    def emit(self, record):
        warnings.append(record.getMessage())

logging.getLogger("parallel_flash").addHandler(Keep(logging.WARNING))

def emulator(cmd):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(os.environ["PARALLEL_FLASH_EMULATOR_SOCKET"])
        sock.sendall(json.dumps({"id": 1, "cmd": cmd}).encode() + b"\n")
        reply = json.loads(sock.makefile().readline())
    return reply["result"]

async def main():
    out = {}
    image = ImageBuffer.load(wim, sdi)
    async with UsbContext(budget=budget) as ctx:
        [device] = find_devices(ctx, DeviceFilters())
        link = await ctx.open(device)
        await identify(link)
        size = 1 << 20
        header = WimBootHeader(
            sdi_length=image.sdi_length, wim_length=image.wim_length, transfer_size=size
        )
        await link.bulk_out(Opcode.WIM.encode(), timeout=1)
        await link.bulk_out(header.encode(), timeout=1)
        plan = TransferPlan(
            sdi_length=image.sdi_length, wim_length=image.wim_length,
            transfer_size=size, max_packet_size=link.max_packet_size,
        )
        chunks = (OutChunk(image.view[o : o + n], z) for o, n, z in plan)
        sent = []
        started = time.monotonic()
        try:
            if mode == "cancel":
                with anyio.move_on_after(0.5):
                    await link.stream_out(chunks, in_flight=4, stall_timeout=30,
                                          on_progress=sent.append)
                out["outcome"] = "cancelled"
            else:
                await link.stream_out(chunks, in_flight=4, stall_timeout=0.5,
                                      on_progress=sent.append)
                out["outcome"] = "completed"
                out["status"] = parse_status(await link.bulk_in(16376, timeout=5))
        except TransferTimeout as exc:
            out["outcome"] = f"timeout: {exc}"
        out["seconds"] = time.monotonic() - started
        out["memory_used_after"] = emulator("stats")["memory_used"]
        out["pending_after"] = sum(t.pending for t in link._stream_pool)
        out["bytes_sent"] = sum(sent)
        out["refusals"] = link.refusals
        await link.aclose()
    out["budget_reserved_after"] = (budget.reserved if budget else 0)
    out["emulator"] = emulator("stats")
    out["warnings"] = warnings
    image.close()
    out["image_closed"] = image._mmap.closed
    print(json.dumps(out))

anyio.run(main)
"""


def _client(line: EmulatedLine, sdi: Path, wim: Path, *args: str) -> dict[str, Any]:
    line.serve()
    result = line.run(
        [sys.executable, "-c", CLIENT, str(sdi), str(wim), *args],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.splitlines()[-1])


def test_cancelled_stream_returns_only_after_libusb_gave_every_buffer_back(
    small_wim: Path, small_sdi: Path
) -> None:
    with EmulatedLine(1, link_rate_mbps=1) as line:
        out = _client(line, small_sdi, small_wim, "cancel")
    print(out)
    assert out["outcome"] == "cancelled"
    assert out["pending_after"] == 0
    assert out["memory_used_after"] == 0  # every URB discarded and reaped
    assert 0 < out["bytes_sent"] < small_sdi.stat().st_size + small_wim.stat().st_size
    assert out["image_closed"] is True  # no view of the image is exported any more


def test_a_device_that_stops_reading_is_a_stall_after_the_window(
    small_wim: Path, small_sdi: Path
) -> None:
    with EmulatedLine(1, faults={0: "stop-reading=1048576"}) as line:
        out = _client(line, small_sdi, small_wim, "stall")
    print(out)
    assert out["outcome"].startswith("timeout: no bulk OUT transfer completed for 0.5 s")
    assert out["bytes_sent"] == 1 << 20 or out["bytes_sent"] < 2 << 20
    assert out["pending_after"] == 0 and out["memory_used_after"] == 0
    assert out["seconds"] < 10


def test_submissions_refused_for_memory_back_off_and_finish(
    small_wim: Path, small_sdi: Path
) -> None:
    """The budget believes in 64 MB, the (emulated) kernel allows 2: refusals, no failure."""
    with EmulatedLine(1, usbfs_memory_mb=2, link_rate_mbps=20) as line:
        out = _client(line, small_sdi, small_wim, "full", "64")
    print(out)
    assert out["outcome"] == "completed" and out["status"] == 0
    assert out["bytes_sent"] == small_sdi.stat().st_size + small_wim.stat().st_size
    assert out["refusals"] >= 1 and out["emulator"]["memory_refusals"] >= 1
    assert out["emulator"]["memory_peak"] <= 2 << 20
    assert out["budget_reserved_after"] == 0
    hints = [w for w in out["warnings"] if "usbfs" in w]
    assert len(hints) == 1
    assert "echo 0 > /sys/module/usbcore/parameters/usbfs_memory_mb" in hints[0]


def test_the_cap_is_read_from_sysfs(small_wim: Path, small_sdi: Path) -> None:
    """No budget given: the process budget reads the testbed's usbfs_memory_mb (2 MB)
    and never oversubscribes it, so the kernel never has to refuse."""
    with EmulatedLine(1, usbfs_memory_mb=2, link_rate_mbps=20) as line:
        out = _client(line, small_sdi, small_wim, "full")
    print(out)
    assert out["outcome"] == "completed" and out["status"] == 0
    assert out["refusals"] == 0 and out["emulator"]["memory_refusals"] == 0
    assert out["warnings"] == []
