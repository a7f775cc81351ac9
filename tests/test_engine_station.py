"""Station pieces that need no device: counters, argument checks."""

from __future__ import annotations

import pytest

from parallel_flash.engine.records import DeviceRecord, DeviceState
from parallel_flash.engine.station import StationCounters, StationResult, run_station
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
    ]
    counters = StationCounters.of(records)
    assert counters == StationCounters(booted=2, failed=1, in_progress=2, bytes_sent=310)
    assert counters.total == 5
    result = StationResult(records=records)
    assert result.counters == counters
    assert not result.all_booted
    assert StationResult(records=[records[0], records[3]]).all_booted
    assert not StationResult().all_booted


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"count": 0}, "--count must be at least 1, not 0"),
        ({"wait_boot": 0.0}, "--wait-boot must be a positive number of seconds"),
    ],
)
async def test_bad_station_arguments_are_input_errors(kwargs: dict, message: str) -> None:
    with pytest.raises(InputError, match=message):
        await run_station(None, **kwargs)  # type: ignore[arg-type]
