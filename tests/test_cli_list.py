"""``parallel-flash list`` through real libusb against umockdev-emulated devices."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from importlib import resources

import jsonschema
import pytest

from parallel_flash.emulator import DeviceSpec, EmulatedLine

LIST = [sys.executable, "-m", "parallel_flash", "list"]

IDS = [uuid.UUID(f"00000011-f151-a509-0000-00000000000{n}") for n in (1, 2, 3)]


def _specs() -> list[DeviceSpec]:
    return [
        DeviceSpec(port="1-1.1", unique_id=IDS[0], name="Contoso.MSM8960.JD301_ATT.3.2.1"),
        DeviceSpec(port="1-1.2", unique_id=IDS[1], faults="stale=4096"),
        DeviceSpec(port="2-3", unique_id=IDS[2], faults="logs=2"),
    ]


@pytest.mark.umockdev
def test_list_shows_every_device_and_sends_only_the_id_exchange() -> None:
    with EmulatedLine(_specs()) as line:
        table = line.run(LIST, capture_output=True, text=True, timeout=60)
        as_json = line.run([*LIST, "--json"], capture_output=True, text=True, timeout=60)
        summaries = line.summaries(transcript=True)
    assert table.returncode == 0, table.stderr
    lines = table.stdout.splitlines()
    assert lines[0].split() == [
        "PORT", "USB", "ID", "LOADER", "NAME", "UNIQUE", "ID", "CURPOSITION", "NOKV"
    ]
    assert lines[1].split() == [
        "1-1.1", "045e:062a", "simpleio", "Contoso.MSM8960.JD301_ATT.3.2.1", str(IDS[0]), "0"
    ]
    assert lines[2].split()[0] == "1-1.2" and lines[2].split()[-1] == "4096"
    assert lines[3].split()[0] == "2-3"

    assert as_json.returncode == 0, as_json.stderr
    schema = json.loads(
        resources.files("parallel_flash").joinpath("schemas/list.schema.json").read_text()
    )
    jsonschema.Draft202012Validator(schema).validate(json.loads(as_json.stdout))
    listing = {item["port"]: item for item in json.loads(as_json.stdout)}
    assert sorted(listing) == ["1-1.1", "1-1.2", "2-3"]
    assert listing["1-1.2"]["cur_position"] == 4096
    assert listing["2-3"]["unique_id"] == str(IDS[2])
    assert listing["2-3"]["logs"] == [
        "Contoso.Emulated.2-3: log line 1 before reply",
        "Contoso.Emulated.2-3: log line 2 before reply",
    ]
    assert listing["1-1.1"]["usb_id"] == "045e:062a" and listing["1-1.1"]["error"] is None
    # Two lists, each only the control request, 01 and the reply (plus Log packets):
    # nothing that could disturb a device, not even the stuck one.
    for port, summary in summaries.items():
        kinds = [tuple(entry[:2]) if entry[0] == "out" else (entry[0],)
                 for entry in summary["transcript"]]
        assert kinds.count(("control",)) == 2, port
        assert kinds.count(("out", 1)) == 2 and len([k for k in kinds if k[0] == "out"]) == 2
        assert summary["received_bytes"] == 0


@pytest.mark.umockdev
def test_list_filters() -> None:
    with EmulatedLine(_specs()) as line:
        by_port = line.run([*LIST, "--json", "--port", "1-1"], capture_output=True, text=True)
        by_id = line.run(
            [*LIST, "--json", "--id", "{" + str(IDS[2]).upper() + "}"],
            capture_output=True, text=True,
        )
        other_pid = line.run([*LIST, "--pid", "0658"], capture_output=True, text=True)
    assert [d["port"] for d in json.loads(by_port.stdout)] == ["1-1.1", "1-1.2"]
    assert [d["port"] for d in json.loads(by_id.stdout)] == ["2-3"]
    assert other_pid.returncode == 0 and other_pid.stdout == ""
    assert "no device in flashing mode (*:0658)" in other_pid.stderr


def test_list_without_devices_and_with_bad_arguments() -> None:
    result = subprocess.run(LIST, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and result.stdout == ""
    assert "no device in flashing mode (any loader's flashing-mode ID)" in result.stderr
    result = subprocess.run([*LIST, "--json"], capture_output=True, text=True, timeout=60)
    assert json.loads(result.stdout) == []
    bad = subprocess.run([*LIST, "--port", "1:4143"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--port '1:4143': expected a sysfs port path" in bad.stderr
    bad = subprocess.run([*LIST, "--id", "phone-7"], capture_output=True, text=True)
    assert bad.returncode == 2 and "--id 'phone-7': expected a GUID" in bad.stderr
