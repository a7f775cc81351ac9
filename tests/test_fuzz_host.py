"""Property test: the SimpleIO sans-IO host fed hostile replies.

Written against the host's public interface only (``next_action``,
``completed``, ``received``, ``phase``, ``pop_logs``), so it holds whatever
the reply classification inside does. Whatever a device sends, the host either
moves on or fails with a RemoteProtocolError / DeviceBootError whose message
is its own (no parser internals), it never streams the image before an Id
reply with curPosition 0, and once failed it refuses every further step.
"""

from __future__ import annotations

import uuid

import pytest
from hypothesis import given
from hypothesis import strategies as st

from parallel_flash.errors import DeviceBootError, LocalProtocolError, RemoteProtocolError
from parallel_flash.protocol.host import (
    Finished,
    HostPhase,
    ReadBulk,
    SendBulk,
    SendControl,
    StreamImage,
    WimBootHost,
)
from parallel_flash.protocol.messages import IdReply, LogPacket, encode_status

pytestmark = pytest.mark.fuzz

_INTERNAL = ("Error in path", "stream read less than", "struct.error", "Traceback")


def _id_reply(position: int, name: str, caps: bytes) -> bytes:
    return IdReply(
        cur_position=position, capabilities=caps, unique_id=uuid.UUID(int=3), friendly_name=name
    ).encode()


_names = st.text(max_size=40).filter(lambda s: "\0" not in s)
_valid_id = st.builds(
    _id_reply,
    st.one_of(st.just(0), st.integers(0, (1 << 63) - 1)),
    _names,
    st.binary(min_size=16, max_size=16),
)
_log = st.builds(
    lambda text, level: LogPacket(text=text, level=level).encode(),
    st.text(max_size=200),
    st.integers(0, 255),
)
_status = st.integers(-(1 << 31), (1 << 31) - 1).map(encode_status)


@st.composite
def _damaged(draw: st.DrawFn, message: st.SearchStrategy[bytes]) -> bytes:
    raw = bytearray(draw(message))
    if raw and draw(st.booleans()):
        del raw[draw(st.integers(0, len(raw) - 1)) :]
    for _ in range(draw(st.integers(0, 3))):
        if raw:
            raw[draw(st.integers(0, len(raw) - 1))] = draw(st.integers(0, 255))
    return bytes(raw)


_reply = st.one_of(
    _valid_id,
    _log,
    _status,
    st.just(b"\x06"),  # the Reset reply's ERR opcode
    _damaged(_valid_id),
    _damaged(_log),
    _damaged(_status),
    st.binary(max_size=64),
    st.binary(min_size=1, max_size=16376),
)


@given(
    replies=st.lists(_reply, max_size=40),
    sdi=st.integers(0, 1 << 20),
    wim=st.integers(1, 1 << 24),
    packet=st.sampled_from([64, 512, 1024]),
)
def test_host_survives_any_replies(replies: list[bytes], sdi: int, wim: int, packet: int) -> None:
    host = WimBootHost(sdi_length=sdi, wim_length=wim, max_packet_size=packet)
    pending = iter(replies)
    saw_idle_id = False
    for _ in range(4 * len(replies) + 16):
        action = host.next_action()
        assert host.next_action() == action  # asking twice changes nothing
        if isinstance(action, Finished):
            assert host.phase is HostPhase.DONE and action.status >= 0
            break
        if isinstance(action, (SendControl, SendBulk)):
            if action.data[:1] == b"\x10" if isinstance(action, SendBulk) else False:
                assert saw_idle_id, "WIM opcode sent before an idle Id reply"
            host.completed()
            continue
        if isinstance(action, StreamImage):
            assert saw_idle_id
            assert sum(length for _, length, _ in action.plan) == sdi + wim
            host.completed()
            continue
        assert isinstance(action, ReadBulk)
        reply = next(pending, None)
        if reply is None:
            break  # the device went quiet: the caller's timeout, not the host's business
        phase = host.phase
        try:
            host.received(reply)
        except (RemoteProtocolError, DeviceBootError) as exc:
            assert host.phase is HostPhase.ERROR
            assert not any(marker in str(exc) for marker in _INTERNAL), str(exc)
            with pytest.raises(LocalProtocolError):
                host.next_action()
            break
        if phase is HostPhase.READ_ID and host.phase is HostPhase.SEND_WIM_OPCODE:
            saw_idle_id = True
        for log in host.pop_logs():
            assert isinstance(log, LogPacket)
