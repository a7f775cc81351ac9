"""A NOK host machine and a NOK device model wired back to back, no I/O (h11's ConnectionPair).

Also builds the two inputs the NOK loaders take: a .secwim and an FFU, from
the project's own SDI, WIM and GPT disk builders.
"""

from __future__ import annotations

import random
from dataclasses import dataclass, field
from pathlib import Path

from parallel_flash.demo.ffu_writer import write_ffu
from parallel_flash.errors import DeviceDisconnected, TransferTimeout
from parallel_flash.formats.ffu import read_ffu
from parallel_flash.formats.gpt import PartitionSpec, build_gpt
from parallel_flash.protocol.device import OutResult
from parallel_flash.protocol.host import Finished, ReadBulk, SendBulk
from parallel_flash.protocol.nokia.device import NokDeviceModel
from parallel_flash.protocol.nokia.host import AwaitReturn, SendFinal, SendImageMessage
from parallel_flash.protocol.nokia.lumia import LumiaMmosHost
from parallel_flash.protocol.nokia.ufp import UfpRamBootHost


@dataclass
class Exchange:
    """What went over the wire, in order: ("out", bytes) and ("in", bytes)."""

    wire: list[tuple[str, bytes]] = field(default_factory=list)
    #: Image bytes offered before the first reply that refused (for refusal tests).
    image_bytes_offered: int = 0

    def messages(self) -> list[bytes]:
        return [data for kind, data in self.wire if kind == "out"]


def drive(
    host: LumiaMmosHost | UfpRamBootHost, device: NokDeviceModel, image: bytes
) -> Exchange:
    """Run ``host`` against ``device`` until Finished; raises what the host raises."""
    log = Exchange()
    view = memoryview(image)
    while True:
        action = host.next_action()
        if isinstance(action, SendBulk):
            assert not action.zero_packet
            log.wire.append(("out", action.data))
            _deliver(host, device, action.data)
            host.completed()
        elif isinstance(action, SendImageMessage):
            message = (
                action.head
                + bytes(view[action.offset : action.offset + action.length])
                + bytes(action.padding)
            )
            log.wire.append(("out", message))
            log.image_bytes_offered += action.length
            _deliver(host, device, message)
            host.completed()
        elif isinstance(action, ReadBulk):
            reply = device.bulk_in(action.size)
            if reply is None:
                waiting_for = host.waiting_for
                host.abort()
                raise TransferTimeout(f"no reply while waiting for {waiting_for}")
            log.wire.append(("in", reply))
            host.received(reply)
        elif isinstance(action, SendFinal):
            log.wire.append(("out", action.data))
            device.bulk_out(action.data)
            host.completed()
        elif isinstance(action, AwaitReturn):
            if device.returns_as is None or device.stays_away:
                host.abort()
                raise TransferTimeout(f"no device came back waiting for {action.what}")
            host.returned(*device.returns_as)
        elif isinstance(action, Finished):
            return log
        else:  # pragma: no cover - a new action type needs handling here
            raise AssertionError(f"unknown action {action!r}")


def _deliver(host: LumiaMmosHost | UfpRamBootHost, device: NokDeviceModel, data: bytes) -> None:
    result = device.bulk_out(data)
    if result is OutResult.ACCEPTED:
        return
    waiting_for = host.waiting_for
    host.abort()
    if result is OutResult.GONE:
        raise DeviceDisconnected(f"device disconnected while waiting for {waiting_for}")
    raise TransferTimeout(f"device stopped reading while waiting for {waiting_for}")


def make_disk(path: Path, *, seed: int = 5) -> Path:
    """A small GPT disk with data in a few places (what write_ffu takes)."""
    layout = build_gpt([PartitionSpec("EFIESP", 1 << 20), PartitionSpec("MainOS", 3 << 20)])
    rng = random.Random(seed)
    with path.open("wb") as f:
        f.truncate(layout.disk_size)
        f.write(layout.head)
        f.seek(layout.disk_size - len(layout.tail))
        f.write(layout.tail)
        main = layout.partitions[1]
        f.seek(main.offset + 1000)
        f.write(rng.randbytes(700_000))
    return path


@dataclass(frozen=True)
class FfuInput:
    path: Path
    data: bytes
    header_length: int
    chunk_size: int


def make_ffu(directory: Path, *, version: int = 2, chunk_size: int = 128 << 10) -> FfuInput:
    disk = make_disk(directory / f"disk-v{version}.img")
    result = write_ffu(
        [disk], directory / f"image-v{version}.ffu", version=version,  # type: ignore[arg-type]
        chunk_size=chunk_size,
    )
    ffu = read_ffu(result.path)
    return FfuInput(
        path=result.path,
        data=result.path.read_bytes(),
        header_length=ffu.stores[0].payload_offset,
        chunk_size=ffu.chunk_size,
    )


def ufp_host(ffu: FfuInput) -> UfpRamBootHost:
    return UfpRamBootHost(
        ffu_length=len(ffu.data), header_length=ffu.header_length, chunk_size=ffu.chunk_size
    )
