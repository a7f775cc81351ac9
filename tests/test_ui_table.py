"""render_line() and LiveTable, drawn into an in-memory terminal console with a fake clock."""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from parallel_flash.events import DeviceLog, DeviceRecord, DeviceState
from parallel_flash.ui import LiveTable, render_line

NOW = 1000.0
MB = 1_000_000
EVIL = "[bold]x[/bold]\x1b[31mred"


def record(
    slot: int,
    *,
    state: DeviceState = DeviceState.SENDING_WIM,
    done: int = 50 * MB,
    total: int = 100 * MB,
    name: str | None = None,
    error: str | None = None,
    status: int | None = None,
) -> DeviceRecord:
    rec = DeviceRecord(
        slot=slot,
        port=f"1-1.{slot}",
        name=f"Contoso.MSM8960.JD301_ATT.3.2.{slot}" if name is None else name,
        unique_id=f"00000011-f151-a509-0000-{slot:012x}",
        started=NOW - 12,
        wall_started=1_700_000_000.0,
        stream_started=NOW - 10,
        bytes_total=total,
        bytes_done=done,
    )
    rec.state = state
    rec.error = error
    rec.status = status
    if state.finished:
        rec.finished = NOW - 1
        rec.stream_finished = NOW - 2
    return rec


def draw(renderable: object, *, width: int = 200, color: bool = False) -> str:
    console = Console(
        file=io.StringIO(),
        force_terminal=True,
        width=width,
        height=60,
        color_system="truecolor" if color else None,
        legacy_windows=False,
    )
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def line_of(output: str, text: str) -> str:
    matches = [line for line in output.splitlines() if text in line]
    assert len(matches) == 1, (text, output)
    return matches[0]


def test_rows_states_and_totals() -> None:
    records = [
        record(1, state=DeviceState.BOOTED, done=100 * MB, status=0),
        record(
            2, state=DeviceState.FAILED, done=30 * MB, error="WIM boot failure status 0xc0000017"
        ),
        record(3, state=DeviceState.SENDING_WIM, done=50 * MB),
        record(4, state=DeviceState.IDENTIFYING, done=0, name=""),
    ]
    records[3].unique_id = ""
    records[3].stream_started = None
    out = draw(render_line(records, now=NOW, title="booting x.wim", width=200))

    assert "booting x.wim" in out
    for header in ("Port", "Name", "ID", "State", "Progress", "MB/s", "ETA", "Result"):
        assert header in out
    booted = line_of(out, "1-1.1 ")
    assert "Contoso.MSM8960.JD301_ATT.3.2.1" in booted
    assert "00000011-f151-a509-0000-000000000001" in booted
    assert "booted" in booted and "100.0/100.0" in booted
    failed = line_of(out, "1-1.2 ")
    assert "failed" in failed and "WIM boot failure status 0xc0000017" in failed
    sending = line_of(out, "1-1.3 ")
    # 50 MB in 10 s: 5.0 MB/s, 50 MB left -> 0:10
    assert "sending WIM" in sending and "50.0/100.0" in sending
    assert " 5.0 " in sending and "0:10" in sending
    waiting = line_of(out, "1-1.4 ")
    assert "identifying" in waiting and "0.0/100.0" in waiting

    totals = line_of(out, "total")
    assert "4 devices" in totals and "2/4 done" in totals
    assert "1 booted, 1 failed" in totals
    assert "180.0/400.0" in totals
    # aggregate: 180 MB from the first stream start (NOW-10) to now = 18.0 MB/s
    assert " 18.0 " in totals


def test_failed_row_without_reason_shows_status_code() -> None:
    rec = record(1, state=DeviceState.FAILED, status=-0x3FFFFF85)
    out = draw(render_line([rec], now=NOW, width=200))
    assert "status 0xc000007b" in line_of(out, "1-1.1 ")


def test_device_strings_are_shown_literally() -> None:
    rec = record(1, state=DeviceState.FAILED, name=EVIL, error="bad \x1b]0;pwned\x07 \u202eevil")
    rec.unique_id = "\x1b[2J"
    out = draw(render_line([rec], now=NOW, title="t \x1b[5m", width=200), color=True)
    assert "[bold]x[/bold]\\x1b[31mred" in out
    assert "\\x1b[2J" in out
    assert "bad \\x1b]0;pwned\\x07 \\u202eevil" in out
    assert "t \\x1b[5m" in out
    # rich styles the table with its own escapes; none of the device's got through
    assert "\x1b[31mred" not in out
    assert "\x1b[2J" not in out and "\x1b]0;" not in out and "\x07" not in out
    assert "\u202e" not in out and "\x1b[5m" not in out


def test_narrow_terminal_drops_id_then_bar_but_keeps_the_reason() -> None:
    records = [record(1, state=DeviceState.FAILED, error="disconnected"), record(2)]
    wide = draw(render_line(records, now=NOW, width=200), width=200)
    assert "00000011-f151-a509-0000-000000000001" in wide
    medium = draw(render_line(records, now=NOW, width=130), width=130)
    assert "00000011-f151" not in medium and "Progress" in medium
    narrow = draw(render_line(records, now=NOW, width=80), width=80)
    assert "Progress" not in narrow
    assert "disconnected" in narrow
    assert all(len(line) <= 80 for line in narrow.splitlines())


def test_max_rows_keeps_active_rows_and_totals_count_everyone() -> None:
    records = [record(slot, state=DeviceState.BOOTED, done=100 * MB) for slot in range(1, 31)]
    records += [record(31, state=DeviceState.FAILED, error="timed out")]
    records += [record(slot, done=10 * MB) for slot in range(32, 35)]
    out = draw(render_line(records, now=NOW, max_rows=6, width=200))
    rows = [line for line in out.splitlines() if line.startswith("1-1.")]
    # 5 rows + the note: the 3 in progress, then the failure, then one booted
    assert [row.split()[0] for row in rows] == ["1-1.1", "1-1.31", "1-1.32", "1-1.33", "1-1.34"]
    assert "29 devices not shown (29 booted)" in out
    totals = line_of(out, "total")
    assert "34 devices" in totals and "31/34 done" in totals and "30 booted, 1 failed" in totals


def test_no_cap_when_everything_fits() -> None:
    records = [record(slot) for slot in range(1, 5)]
    out = draw(render_line(records, now=NOW, max_rows=4, width=200))
    assert "not shown" not in out
    assert len([line for line in out.splitlines() if line.startswith("1-1.")]) == 4


def test_render_line_is_pure() -> None:
    records = [record(1), record(2, state=DeviceState.BOOTED, done=100 * MB)]
    assert draw(render_line(records, now=NOW)) == draw(render_line(records, now=NOW))


class FakeClock:
    def __init__(self, now: float) -> None:
        self.now = now

    def __call__(self) -> float:
        return self.now


def terminal(width: int = 200, height: int = 40) -> Console:
    return Console(
        file=io.StringIO(),
        force_terminal=True,
        width=width,
        height=height,
        color_system=None,
        log_path=False,
        log_time=False,
    )


def test_live_table_observer_logs_failures_and_keeps_every_row_at_the_end() -> None:
    console = terminal(height=12)  # room for only a few rows while live
    clock = FakeClock(NOW)
    table = LiveTable(console=console, title="booting x.wim", clock=clock, refresh_per_second=4)
    with table:
        for slot in range(1, 11):
            rec = record(slot, done=0, state=DeviceState.FOUND)
            table.device_added(rec)
        evil = table.records[1]
        evil.name = EVIL
        table.device_changed(evil)
        table.device_log(evil, DeviceLog(level=2, event_id=7, text="flash \x1b[41mfault"))
        table.device_log(evil, DeviceLog(level=4, event_id=8, text="just chatter"))
        live_frame = draw(table.renderable(), width=200)
        for rec in table.records:
            rec.bytes_done = rec.bytes_total
            rec.state = DeviceState.BOOTED
            rec.finished = NOW
        evil.state = DeviceState.FAILED
        evil.error = "WIM boot failure status 0xc0000017"
        table.device_finished(evil)
    out = console.file.getvalue()  # type: ignore[attr-defined]

    assert "not shown" in live_frame  # capped to the 12-line terminal
    assert (
        "1-1.2 [bold]x[/bold]\\x1b[31mred: device log (level 2, event 7): flash \\x1b[41mfault"
        in out
    )
    assert "just chatter" not in out
    assert "failed: WIM boot failure status 0xc0000017" in out
    assert "\x1b[31mred" not in out and "\x1b[41m" not in out
    final = out[out.rindex("booting x.wim") :]
    for slot in range(1, 11):
        assert f"1-1.{slot} " in final
    assert "not shown" not in final
    assert "9 booted, 1 failed" in final


def test_live_table_caps_rows_to_the_terminal_height() -> None:
    table = LiveTable(console=terminal(width=120, height=20), clock=FakeClock(NOW))
    for slot in range(1, 51):
        table.device_added(record(slot))
    frame = draw(table.renderable(), width=120)
    assert len(frame.splitlines()) <= 20
    assert "50 devices" in frame


def test_live_table_survives_a_record_it_cannot_draw() -> None:
    table = LiveTable(console=terminal(), clock=FakeClock(NOW))
    broken = record(1)
    broken.state = "not a state"  # type: ignore[assignment]
    table.device_added(broken)
    assert "live table unavailable" in draw(table.renderable())


def test_live_table_redraws_on_its_own_thread() -> None:
    console = terminal()
    table = LiveTable(console=console, clock=FakeClock(NOW), refresh_per_second=30)
    with table:
        table.device_added(record(1))
        for _ in range(1000):  # wait for the refresh thread, however busy the machine
            if table.statistics()[0] >= 2:
                break
            time.sleep(0.01)
    frames, cpu = table.statistics()
    assert frames >= 2 and cpu >= 0.0
    assert console.file.getvalue().count("1 device ") >= 3  # type: ignore[attr-defined]


def test_live_table_rejects_silly_refresh_rates() -> None:
    with pytest.raises(ValueError, match="refresh_per_second"):
        LiveTable(console=terminal(), refresh_per_second=0)
