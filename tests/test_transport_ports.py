"""Port paths: the one parser, its normal form, order and prefix rule."""

from __future__ import annotations

import pytest

from parallel_flash.errors import InputError, InvalidValue
from parallel_flash.transport.ports import PortPath, port_sort_key


@pytest.mark.parametrize(
    ("text", "normalised"),
    [
        ("1-1.4.2", "1-1.4.2"),
        (" 2-3 ", "2-3"),
        ("01-01.04", "1-1.4"),
        ("usb:1-2.3", "1-2.3"),
        ("3-26", "3-26"),  # an xHCI root hub may have more than 15 ports
    ],
)
def test_parse_gives_the_sysfs_form(text: str, normalised: str) -> None:
    assert str(PortPath.parse(text)) == normalised


def test_a_bus_alone_only_where_asked() -> None:
    assert PortPath.parse("3", bus_alone=True) == PortPath(3, ())
    assert str(PortPath.parse("3", bus_alone=True)) == "3"
    with pytest.raises(InvalidValue, match="sysfs port path"):
        PortPath.parse("3")


@pytest.mark.parametrize("text", ["", "1:4143", "1-", "1-1..2", "x-1", "1-1.4.", "-1", "usb1"])
def test_parse_rejects_other_forms(text: str) -> None:
    # Both an input error (the CLI exits 2) and a ValueError (a library caller's habit).
    with pytest.raises(InputError, match=f"port {text!r}: expected a sysfs port path"):
        PortPath.parse(text, bus_alone=True)
    with pytest.raises(ValueError, match="sysfs port path"):
        PortPath.parse(text)


@pytest.mark.parametrize(
    ("text", "problem"),
    [
        ("0-1", "bus 0 is outside 1..127"),
        ("128-1", "bus 128 is outside 1..127"),
        ("1-32", "port numbers must be 1..31"),
        ("1-0", "port numbers must be 1..31"),
        ("1-1.1.1.1.1.1.1.1", "more than 7 levels of hubs"),
    ],
)
def test_parse_says_what_is_out_of_range(text: str, problem: str) -> None:
    with pytest.raises(InvalidValue, match=problem):
        PortPath.parse(text)


def test_parts_parent_and_sysfs_path() -> None:
    port = PortPath.parse("1-1.4.2")
    assert (port.bus, port.ports, port.devpath) == (1, (1, 4, 2), "1.4.2")
    assert port.parent == PortPath(1, (1, 4))
    assert PortPath(1, (4,)).parent is None
    assert port.sysfs_path() == "/devices/usb1/1-1/1-1.4/1-1.4.2"


@pytest.mark.parametrize(
    ("prefix", "port", "expected"),
    [
        ("1-1.4", "1-1.4", True),
        ("1-1.4", "1-1.4.2", True),
        ("1-1.1", "1-1.14", False),
        ("1-1.4", "1-1", False),
        ("1", "1-1.4.2", True),
        ("1", "11-1", False),
        ("2-1", "1-1", False),
    ],
)
def test_covers_whole_components(prefix: str, port: str, expected: bool) -> None:
    assert PortPath.parse(prefix, bus_alone=True).covers(PortPath.parse(port)) is expected


def test_order_is_numeric_for_paths_and_names() -> None:
    texts = ["1-1.10", "2-1", "1-1.9", "1-1", "1-1.9.1"]
    expected = ["1-1", "1-1.9", "1-1.9.1", "1-1.10", "2-1"]
    assert [str(p) for p in sorted(PortPath.parse(t) for t in texts)] == expected
    assert sorted(texts, key=port_sort_key) == expected
    assert sorted(["sim-10", "sim-9", "sim-1"], key=port_sort_key) == ["sim-1", "sim-9", "sim-10"]
