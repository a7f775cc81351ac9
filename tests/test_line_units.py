"""The pieces of line publishing on their own: queue, outbox, broker settings, names."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from parallel_flash.errors import InputError
from parallel_flash.output.line import check_topic_name
from parallel_flash.output.mqtt import MqttSettings, port_topic
from parallel_flash.output.outbox import Outbox, PendingResult
from parallel_flash.output.outqueue import Message, OutQueue


def result(n: int) -> Message:
    return Message("result", b"{}", record_id=f"s:r:{n}")


def state(port: str, n: int) -> Message:
    return Message(f"port/{port}/state", str(n).encode(), retain=True)


def test_results_are_never_dropped_and_go_first() -> None:
    queue = OutQueue(max_retained=2)
    for n in range(5000):
        queue.put_result(result(n))
    queue.put_retained(state("a", 1))
    assert queue.unacknowledged == 5000
    taken = [queue.take() for _ in range(5000)]
    for message in taken:
        assert message is not None
        queue.sent(message)
    assert [m.record_id for m in taken if m] == [f"s:r:{n}" for n in range(5000)]
    assert queue.take() == state("a", 1)


def test_retained_messages_keep_the_latest_and_drop_the_oldest_beyond_the_bound() -> None:
    queue = OutQueue(max_retained=2)
    queue.put_retained(state("a", 1))
    queue.put_retained(state("a", 2))  # replaces: the broker only needs the latest
    queue.put_retained(state("b", 1))
    queue.put_retained(state("c", 1))  # over the bound: the oldest topic goes
    assert queue.dropped == 1
    assert [queue.take(), queue.take(), queue.take()] == [state("b", 1), state("c", 1), None]


def test_a_failed_send_goes_first_again_unless_a_newer_state_replaced_it() -> None:
    queue = OutQueue()
    queue.put_result(result(1))
    queue.put_result(result(2))
    first = queue.take()
    assert first is not None and queue.unacknowledged == 2  # in flight counts
    queue.put_back(first)
    assert queue.take() == result(1)
    queue.put_back(result(1))
    queue.put_retained(state("a", 1))
    queue.take(), queue.take()
    taken = queue.take()
    assert taken == state("a", 1)
    queue.put_retained(state("a", 2))
    queue.put_back(taken)
    assert queue.take() == state("a", 2) and queue.take() is None


def test_outbox_recovers_unacknowledged_results_from_their_report(tmp_path: Path) -> None:
    report = tmp_path / "shift.jsonl"
    entries = [
        {"type": "device", "port": f"1-{n}", "slot": n, "started": f"t{n}", "ok": True}
        for n in (1, 2, 3)
    ]
    report.write_text("".join(json.dumps(e) + "\n" for e in entries))
    path = tmp_path / "state" / "outbox.jsonl"
    outbox = Outbox(path)
    for n in (1, 2, 3):
        outbox.add(PendingResult(f"s:r:{n}", str(report), f"1-{n}", n, f"t{n}"))
    outbox.add(PendingResult("s:r:9", str(tmp_path / "gone.jsonl"), "1-9", 9, "t9"))
    outbox.acknowledge("s:r:2")
    outbox.close()
    with path.open("a") as file:
        file.write('{"pending": "s:r:4", "rep')  # cut short by a power cut
    again = Outbox(path)
    with pytest.raises(InputError, match="in use by another parallel-flash process"):
        Outbox(path)
    found = again.recover()
    assert [(p.record_id, e["port"]) for p, e in found] == [("s:r:1", "1-1"), ("s:r:3", "1-3")]
    assert [p.record_id for p in again.unacknowledged()] == ["s:r:1", "s:r:3"]  # compacted
    again.close()


def test_broker_urls_and_their_errors(tmp_path: Path) -> None:
    plain = MqttSettings.from_url("mqtt://broker.local")
    assert (plain.host, plain.port, plain.tls) == ("broker.local", 1883, False)
    assert plain.username is None
    secure = MqttSettings.from_url("mqtts://st%40line:p%3Ass@10.0.0.5")
    assert (secure.port, secure.tls, secure.username, secure.password) == (
        8883, True, "st@line", "p:ss")
    assert secure.address == "mqtts://st@line@10.0.0.5:8883"  # never the password
    ca = tmp_path / "ca.pem"
    ca.write_text("")
    assert MqttSettings.from_url("mqtt://b:1884", ca_file=str(ca)).tls
    override = MqttSettings.from_url("mqtt://u:p@b", username="v", password="q")
    assert (override.username, override.password) == ("v", "q")
    for url, message in {
        "broker:1883": "is not a broker URL",
        "mqtt://": "is not a broker URL",
        "mqtt://b/topic": "has no path or query",
        "mqtt://b:0x1": "the port must be a number",
    }.items():
        with pytest.raises(InputError, match=message):
            MqttSettings.from_url(url)
    with pytest.raises(InputError, match="--mqtt-key needs --mqtt-cert"):
        MqttSettings.from_url("mqtts://b", key_file=str(ca))


def test_names_are_one_topic_level() -> None:
    assert check_topic_name("line-3.east_A", "--line") == "line-3.east_A"
    for bad in ("", "a/b", "+", "#", "x" * 65, "café"):
        with pytest.raises(InputError, match="one level of the MQTT topic"):
            check_topic_name(bad, "--station")
    assert port_topic("1-1.2") == "port/1-1.2/state"
    assert port_topic("bus/1+#") == "port/bus_1__/state"
