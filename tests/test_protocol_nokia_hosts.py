"""The Lumia and UFP host machines against their device models, back to back (no I/O).

Every refusal case of issue 11 fails with a reason naming the status and its
meaning, and the refusals made on NOKV's word happen before any image byte.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

import pytest

from _nok_pair import FfuInput, drive, make_ffu, ufp_host
from parallel_flash.errors import (
    DeviceDisconnected,
    DeviceRefused,
    LoaderStatusError,
    LocalProtocolError,
    RemoteProtocolError,
    TransferTimeout,
)
from parallel_flash.formats.secwim import build_secwim
from parallel_flash.protocol.device import OutResult
from parallel_flash.protocol.nokia.faults import NokFaults
from parallel_flash.protocol.nokia.lumia import LumiaMmosHost, LumiaPhase
from parallel_flash.protocol.nokia.lumia_device import LumiaDeviceModel
from parallel_flash.protocol.nokia.messages import Command
from parallel_flash.protocol.nokia.ufp import UfpPhase
from parallel_flash.protocol.nokia.ufp_device import UfpDeviceModel


@pytest.fixture(scope="module")
def secwim(small_sdi: Path, small_wim: Path) -> bytes:
    return build_secwim(small_sdi.read_bytes(), small_wim.read_bytes())


@pytest.fixture(scope="module")
def ffus(tmp_path_factory: pytest.TempPathFactory) -> dict[int, FfuInput]:
    root = tmp_path_factory.mktemp("ffu")
    return {1: make_ffu(root, version=1), 2: make_ffu(root, version=2)}


def lumia(faults: str = "", **kwargs: object) -> LumiaDeviceModel:
    return LumiaDeviceModel(faults=NokFaults.parse(faults), **kwargs)  # type: ignore[arg-type]


def ufp(version: int, faults: str = "", **kwargs: object) -> UfpDeviceModel:
    return UfpDeviceModel(
        protocol_version=version, faults=NokFaults.parse(faults), **kwargs  # type: ignore[arg-type]
    )


# -- Lumia: MMOS over USB -------------------------------------------------------------


@pytest.mark.parametrize("piece", [0x240000, 0x100000, 777_777, None])
def test_lumia_boots_a_secwim_and_comes_back_in_label_mode(
    secwim: bytes, piece: int | None
) -> None:
    device = LumiaDeviceModel(write_buffer_size=piece)
    host = LumiaMmosHost(image_length=len(secwim))
    log = drive(host, device, secwim)

    size = piece or 0x240000
    pieces = -(-len(secwim) // size)
    messages = log.messages()
    assert messages[:2] == [b"NOKV", b"NOKD"]
    assert messages[2:4] == [b"NOKXFR\0FVER", b"NOKXFR\0RRKH"]
    assert all(m[:6] == b"NOKXFL" for m in messages[4 : 4 + pieces])
    assert [len(m) - 0x20 for m in messages[4 : 4 + pieces]] == [
        min(size, len(secwim) - i * size) for i in range(pieces)
    ]
    assert messages[4 + pieces :] == [b"NOKXCBA", b"NOKR"]
    # one request, one reply: every message but NOKR got exactly one reply, in turn
    kinds = [kind for kind, _ in log.wire]
    assert kinds == ["out", "in"] * (len(messages) - 1) + ["out"]
    assert device.rejection is None
    assert device.sha256 == hashlib.sha256(secwim).hexdigest()
    assert device.booted and device.returns_as == (0x0421, 0x0660)
    assert host.phase is LumiaPhase.DONE
    assert host.params == {"FVER": b"3051.40000.1349.0010", "RRKH": bytes(range(32))}
    assert host.image_bytes_sent == len(secwim)


@pytest.mark.parametrize(
    ("faults", "match"),
    [
        ("no-mmos", "MMOS over USB: NOKV subblock 0x1F is absent"),
        ("mmos=0", "subblock 0x1F is 0, not 1"),
        ("mmos=2", "subblock 0x1F is 2, not 1"),
        ("wbs=0", "WriteBufferSize 0"),
        ("app-type=1", "BootManager .* not the flash app"),
        ("noku", "answered NOKU to NOKV"),
    ],
)
def test_lumia_refusals_come_before_any_image_byte(secwim: bytes, faults: str, match: str) -> None:
    device = lumia(faults)
    host = LumiaMmosHost(image_length=len(secwim))
    with pytest.raises(DeviceRefused, match=match):
        drive(host, device, secwim)
    assert host.failed and host.image_bytes_sent == 0
    assert device.received_bytes == 0 and device.messages == 1


@pytest.mark.parametrize(
    ("faults", "error", "match"),
    [
        ("status=0x1003", LoaderStatusError, r"offset 0\) answered status 0x1003 \(hash mis"),
        (
            "status=0x0012,status-at=0x240000",
            LoaderStatusError,
            r"offset 2359296\) answered status 0x0012 \(authentication required\)",
        ),
        ("switch-status=0x1004", LoaderStatusError, r"NOKXCBA .* 0x1004 \(security header import"),
        ("disconnect=1000", DeviceDisconnected, "MMOS piece"),
        ("stop-reading=1000", TransferTimeout, "MMOS piece"),
        ("silent-after=1", TransferTimeout, "reply to an MMOS piece"),
        ("return-pid=0x066e", RemoteProtocolError, "066e, not in Label mode"),
        ("no-return", TransferTimeout, "Label mode"),
    ],
)
def test_lumia_failures_name_the_status_and_its_meaning(
    secwim: bytes, faults: str, error: type[Exception], match: str
) -> None:
    host = LumiaMmosHost(image_length=len(secwim))
    with pytest.raises(error, match=match):
        drive(host, lumia(faults), secwim)
    assert host.failed


def test_lumia_inconsistent_secwim_is_refused_by_the_device(secwim: bytes) -> None:
    broken = secwim[:-4] + (len(secwim)).to_bytes(4, "little")  # catalog length too big
    device = lumia()
    with pytest.raises(LoaderStatusError, match=r"0x1106 \(security header validation failed\)"):
        drive(LumiaMmosHost(image_length=len(broken)), device, broken)
    assert "catalog_length" in (device.rejection or "")


def test_lumia_model_counts_a_second_message_before_the_reply(secwim: bytes) -> None:
    device = lumia()
    assert device.bulk_out(b"NOKV") is OutResult.ACCEPTED
    assert device.bulk_out(b"NOKV") is OutResult.ACCEPTED
    assert "before the reply to the previous one was read" in (device.rejection or "")


def test_nok_models_refuse_zlps_and_short_reply_buffers() -> None:
    device = lumia()
    device.bulk_out(b"")
    assert "zero-length packet" in (device.rejection or "")
    other = ufp(2)
    other.bulk_out(Command.INFO.value)
    assert other.bulk_in(16376) is not None
    assert "less than 0xF000" in (other.rejection or "")


def test_lumia_host_refuses_files_of_4_gib() -> None:
    with pytest.raises(LocalProtocolError, match="u32"):
        LumiaMmosHost(image_length=1 << 32)


# -- UFP: FFU to RAM ------------------------------------------------------------------


@pytest.mark.parametrize("protocol", [1, 2])
@pytest.mark.parametrize("ffu_version", [1, 2])
def test_ufp_ram_boots_an_ffu(ffus: dict[int, FfuInput], protocol: int, ffu_version: int) -> None:
    ffu = ffus[ffu_version]
    device = ufp(protocol, write_buffer_size=0x30000)
    host = ufp_host(ffu)
    log = drive(host, device, ffu.data)

    messages = log.messages()
    assert messages[0] == b"NOKV"
    h, c, w = ffu.header_length, ffu.chunk_size, 0x30000
    payload = len(ffu.data) - h
    if protocol == 1:
        assert len(messages) == 2 + -(-payload // c)
        assert len(messages[1]) == h + 0x20 and messages[1][0x0F] == 0x0B
        assert {len(m) for m in messages[2:]} == {c + 0x1C}
    else:
        headers = -(-h // w)
        assert len(messages) == 1 + headers + -(-payload // w)
        assert all(m[0x0F] == 0x21 for m in messages[1 : 1 + headers])
        assert all(m[0x0F] == 0x1B for m in messages[1 + headers :])
    assert all(m[0x1C] == 0x40 for m in messages[1:2])  # options: FlashToRAM
    assert device.rejection is None
    assert device.sha256 == hashlib.sha256(ffu.data).hexdigest()
    assert device.booted and device.disconnected  # RAM boot: it left after the last reply
    assert host.phase is UfpPhase.DONE and host.version == protocol


def test_ufp_v1_pads_the_last_chunk(tmp_path: Path) -> None:
    """A payload that is not whole chunks: the last v1 message is still a full chunk."""
    ffu = make_ffu(tmp_path, version=1, chunk_size=64 << 10)
    assert (len(ffu.data) - ffu.header_length) % (64 << 10) == 0  # blocks are whole chunks
    host = ufp_host(ffu)
    device = ufp(1)
    drive(host, device, ffu.data)
    assert device.sha256 == hashlib.sha256(ffu.data).hexdigest()


@pytest.mark.parametrize(
    ("faults", "match"),
    [
        ("mask=0", r"protocol mask 0x0000 has neither SyncV1 \(1\) nor SyncV2 \(4\)"),
        ("mask=2", r"protocol mask 0x0002 has neither"),
        ("wbs=0", "WriteBufferSize 0$"),
        ("no-wbs", r"WriteBufferSize 0 \(NOKV subblock 0x02 is absent\)"),
        ("memory=100000", "more than the device's LargestMemoryRegion of 100000 bytes"),
        ("noku", "answered NOKU to NOKV"),
    ],
)
def test_ufp_refusals_come_before_any_image_byte(
    ffus: dict[int, FfuInput], faults: str, match: str
) -> None:
    device = ufp(2, faults)
    host = ufp_host(ffus[2])
    with pytest.raises(DeviceRefused, match=match):
        drive(host, device, ffus[2].data)
    assert host.failed and host.image_bytes_sent == 0
    assert device.received_bytes == 0 and device.messages == 1


@pytest.mark.parametrize(
    ("faults", "error", "match"),
    [
        ("noku-v2", DeviceRefused, "NOKU.* header v2 .* flash protocol v2 not supported"),
        ("status=0x1304", LoaderStatusError, r"header v2 at file offset 0\) answered status "
         r"0x1304 \(invalid platform ID\)"),
        ("status=0x0001,status-at=0x70000", LoaderStatusError, r"payload v2 .* 0x0001 "
         r"\(couldn't allocate memory\)"),
        ("disconnect=0x10000", DeviceDisconnected, "FFU"),
        ("stop-reading=0x10000", TransferTimeout, "FFU"),
        ("silent-after=1", TransferTimeout, "reply to an FFU header message"),
    ],
)
def test_ufp_failures_name_the_status_and_its_meaning(
    ffus: dict[int, FfuInput], faults: str, error: type[Exception], match: str
) -> None:
    host = ufp_host(ffus[2])
    with pytest.raises(error, match=match):
        drive(host, ufp(2, faults), ffus[2].data)
    assert host.failed


def test_ufp_v2_header_answered_noku_is_refused_before_any_payload_byte(
    ffus: dict[int, FfuInput],
) -> None:
    """loaders.md A.1: a 4-byte answer to a header v2 message means "v2 not supported".

    The device answers the first header part without taking it; the host
    refuses there, so neither a further header part nor a payload byte is sent.
    """
    ffu = ffus[2]
    device = ufp(2, "noku-v2", write_buffer_size=0x1000)
    assert ffu.header_length > 0x1000  # the header would take several v2 parts
    host = ufp_host(ffu)
    with pytest.raises(DeviceRefused, match=r"header v2 message at file offset 0 and took none"):
        drive(host, device, ffu.data)
    heads = [bytes.fromhex(entry[2]) for entry in device.transcript if entry[0] == "out"]
    assert [head[:6] for head in heads] == [b"NOKV", b"NOKXFS"]
    assert host.image_bytes_acknowledged == 0 and device.received_bytes == 0
    assert host.waiting_for.startswith("the reply to an FFU header message")


def test_ufp_device_checks_platform_and_hashes(ffus: dict[int, FfuInput]) -> None:
    ffu = ffus[1]
    with pytest.raises(LoaderStatusError, match=r"0x1304 \(invalid platform ID\)"):
        drive(ufp_host(ffu), ufp(1, platform_id="Other.Platform"), ffu.data)
    flipped = bytearray(ffu.data)
    flipped[-5] ^= 0xFF
    device = ufp(1)
    with pytest.raises(LoaderStatusError, match=r"0x1003 \(hash mismatch\)"):
        drive(ufp_host(ffu), device, bytes(flipped))
    assert "hash table" in (device.rejection or "")


def test_ufp_device_refuses_an_ffu_over_its_ram_after_the_header(ffus: dict[int, FfuInput]) -> None:
    """A host that did not check LargestMemoryRegion still meets the device's 0x0001."""
    ffu = ffus[2]
    device = UfpDeviceModel(protocol_version=2, ram_limit=len(ffu.data) - 1)
    host = ufp_host(ffu)
    with pytest.raises(DeviceRefused, match="LargestMemoryRegion"):
        drive(host, device, ffu.data)


# -- fault text ------------------------------------------------------------------------


def test_nok_faults_round_trip_and_errors() -> None:
    text = "no-mmos,wbs=0,status=0x1003,status-at=4096,no-return"
    faults = NokFaults.parse(text)
    assert faults.no_mmos and faults.write_buffer == 0 and faults.status == 0x1003
    assert faults.status_at == 4096 and faults.no_return
    assert NokFaults.parse(faults.describe()) == faults
    for bad, match in [
        ("frobnicate", "unknown fault 'frobnicate'"),
        ("no-mmos=1", "takes no value"),
        ("wbs", "needs a value"),
        ("wbs=x", "not an integer"),
        ("wbs=-1", "negative"),
    ]:
        with pytest.raises(ValueError, match=match):
            NokFaults.parse(bad)


@pytest.mark.parametrize("text", ["status=0x10000", "mask=65536", "wbs=0x100000000", "mmos=256"])
def test_nok_faults_refuse_values_wider_than_the_wire(text: str) -> None:
    with pytest.raises(ValueError, match=r"must be 0\.\."):
        NokFaults.parse(text)


def test_models_tell_messages_apart_by_their_length_fields(secwim: bytes) -> None:
    """A message sent as several transfers of whole packets is still one message."""
    from parallel_flash.protocol.nokia.xfl import MmosPiece

    device = lumia()
    assert device.bulk_out(b"NOKV") is OutResult.ACCEPTED
    assert device.bulk_in(0xF000) is not None
    piece = secwim[:0x240000]
    message = MmosPiece(
        total_length=len(secwim), offset=0, piece_length=len(piece)
    ).encode_head() + piece
    for at in range(0, len(message), 0x40000):  # 256 KiB transfers, the last one shorter
        assert device.bulk_out(message[at : at + 0x40000]) is OutResult.ACCEPTED
        if at + 0x40000 < len(message):
            assert device.bulk_in(0xF000) is None  # no reply before the message is whole
    assert device.bulk_in(0xF000) == b"NOKXFL\0\0"
    assert device.messages == 2 and device.received_bytes == len(piece)
    assert device.rejection is None

    cut = lumia()
    cut.bulk_out(message[:1000])  # a short packet in the middle of a message
    assert "short packet" in (cut.rejection or "")
