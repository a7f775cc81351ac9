"""``parallel-flash emulate``, the control socket, and the emulator never outliving its owner."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest

pytestmark = pytest.mark.umockdev

COUNT_DEVICES = r"""
import sys, usb1
with usb1.USBContext() as ctx:
    found = sorted(
        f"{d.getBusNumber()}-" + ".".join(map(str, d.getPortNumberList()))
        for d in ctx.getDeviceList(skip_on_error=True)
        if (d.getVendorID(), d.getProductID()) == (0x045E, 0x062A)
    )
print("saw", " ".join(found))
sys.exit(int(sys.argv[1]))
"""

PLUG_THROUGH_SOCKET = r"""
import json, os, socket, usb1
with socket.socket(socket.AF_UNIX) as s:
    s.connect(os.environ["PARALLEL_FLASH_EMULATOR_SOCKET"])
    stream = s.makefile("rwb")
    stream.write(json.dumps({"id": 1, "cmd": "plug", "spec": {"port": "2-1.5"}}).encode() + b"\n")
    stream.flush()
    reply = json.loads(stream.readline())
with usb1.USBContext() as ctx:
    ports = sorted(
        f"{d.getBusNumber()}-" + ".".join(map(str, d.getPortNumberList()))
        for d in ctx.getDeviceList(skip_on_error=True)
        if d.getVendorID() == 0x045E
    )
print(json.dumps({"reply": reply, "ports": ports}))
"""


def emulate(*args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parallel_flash", "emulate", *args],
        capture_output=True,
        text=True,
        timeout=120,
        env=env,
    )


def test_emulate_runs_the_command_and_exits_with_its_code(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    result = emulate(
        "--devices", "2", "--summary", str(summary),
        "--", sys.executable, "-c", COUNT_DEVICES, "7",
    )  # fmt: skip
    assert result.returncode == 7, result.stderr
    assert "saw 1-1.1 1-1.2" in result.stdout
    assert "what 2 devices received" in result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("1-1.")]
    assert [line.split()[0] for line in lines] == ["1-1.1", "1-1.2"]
    report = json.loads(summary.read_text())
    assert report["exit_code"] == 7
    assert sorted(report["devices"]) == ["1-1.1", "1-1.2"]
    assert report["devices"]["1-1.1"]["received_bytes"] == 0
    assert report["usbfs"]["usbfs_memory_mb"] == 16


def test_emulate_places_devices_on_given_ports() -> None:
    result = emulate("--port", "1-1.4.2", "--port", "3-2", "--", sys.executable, "-c",
                     COUNT_DEVICES, "0")  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "saw 1-1.4.2 3-2" in result.stdout


def test_command_plugs_a_device_through_the_control_socket() -> None:
    result = emulate("--devices", "1", "--", sys.executable, "-c", PLUG_THROUGH_SOCKET)
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout.strip().splitlines()[-1])
    assert data["reply"] == {"id": 1, "ok": True, "result": "2-1.5"}
    assert data["ports"] == ["1-1.1", "2-1.5"]


def test_emulate_plugs_and_unplugs_on_a_schedule(tmp_path: Path) -> None:
    summary = tmp_path / "summary.json"
    late = "import time; time.sleep(3); exec(open(__import__('sys').argv[1]).read())"
    script = tmp_path / "count.py"
    script.write_text(COUNT_DEVICES.replace("int(sys.argv[1])", "0"))
    result = emulate(
        "--devices", "1", "--plug-after", "0.2:2", "--unplug-after", "0.2:1-1.1",
        "--unplug-at", "1-1.1:4096", "--summary", str(summary),
        "--", sys.executable, "-c", late, str(script),
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "saw 1-1.2 1-1.3" in result.stdout
    assert "unplugged 1-1.1" in result.stderr
    devices = json.loads(summary.read_text())["devices"]
    assert sorted(devices) == ["1-1.1", "1-1.2", "1-1.3"]
    assert devices["1-1.1"]["present"] is False
    assert devices["1-1.1"]["faults"] == "disconnect=4096"


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--fault", "3:status=-5", "--devices", "2"], "device 3 of 2"),
        (["--fault", "1:bogus"], "unknown fault 'bogus'"),
        (["--port", "1.2"], "expected a sysfs port path"),
        (["--unplug-at", "1-1.1:lots"], "BYTES must be a byte count"),
        ([], "no COMMAND given"),
    ],
)
def test_emulate_rejects_bad_arguments(args: list[str], message: str) -> None:
    command = ["--", "true"] if args else []
    result = emulate(*args, *command)
    assert result.returncode == 2
    assert message in result.stderr


def test_missing_python3_gi_is_one_line_naming_the_package() -> None:
    # The pyenv interpreter really has no gi: point the emulator at it.
    env = dict(os.environ, PARALLEL_FLASH_GI_PYTHON=sys.executable)
    result = emulate("--", "true", env=env)
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0
    assert "install the Debian package python3-gi" in result.stderr


def test_emulator_exits_when_its_owner_is_killed(tmp_path: Path) -> None:
    owner = (
        "import os, sys\n"
        "from parallel_flash.emulator import EmulatedLine\n"
        "line = EmulatedLine(1)\n"
        "line.start()\n"
        "print(line.host_pid, line.root, flush=True)\n"
        "os.kill(os.getpid(), 9)\n"
    )
    result = subprocess.run(
        [sys.executable, "-c", owner], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == -9, result.stderr
    pid_text, root = result.stdout.split()
    deadline = time.monotonic() + 15
    while _alive(int(pid_text)):
        assert time.monotonic() < deadline, "emulator process outlived its owner"
        time.sleep(0.1)
    assert not Path(root).exists()


def _alive(pid: int) -> bool:
    try:
        return psutil.Process(pid).status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False
