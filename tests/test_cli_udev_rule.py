"""``parallel-flash udev-rule``: every device ID the tool drives, printed or installed."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

from parallel_flash.engine.udev import DRIVEN_DEVICES, install_udev_rule, udev_rule
from parallel_flash.protocol.messages import FLASHING_PID, MICROSOFT_VID
from parallel_flash.protocol.nokia.messages import LUMIA_FLASH_IDS, UFP_FLASH_IDS

#: loaders.md: SimpleIO, the Lumia UEFI flash app and UFP, by their published IDs.
EXPECTED_IDS = {
    (0x045E, 0x062A),
    (0x0421, 0x066E),
    (0x0421, 0x0714),
    (0x045E, 0x0A02),
    (0x0421, 0x05EE),
    (0x045E, 0x0658),
}
#: One udev key: NAME or NAME{attr}, an operator, a quoted value.
_KEY = r'[A-Z_]+(\{[A-Za-z_]+\})?(==|!=|\+=|=|:=)"[^"]*"'
_RULE = re.compile(rf"{_KEY}(, {_KEY})*")


def cli(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parallel_flash", "udev-rule", *args],
        capture_output=True,
        text=True,
        timeout=60,
    )


def rule_lines(text: str) -> list[str]:
    return [line for line in text.splitlines() if line and not line.startswith("#")]


def test_every_driven_id_gets_both_access_variants() -> None:
    assert {(d.vendor_id, d.product_id) for d in DRIVEN_DEVICES} == EXPECTED_IDS
    assert {(MICROSOFT_VID, FLASHING_PID), *LUMIA_FLASH_IDS, *UFP_FLASH_IDS} == EXPECTED_IDS
    done = cli()
    assert done.returncode == 0, done.stderr
    lines = rule_lines(done.stdout)
    for line in lines:
        assert _RULE.fullmatch(line), line
    for vid, pid in EXPECTED_IDS:
        ids = (f'ATTR{{idVendor}}=="{vid:04x}"', f'ATTR{{idProduct}}=="{pid:04x}"')
        (line,) = [line for line in lines if all(part in line for part in ids)]
        assert 'SUBSYSTEM=="usb"' in line and 'ENV{DEVTYPE}=="usb_device"' in line
        assert 'TAG+="uaccess"' in line and 'MODE="0660", GROUP="plugdev"' in line
    usbfs = [line for line in lines if "usbfs_memory_mb" in line]
    assert usbfs == [
        'ACTION=="add", SUBSYSTEM=="module", KERNEL=="usbcore", '
        "RUN+=\"/bin/sh -c 'echo 0 > /sys/module/usbcore/parameters/usbfs_memory_mb'\""
    ]
    assert "usermod -aG plugdev" in done.stdout


def test_variants_group_and_usbfs_choice() -> None:
    plugdev = cli("--access", "plugdev", "--group", "line-ops", "--usbfs-mb", "1024").stdout
    assert "uaccess" not in plugdev and 'GROUP="line-ops"' in plugdev
    assert "echo 1024 > " in plugdev
    uaccess = cli("--access", "uaccess", "--usbfs-mb", "keep").stdout
    assert "GROUP=" not in uaccess and "usermod" not in uaccess
    assert "usbfs_memory_mb" not in uaccess
    assert len(rule_lines(uaccess)) == len(EXPECTED_IDS)


def test_install_writes_the_printed_rule(tmp_path: Path) -> None:
    target = tmp_path / "rules.d" / "70-parallel-flash.rules"
    done = cli("--install", "--rules-file", str(target), "--no-reload")
    assert done.returncode == 0, done.stderr
    assert target.read_text() == cli().stdout
    assert oct(target.stat().st_mode & 0o777) == "0o644"
    assert f"udev rule written to {target}" in done.stderr


def test_install_reloads_and_sets_the_cap_or_says_why_not(tmp_path: Path) -> None:
    usbfs = tmp_path / "usbfs_memory_mb"
    usbfs.write_text("16\n")
    result = install_udev_rule(
        udev_rule(), path=tmp_path / "x.rules", usbfs_memory_mb=0, usbfs_path=usbfs
    )
    assert result.usbfs_set and usbfs.read_text() == "0\n"
    if not result.reloaded:  # no udevd here (a container): a warning, not an error
        assert len(result.warnings) == 1 and "udevadm" in result.warnings[0]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--install", "--rules-file", "/proc/parallel-flash.rules", "--no-reload"],
         "cannot write udev rule /proc/parallel-flash.rules"),
        (["--group", "bad group"], "group 'bad group' is not a valid group name"),
        (["--usbfs-mb", "lots"], "expected a size in MB"),
    ],
)  # fmt: skip
def test_bad_requests_fail_with_one_line(args: list[str], message: str) -> None:
    done = cli(*args)
    assert done.returncode == 2
    assert message in done.stderr
    assert "Traceback" not in done.stderr
