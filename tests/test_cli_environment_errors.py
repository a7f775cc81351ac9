"""A machine missing a library or the USB bus gets one line naming the fix, and exit 2.

The libraries are made to fail the way they do when absent: ctypes cannot
load them (python-libusb1 and the wimlib/libntfs-3g bindings load them with
ctypes), or libusb_init refuses, as it does in a container without the bus.
"""

from __future__ import annotations

import ctypes
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from parallel_flash.errors import HostSetupError
from parallel_flash.img2wim import libwim, ntfs3g, wimlib

#: Runs the CLI with ctypes refusing to load any library whose name holds HIDE
#: (argv[1]), with MESSAGE (argv[2]) as the loader's error, as dlopen words it.
HIDE_LIBRARY = r"""
import ctypes, sys
hide, message = sys.argv.pop(1), sys.argv.pop(1)
real = ctypes.CDLL.__init__
def init(self, name, *args, **kwargs):
    if name and hide in str(name):
        raise OSError(message.format(name=name))
    real(self, name, *args, **kwargs)
ctypes.CDLL.__init__ = init
from parallel_flash.cli import main
sys.exit(main(sys.argv[1:]))
"""

#: Runs the CLI with libusb_init failing as it does with no /dev/bus/usb.
NO_USB_BUS = r"""
import sys, usb1
def refuse(self):
    raise usb1.USBErrorOther()
usb1.USBContext.open = refuse
from parallel_flash.cli import main
sys.exit(main(sys.argv[1:]))
"""

NOT_FOUND = "{name}: cannot open shared object file: No such file or directory"


def run(script: str, *args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-c", script, *args], capture_output=True, text=True, timeout=120
    )


def one_line(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 2, done.stdout + done.stderr
    assert "Traceback" not in done.stderr, done.stderr
    errors = [line for line in done.stderr.splitlines() if line.startswith("parallel-flash:")]
    assert len(errors) == 1, done.stderr
    return errors[0]


@pytest.fixture(scope="module")
def image(tmp_path_factory: pytest.TempPathFactory) -> tuple[str, str]:
    from parallel_flash.demo.inputs import demo_inputs

    wim, sdi = demo_inputs(tmp_path_factory.mktemp("demo"), wim_size=1 << 20)
    return str(wim), str(sdi)


@pytest.mark.parametrize(
    "command",
    [["list"], ["boot", "WIM", "--sdi", "SDI"], ["boot", "WIM", "--sdi", "SDI", "--watch"]],
)
def test_libusb_missing(command: list[str], image: tuple[str, str]) -> None:
    args = [{"WIM": image[0], "SDI": image[1]}.get(arg, arg) for arg in command]
    line = one_line(run(HIDE_LIBRARY, "libusb", NOT_FOUND, *args))
    assert line == (
        "parallel-flash: error: libusb-1.0 not found: install the Debian package "
        "libusb-1.0-0 (apt-get install libusb-1.0-0)"
    )


def test_libusb_cannot_start_in_a_container() -> None:
    line = one_line(run(NO_USB_BUS, "list"))
    assert line.startswith("parallel-flash: error: libusb cannot start (LIBUSB_ERROR_OTHER")
    assert "--device /dev/bus/usb" in line


def _refuse_to_load(monkeypatch: pytest.MonkeyPatch, message: str) -> None:
    real = ctypes.CDLL.__init__

    def init(self: ctypes.CDLL, name: str | None, *args: Any, **kwargs: Any) -> None:
        if name and ("libwim" in name or "ntfs-3g" in name):
            raise OSError(message.format(name=name))
        real(self, name, *args, **kwargs)

    monkeypatch.setattr(ctypes.CDLL, "__init__", init)
    monkeypatch.setattr(libwim, "_lib", None)
    monkeypatch.setattr(ntfs3g, "_lib", None)


def test_libwim_missing(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    _refuse_to_load(monkeypatch, NOT_FOUND)
    with pytest.raises(HostSetupError) as caught:
        wimlib.wim_info(tmp_path / "x.wim")
    assert str(caught.value) == (
        "libwim.so.15 not found: install the Debian package libwim15 "
        "(apt-get install libwim15; wimtools brings it too)"
    )


def test_libntfs3g_missing_is_not_blamed_on_wimlib(monkeypatch: pytest.MonkeyPatch) -> None:
    # libwim links libntfs-3g: without it, loading libwim fails naming libntfs-3g
    _refuse_to_load(monkeypatch, "libntfs-3g.so.89: cannot open shared object file")
    with pytest.raises(HostSetupError, match=r"libntfs-3g not found \(libwim.so.15 needs it\)"):
        wimlib.wim_info("/nonexistent.wim")
    with pytest.raises(HostSetupError, match=r"install the Debian package libntfs-3g89"):
        ntfs3g._library()
