"""UsbLink's less travelled paths through real libusb, against the emulator.

A device held by someone else, a reply that never comes (cancelled, timed
out), a closed link, a link closed under its own running stream, and a port
nobody returns to. The scenarios run in one client of the transport API
under umockdev's preload, as in test_transport_libusb_stream.py.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from parallel_flash.emulator import EmulatedLine

pytestmark = pytest.mark.umockdev

#: argv: SDI WIM. Prints one JSON line.
CLIENT = r"""
import json, os, socket, sys
import anyio
from parallel_flash.engine.discovery import DeviceFilters, find_devices, identify
from parallel_flash.errors import TransportError
from parallel_flash.image import ImageBuffer
from parallel_flash.protocol.host import TransferPlan
from parallel_flash.protocol.messages import Opcode, WimBootHeader
from parallel_flash.transport.base import OutChunk
from parallel_flash.transport.libusb import UsbContext

sdi, wim = sys.argv[1:3]

def emulator(cmd):
    with socket.socket(socket.AF_UNIX) as sock:
        sock.connect(os.environ["PARALLEL_FLASH_EMULATOR_SOCKET"])
        sock.sendall(json.dumps({"id": 1, "cmd": cmd}).encode() + b"\n")
        return json.loads(sock.makefile().readline())["result"]

async def error_of(call):
    try:
        await call
    except (TransportError, ValueError) as exc:
        return f"{type(exc).__name__}: {exc}"
    return "no error"

def chunks_of(image, link, size):
    plan = TransferPlan(sdi_length=image.sdi_length, wim_length=image.wim_length,
                        transfer_size=size, max_packet_size=link.max_packet_size)
    return [OutChunk(image.view[o : o + n], z) for o, n, z in plan]

async def start_wim(link, image, size):
    await identify(link)
    await link.bulk_out(Opcode.WIM.encode(), timeout=1)
    header = WimBootHeader(sdi_length=image.sdi_length, wim_length=image.wim_length,
                           transfer_size=size)
    await link.bulk_out(header.encode(), timeout=1)

async def edges(ctx, device, image, out):
    link = await ctx.open(device)
    out["repr"] = repr(link)
    out["second_open"] = await error_of(ctx.open(device))
    out["in_flight_0"] = await error_of(
        link.stream_out([], in_flight=0, stall_timeout=1, on_progress=print))
    with anyio.move_on_after(0.3):  # a reply that never comes, cancelled
        await link.bulk_in(16376, timeout=5)
    out["pending_after_cancel"] = link._single.pending
    out["in_timeout"] = await error_of(link.bulk_in(16376, timeout=0.2))
    out["wait_return"] = await link.wait_return(0.2)
    size = 1 << 20
    await start_wim(link, image, size)
    sent = []
    async def stream():
        out["stream"] = await error_of(link.stream_out(
            chunks_of(image, link, size), in_flight=4, stall_timeout=30,
            on_progress=sent.append))
    async with anyio.create_task_group() as group:
        group.start_soon(stream)
        await anyio.sleep(0.3)  # 1 MB/s link: the stream is under way
        await link.aclose()  # closed under its own running stream
    out["sent"] = sum(sent)
    out["closed_repr"] = repr(link)
    out["after_close"] = await error_of(link.bulk_out(b"x", timeout=1))
    out["memory_used_after"] = emulator("stats")["memory_used"]

async def main():
    out = {}
    image = ImageBuffer.load(wim, sdi)
    async with UsbContext() as ctx:
        [device] = find_devices(ctx, DeviceFilters())
        await edges(ctx, device, image, out)
    image.close()
    print(json.dumps(out))

anyio.run(main)
"""


def _client(line: EmulatedLine, sdi: Path, wim: Path) -> dict[str, Any]:
    line.serve()
    result = line.run(
        [sys.executable, "-c", CLIENT, str(sdi), str(wim)],
        capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 0, result.stderr
    out: dict[str, Any] = json.loads(result.stdout.splitlines()[-1])
    return out


def test_busy_cancelled_timed_out_and_closed_under_its_stream(
    small_wim: Path, small_sdi: Path
) -> None:
    with EmulatedLine(1, link_rate_mbps=1, reappear_delay=None) as line:
        out = _client(line, small_sdi, small_wim)
    print(out)
    assert out["repr"].startswith("<UsbLink 1-") and "045e:062a" in out["repr"]
    assert "device busy" in out["second_open"] and "another program" in out["second_open"]
    assert out["in_flight_0"] == "ValueError: in_flight must be at least 1, not 0"
    assert out["pending_after_cancel"] is False  # cancelled, and the cancellation awaited
    assert out["in_timeout"].startswith("TransferTimeout: no answer within 0.2 s")
    assert out["wait_return"] is None
    assert out["stream"].startswith("TransferCancelled")
    assert 0 < out["sent"] < small_sdi.stat().st_size + small_wim.stat().st_size
    assert out["closed_repr"].endswith(" closed>")
    assert "link is closed" in out["after_close"]
    assert out["memory_used_after"] == 0  # every URB discarded and reaped

