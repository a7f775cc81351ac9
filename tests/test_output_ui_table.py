"""render_line() and LiveTable, drawn into an in-memory terminal console with a fake clock.

The frame is checked at the sizes operators use (80x24, 160x45, a wide
200-column screen) for a small line (a table) and a long one (the grid).
"""

from __future__ import annotations

import io
import time

import pytest
from rich.console import Console

from parallel_flash.engine.records import DeviceLog, DeviceRecord, DeviceState
from parallel_flash.output.report import line_totals
from parallel_flash.output.ui import FailedDevice, LineView, LiveTable, render_line

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
    port: str | None = None,
) -> DeviceRecord:
    rec = DeviceRecord(
        slot=slot,
        port=f"1-1.{slot}" if port is None else port,
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


def line_of_records(count: int, failed: set[int], *, booted_every: int = 3) -> list[DeviceRecord]:
    """*count* devices on ports sim-1..sim-N: some failed, every third booted, the rest sending."""
    records = []
    for slot in range(1, count + 1):
        if slot in failed:
            state, done = DeviceState.FAILED, slot * MB % (100 * MB)
        elif slot % booted_every == 0:
            state, done = DeviceState.BOOTED, 100 * MB
        else:
            state, done = DeviceState.SENDING_WIM, slot * 7 % 100 * MB
        error = f"WIM boot failure status 0xc00000{slot:02x}" if slot in failed else None
        records.append(
            record(
                slot,
                state=state,
                done=done,
                error=error,
                port=f"sim-{slot}",
                name=f"Contoso.Simulated.{slot:03d}",
            )
        )
    return records


def draw(renderable: object, *, width: int = 200, height: int = 60, color: bool = False) -> str:
    console = Console(
        file=io.StringIO(),
        force_terminal=True,
        width=width,
        height=height,
        color_system="truecolor" if color else None,
        legacy_windows=False,
    )
    console.print(renderable)
    output = console.file.getvalue()  # type: ignore[attr-defined]
    assert isinstance(output, str)
    return output


def frame(records: list[DeviceRecord], width: int, height: int, **kwargs: object) -> str:
    out = draw(
        render_line(records, now=NOW, width=width, height=height, **kwargs),  # type: ignore[arg-type]
        width=width,
        height=height,
    )
    assert all(len(line) <= width for line in out.splitlines()), out
    return out


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
    for header in ("Port", "Name", "ID", "State", "Progress", "%", "MB/s", "ETA", "Result"):
        assert header in out
    booted = line_of(out, "1-1.1 ")
    assert "Contoso.MSM8960.JD301_ATT.3.2.1" in booted
    assert "00000011-f151-a509-0000-000000000001" in booted
    assert "booted" in booted and "100.0/100.0" in booted and "100%" in booted
    failed = line_of(out, "1-1.2 ")
    assert "failed" in failed and "WIM boot failure status 0xc0000017" in failed
    assert " 30%" in failed
    sending = line_of(out, "1-1.3 ")
    # 50 MB in 10 s: 5.0 MB/s, 50 MB left -> 0:10
    assert "sending WIM" in sending and "50.0/100.0" in sending and " 50%" in sending
    assert " 5.0 " in sending and "0:10" in sending
    waiting = line_of(out, "1-1.4 ")
    assert "identifying" in waiting and "0.0/100.0" in waiting and " 0%" in waiting

    totals = line_of(out, "4 devices")
    assert "1 booted, 1 failed, 2 in progress" in totals
    assert "180.0/400.0 MB" in totals and "45%" in totals
    # aggregate: 180 MB from the first stream start (NOW-10) to now = 18.0 MB/s
    assert "18.0 MB/s" in totals


def test_failed_row_without_reason_shows_status_code() -> None:
    rec = record(1, state=DeviceState.FAILED, status=-0x3FFFFF85)
    out = draw(render_line([rec], now=NOW, width=200))
    assert "status 0xc000007b" in line_of(out, "1-1.1 ")


def test_device_strings_are_shown_literally() -> None:
    rec = record(1, state=DeviceState.FAILED, name=EVIL, error="bad \x1b]0;pwned\x07 \u202eevil")
    rec.unique_id = "\x1b[2J"
    out = draw(
        render_line([rec], now=NOW, title="t \x1b[5m", width=200, final=True), color=True
    )
    assert "[bold]x[/bold]\\x1b[31mred" in out
    assert "\\x1b[2J" in out
    assert "bad \\x1b]0;pwned\\x07 \\u202eevil" in out
    assert "t \\x1b[5m" in out
    # rich styles the table with its own escapes; none of the device's got through
    assert "\x1b[31mred" not in out
    assert "\x1b[2J" not in out and "\x1b]0;" not in out and "\x07" not in out
    assert "\u202e" not in out and "\x1b[5m" not in out


def test_narrow_terminal_drops_id_then_bar_but_keeps_percent_and_reason() -> None:
    records = [record(1, state=DeviceState.FAILED, error="disconnected"), record(2)]
    wide = frame(records, 200, 40)
    assert "00000011-f151-a509-0000-000000000001" in wide
    medium = frame(records, 130, 40)
    assert "00000011-f151" not in medium and "Progress" in medium
    narrow = frame(records, 80, 24)
    assert "Progress" not in narrow
    assert "disconnected" in narrow
    for out in (wide, medium, narrow):
        assert " 50%" in line_of(out, "1-1.2 ")


def test_columns_do_not_move_as_numbers_grow() -> None:
    """Every column has a fixed width: a row's cells stay put from 0 % to 100 %."""
    for width in (80, 160):
        positions = set()
        for done in (0, 9_900_000, 10 * MB, 99 * MB, 100 * MB):
            rec = record(7, done=done)
            rec.stream_started = NOW - 1 if done < 50 * MB else NOW - 0.05  # 0.0 .. 2000 MB/s
            row = line_of(frame([rec, record(8)], width, 24), "1-1.7 ")
            state_at = row.index("sending WIM")
            percent_end = row.index("%") + 1
            positions.add((state_at, percent_end, len(row.rstrip())))
        assert len({(state, pct) for state, pct, _ in positions}) == 1, (width, positions)


def test_names_lose_their_middle_not_their_tail() -> None:
    records = [
        record(1, name="Contoso.MSM8960.JD301_ATT.3.2.1"),
        record(2, name="Contoso.MSM8960.JD301_ATT.3.2.7"),
    ]
    out = frame(records, 80, 24)
    first, second = line_of(out, "1-1.1 "), line_of(out, "1-1.2 ")
    assert "Contoso.MSM8960.JD301_ATT.3.2.1" not in first  # too long for 80 columns
    assert "…" in first and ".3.2.1" in first and ".3.2.7" in second


def test_rows_that_do_not_fit_fold_booted_first_and_totals_count_everyone() -> None:
    records = [record(slot, state=DeviceState.BOOTED, done=100 * MB) for slot in range(1, 21)]
    records += [record(21, state=DeviceState.FAILED, error="timed out")]
    records += [record(slot, done=10 * MB) for slot in range(22, 25)]
    out = frame(records, 160, 14)
    assert len(out.splitlines()) <= 14
    rows = [line for line in out.splitlines() if line.startswith("1-1.")]
    # the failure and the three in progress first, then booted ones while room is left
    assert {"1-1.21", "1-1.22", "1-1.23", "1-1.24"} <= {row.split()[0] for row in rows}
    assert f"{24 - len(rows)} more devices not shown ({24 - len(rows)} booted)" in out
    totals = line_of(out, "24 devices")
    assert "20 booted, 1 failed, 3 in progress" in totals


def test_no_fold_when_everything_fits() -> None:
    records = [record(slot) for slot in range(1, 5)]
    out = frame(records, 200, 24)
    assert "not shown" not in out
    assert len([line for line in out.splitlines() if line.startswith("1-1.")]) == 4


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 45)])
@pytest.mark.parametrize("count", [64, 128])
def test_long_lines_get_the_port_grid_with_failures_below(
    count: int, width: int, height: int
) -> None:
    failed = {3, 17, 40, count - 1}
    out = frame(line_of_records(count, failed), width, height, title="booting demo.wim")
    lines = out.splitlines()
    assert len(lines) <= height
    assert "ports sim-*" in out
    assert not any(line.startswith("sim-") for line in lines)  # no table rows
    assert " 17✗" in out and " 40✗" in out  # a cell per port: label, glyph, percent
    assert f"{count} devices: " in out and f"{len(failed)} failed" in out
    assert f"Failed ({len(failed)}):" in out
    for slot in failed:
        assert f"✗ sim-{slot}  Contoso.Simulated.{slot:03d}  WIM boot failure" in out
    if count == 64 or width == 160:  # everything fits: one cell per port
        for slot in (1, 2, count):
            assert f"{slot}↑" in out or f"{slot}✓" in out or f"{slot}✗" in out


def test_grid_folds_booted_ports_on_a_small_screen() -> None:
    out = frame(line_of_records(128, {5}, booted_every=2), 80, 16)
    assert len(out.splitlines()) <= 16
    assert "more ports not shown" in out and "booted)" in out
    assert "  5✗" in out  # the failure keeps its cell
    assert "128 devices: " in line_of(out, "128 devices")


def test_final_frame_lists_every_failure_not_every_device() -> None:
    """A shift of 600 devices on 8 ports ends with 8 rows, the totals and all 40 failures."""
    view = LineView(clock=lambda: NOW)
    for serial in range(1, 601):
        slot = (serial - 1) % 8 + 1
        failed = serial % 15 == 0
        rec = record(
            serial,
            state=DeviceState.FAILED if failed else DeviceState.BOOTED,
            done=100 * MB,
            port=f"1-1.{slot}",
            error="disconnected" if failed else None,
        )
        view.device_added(rec)
        view.device_finished(rec)
    out = draw(render_line(view, now=NOW, width=80, height=24, final=True), width=80, height=24)
    assert all(len(line) <= 80 for line in out.splitlines())
    assert len([line for line in out.splitlines() if line.startswith("1-1.")]) == 8
    assert "600 devices: 560 booted, 40 failed" in out
    assert "Failed (40):" in out
    for serial in range(15, 601, 15):
        assert f"00000011-f151-a509-0000-{serial:012x}" in out


def test_line_view_stays_bounded_and_agrees_with_the_report_totals() -> None:
    records = line_of_records(40, {3, 9})
    view = LineView(clock=lambda: NOW)
    for rec in records:
        view.device_added(rec)
    for rec in records:
        if rec.state.finished:
            view.device_finished(rec)
    view.device_finished(records[2])  # finished twice: counted once
    snap = view.snapshot(NOW)
    assert snap.totals == line_totals(records, now=NOW)
    assert [rec.port for rec in snap.failures] == ["sim-3", "sim-9"]
    # the recap keeps what it shows, not the records (their Log packets, attempts)
    failed = [rec for rec in records if rec.state is DeviceState.FAILED]
    assert list(snap.failures) == [FailedDevice.of(rec) for rec in failed]
    assert not any(isinstance(entry, DeviceRecord) for entry in snap.failures)
    # a shift: 10,000 more devices through the same 40 ports
    for serial in range(10_000):
        rec = record(1000 + serial, state=DeviceState.BOOTED, port=f"sim-{serial % 40 + 1}")
        view.device_added(rec)
        view.device_finished(rec)
    snap = view.snapshot(NOW)
    assert len(snap.ports) == 40 and snap.totals.devices == 10_040
    assert len(view.active) == len([r for r in records if not r.state.finished])


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


def test_live_table_logs_failures_and_ends_with_totals_and_failures() -> None:
    console = terminal(height=12)  # room for only a few rows while live
    clock = FakeClock(NOW)
    table = LiveTable(console=console, title="booting x.wim", clock=clock, refresh_per_second=4)
    records = []
    with table:
        for slot in range(1, 11):
            rec = record(slot, done=0, state=DeviceState.FOUND)
            records.append(rec)
            table.device_added(rec)
        evil = records[1]
        evil.name = EVIL
        table.device_changed(evil)
        table.device_log(evil, DeviceLog(level=2, event_id=7, text="flash \x1b[41mfault"))
        table.device_log(evil, DeviceLog(level=4, event_id=8, text="just chatter"))
        live_frame = draw(table.renderable(), width=200)
        for rec in records:
            rec.bytes_done = rec.bytes_total
            rec.state = DeviceState.BOOTED
            rec.finished = NOW
        evil.state = DeviceState.FAILED
        evil.error = "WIM boot failure status 0xc0000017"
        for rec in records:
            table.device_finished(rec)
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
    assert "10 devices: 9 booted, 1 failed" in final
    assert "Failed (1):" in final
    assert "1-1.2  [bold]x[/bold]\\x1b[31mred  00000011-f151-a509-0000-000000000002" in final


def test_live_table_fits_the_terminal_height() -> None:
    for count in (8, 50, 128):
        table = LiveTable(console=terminal(width=120, height=20), clock=FakeClock(NOW))
        for slot in range(1, count + 1):
            table.device_added(record(slot))
        frame_text = draw(table.renderable(), width=120)
        assert len(frame_text.splitlines()) <= 20
        assert f"{count} devices" in frame_text


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
    assert console.file.getvalue().count("1 device:") >= 3  # type: ignore[attr-defined]


def test_live_table_rejects_silly_refresh_rates() -> None:
    with pytest.raises(ValueError, match="refresh_per_second"):
        LiveTable(console=terminal(), refresh_per_second=0)
