"""printable(): device strings never reach a terminal as control sequences."""

from __future__ import annotations

import pytest

from parallel_flash.output.ui import printable
from parallel_flash.output.ui._text import format_duration, format_mb


@pytest.mark.parametrize(
    ("raw", "shown"),
    [
        ("Contoso.MSM8960.JD301_ATT.3.2.1", "Contoso.MSM8960.JD301_ATT.3.2.1"),
        ("[bold]x[/bold]", "[bold]x[/bold]"),  # markup is rich's business: Text keeps it literal
        ("\x1b[31mred", "\\x1b[31mred"),  # ESC (C0)
        ("\x9b2J", "\\x9b2J"),  # CSI as a single C1 character
        ("a\x07b\x08c\x7f", "a\\x07b\\x08c\\x7f"),  # BEL, BS, DEL
        ("two\nlines\r\n", "two\\x0alines\\x0d\\x0a"),
        ("tab\there", "tab\\x09here"),
        ("abc\u202edcba", "abc\\u202edcba"),  # RIGHT-TO-LEFT OVERRIDE
        ("\u2066iso\u2069", "\\u2066iso\\u2069"),  # bidi isolates
        ("zero\u200bwidth", "zero\\u200bwidth"),
        ("line\u2028sep", "line\\u2028sep"),
        ("bad\udcffbyte", "bad\\udcffbyte"),  # surrogateescape leftovers
        ("caf\u00e9 \u4e2d\u6587 \U0001f600", "caf\u00e9 \u4e2d\u6587 \U0001f600"),
        ("no\u00a0break", "no\u00a0break"),  # a space, harmless
        ("", ""),
    ],
)
def test_printable_escapes_controls_and_keeps_text(raw: str, shown: str) -> None:
    assert printable(raw) == shown


def test_printable_output_has_no_control_characters() -> None:
    every_control = "".join(chr(c) for c in [*range(0x20), *range(0x7F, 0xA0)])
    shown = printable(every_control + "\u200e\u200f\u061c\u202a\u202b\u202c\u202d\u202e")
    assert shown.isprintable()
    assert "\\x1b" in shown and "\\x9b" in shown and "\\u202e" in shown


def test_printable_cuts_long_text_and_says_so() -> None:
    shown = printable("x" * 1000, limit=10)
    assert shown == "xxxxxxxxxx...(+990 chars)"


def test_number_formats() -> None:
    assert format_mb(40_000_000) == "40.0"
    assert format_mb(1_048_576) == "1.0"
    assert format_duration(None) == "-:--"
    assert format_duration(float("inf")) == "-:--"
    assert format_duration(59.6) == "1:00"
    assert format_duration(3725) == "1:02:05"
