"""Station and result pieces that need no device: counters, outcomes, argument checks."""

from __future__ import annotations

import pytest

from parallel_flash.engine.pipeline import LineCounters, LineResult, StopReason
from parallel_flash.engine.records import DeviceRecord, DeviceState, Outcome
from parallel_flash.engine.station import Confirmation, run_station
from parallel_flash.errors import InputError


def _record(slot: int, state: DeviceState, done: int) -> DeviceRecord:
    return DeviceRecord(slot=slot, port=f"1-1.{slot}", state=state, bytes_done=done)


def test_counters_sum_up_the_shift() -> None:
    records = [
        _record(1, DeviceState.BOOTED, 100),
        _record(2, DeviceState.FAILED, 40),
        _record(3, DeviceState.SENDING_WIM, 70),
        _record(4, DeviceState.BOOTED, 100),
        _record(5, DeviceState.IDENTIFYING, 0),
        _record(6, DeviceState.INTERRUPTED, 5),
    ]
    counters = LineCounters.of(records)
    assert counters == LineCounters(
        booted=2, failed=1, interrupted=1, in_progress=2, bytes_sent=315
    )
    assert counters.total == 6
    result = LineResult(records=records)
    assert result.totals == counters
    assert not result.all_booted
    assert LineResult(records=[records[0], records[3]]).all_booted
    assert not LineResult().all_booted


def test_interrupted_is_an_outcome_of_its_own() -> None:
    record = _record(1, DeviceState.INTERRUPTED, 0)
    assert record.outcome is Outcome.INTERRUPTED and not record.ok
    assert LineResult(records=[record]).failed == 0
    assert LineResult(records=[record], stop=StopReason.TERMINATE).interrupted


def test_an_unconfirmed_boot_is_not_ok() -> None:
    record = _record(1, DeviceState.BOOTED, 100)
    assert record.ok and record.outcome is Outcome.BOOTED
    record.confirmed = False
    assert not record.ok and record.outcome is Outcome.FAILED
    record.confirmed = True
    assert record.ok


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [({"count": 0}, "device count must be at least 1, not 0")],
)
async def test_bad_station_arguments_are_input_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        await run_station(None, **kwargs)  # type: ignore[arg-type]


def test_confirmation_window_must_be_positive() -> None:
    with pytest.raises(InputError, match="confirmation window"):
        Confirmation(seconds=0)
