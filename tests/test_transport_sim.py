"""The simulated link and bus: pacing arithmetic and link-level failures."""

from __future__ import annotations

import pytest

from parallel_flash.errors import DeviceDisconnected, TransferStall, TransferTimeout
from parallel_flash.protocol.device import DeviceFaults, DeviceModel
from parallel_flash.transport.sim import SimBus, SimLink, simulated_line


def test_bus_serves_transfers_in_turn_at_its_rate() -> None:
    bus = SimBus(rate=1000.0)
    assert bus.reserve(500, earliest=10.0) == pytest.approx(10.5)
    # A second link asking for the same instant waits for the first.
    assert bus.reserve(500, earliest=10.0) == pytest.approx(11.0)
    # An idle bus starts at the requested time.
    assert bus.reserve(100, earliest=20.0) == pytest.approx(20.1)


def test_line_shares_buses_between_devices() -> None:
    links = simulated_line(5, bus_rate=53.248e6, devices_per_bus=2)
    buses = [link.bus for link in links]
    assert buses[0] is buses[1] and buses[2] is buses[3] and buses[4] is not buses[0]
    assert len({id(bus) for bus in buses}) == 3
    assert [link.port for link in links] == [f"sim-{n}" for n in range(1, 6)]


def test_line_arguments_are_checked() -> None:
    with pytest.raises(ValueError, match="1 to 4096 devices, not 0"):
        simulated_line(0)
    with pytest.raises(ValueError, match=r"slots \[4\]"):
        simulated_line(3, faults={4: DeviceFaults(status=-1)})
    with pytest.raises(ValueError, match="rate must be positive"):
        SimLink(DeviceModel(), port="x", rate=0)


async def test_unknown_control_request_stalls() -> None:
    link = SimLink(DeviceModel(), port="sim-1")
    with pytest.raises(TransferStall, match="0x99"):
        await link.control_out(0x21, 0x99, 0, 0, timeout=1)


async def test_read_with_nothing_to_say_times_out() -> None:
    link = SimLink(DeviceModel(), port="sim-1")
    with pytest.raises(TransferTimeout, match=r"no reply within 0\.05 s"):
        await link.bulk_in(16376, timeout=0.05)


async def test_closed_or_unplugged_links_report_disconnection() -> None:
    model = DeviceModel()
    link = SimLink(model, port="sim-1")
    model.disconnect()
    with pytest.raises(DeviceDisconnected):
        await link.bulk_out(b"\x01", timeout=1)
    other = SimLink(DeviceModel(), port="sim-2")
    await other.aclose()
    with pytest.raises(DeviceDisconnected, match="closed"):
        await other.bulk_in(16, timeout=1)
