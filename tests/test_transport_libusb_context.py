"""The libusb context and its event thread -- no device needed.

These run against the machine's real libusb (no USB devices here), so they
check the lifecycle: one shared context, one event thread, nothing left
behind, no hang at interpreter exit even when a caller forgets to close.
"""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
import time

import anyio
import pytest

from parallel_flash.engine.discovery import DeviceFilters, find_devices
from parallel_flash.transport.libusb import UsbContext

EVENT_THREAD = "parallel-flash-usb-events"


def _event_threads() -> list[threading.Thread]:
    return [t for t in threading.enumerate() if t.name == EVENT_THREAD]


# -- lifecycle ---------------------------------------------------------------------------


async def test_context_starts_and_stops_one_event_thread() -> None:
    assert not _event_threads()
    async with UsbContext() as first:
        assert len(_event_threads()) == 1
        assert _event_threads()[0].daemon is False
        async with UsbContext() as second:
            assert len(_event_threads()) == 1  # shared: one libusb context per process
            assert second.devices() == first.devices()
        assert len(_event_threads()) == 1
    assert not _event_threads()


async def test_closed_context_says_so() -> None:
    ctx = UsbContext()
    with pytest.raises(RuntimeError, match="not open"):
        ctx.devices()
    async with ctx:
        pass
    with pytest.raises(RuntimeError, match="not open"):
        ctx.devices()
    await ctx.aclose()  # twice is fine


async def test_hotplug_registration_without_devices() -> None:
    async with UsbContext() as ctx, ctx.hotplug() as events:
        with anyio.move_on_after(0.2):
            async for event in events:
                pytest.fail(f"no device exists here, got {event}")
    assert not _event_threads()


async def test_find_devices_and_enumerate_on_an_empty_bus() -> None:
    async with UsbContext() as ctx:
        assert find_devices(ctx, DeviceFilters()) == []
        assert await ctx.enumerate() == []


@pytest.mark.parametrize("close", [True, False])
def test_interpreter_exit_never_hangs(close: bool) -> None:
    """Even a context left open (a caller's bug) must not keep the process alive."""
    script = textwrap.dedent(
        f"""
        import anyio
        from parallel_flash.transport.libusb import UsbContext

        async def main():
            ctx = UsbContext()
            await ctx.__aenter__()
            if {close}:
                await ctx.aclose()

        anyio.run(main)
        print("main done", flush=True)
        """
    )
    started = time.monotonic()
    result = subprocess.run(
        [sys.executable, "-c", script], capture_output=True, text=True, timeout=30
    )
    elapsed = time.monotonic() - started
    assert result.returncode == 0, result.stderr
    assert "main done" in result.stdout
    print(f"exit took {elapsed:.2f} s (close={close})")
