"""A host state machine and a device model wired back to back, no I/O (h11's ConnectionPair)."""

from __future__ import annotations

from parallel_flash.errors import TransferTimeout
from parallel_flash.protocol.device import DeviceModel, OutResult
from parallel_flash.protocol.host import (
    Finished,
    ReadBulk,
    SendBulk,
    SendControl,
    StreamImage,
    WimBootHost,
)


def drive(host: WimBootHost, device: DeviceModel, image: bytes) -> list[object]:
    """Run the host against the device until Finished; returns the actions taken."""
    actions: list[object] = []
    while True:
        action = host.next_action()
        actions.append(action)
        if isinstance(action, SendControl):
            r = action.request
            assert device.control(r.request_type, r.request, r.value, r.index)
            host.completed()
        elif isinstance(action, SendBulk):
            assert device.bulk_out(action.data) is OutResult.ACCEPTED
            if action.zero_packet:
                device.bulk_out(b"")
            host.completed()
        elif isinstance(action, ReadBulk):
            reply = device.bulk_in(action.size)
            if reply is None:
                waiting_for = host.waiting_for
                host.abort()
                raise TransferTimeout(f"no reply while waiting for {waiting_for}")
            host.received(reply)
        elif isinstance(action, StreamImage):
            for offset, length, zlp in action.plan:
                result = device.bulk_out(memoryview(image)[offset : offset + length])
                if result is not OutResult.ACCEPTED:
                    host.abort()
                    raise TransferTimeout(f"device {result.value} at {offset}")
                if zlp:
                    device.bulk_out(b"")
            host.completed()
        elif isinstance(action, Finished):
            return actions
