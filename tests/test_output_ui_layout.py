"""The layout rules the views share: names cut in the middle, ports ordered and labelled."""

from __future__ import annotations

import pytest
from rich.cells import cell_len

from parallel_flash.output.ui._layout import port_labels, shorten_middle
from parallel_flash.transport.ports import port_sort_key


@pytest.mark.parametrize(
    ("text", "width", "shown"),
    [
        ("Contoso.MSM8960.JD301_ATT.3.2.1", 40, "Contoso.MSM8960.JD301_ATT.3.2.1"),
        ("Contoso.MSM8960.JD301_ATT.3.2.1", 16, "Conto…_ATT.3.2.1"),
        ("Contoso.Simulated.001", 10, "Con…ed.001"),
        ("abcdef", 1, "…"),
        ("abcdef", 0, ""),
    ],
)
def test_shorten_middle_keeps_the_tail(text: str, width: int, shown: str) -> None:
    assert shorten_middle(text, width) == shown
    assert cell_len(shorten_middle(text, width)) <= max(width, 0)


def test_shorten_middle_counts_terminal_cells_of_wide_characters() -> None:
    shown = shorten_middle("\u4e2d\u6587\u540d\u5b57-device-7", 9)
    assert cell_len(shown) <= 9 and shown.endswith("e-7")


def test_ports_sort_by_number_not_by_text() -> None:
    ports = ["1-1.10", "1-1.2", "sim-10", "sim-9", "1-1.2.3", "1-1.1"]
    assert sorted(ports, key=port_sort_key) == [
        "1-1.1",
        "1-1.2",
        "1-1.2.3",
        "1-1.10",
        "sim-9",
        "sim-10",
    ]


def test_port_labels_cut_the_common_prefix_at_a_separator() -> None:
    assert port_labels(["sim-1", "sim-12", "sim-128"]) == (
        "sim-",
        {"sim-1": "1", "sim-12": "12", "sim-128": "128"},
    )
    prefix, labels = port_labels(["1-1.4.1", "1-1.4.12", "1-1.5.2"])
    assert prefix == "1-1." and labels["1-1.4.12"] == "4.12"
    # a hub's own port and the ports behind it stay apart
    assert port_labels(["1-1", "1-1.2"]) == ("1-", {"1-1": "1", "1-1.2": "1.2"})
    assert port_labels(["2-3"]) == ("", {"2-3": "2-3"})
