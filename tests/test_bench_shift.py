"""The simulated shift (benchmarks/bench_shift.py) for two minutes: the report matches the ledger.

Counts only -- tests never assert on timings. The 30-minute run quoted in the
README is the same script with ``--minutes 30``.
"""

from __future__ import annotations

import sys
from pathlib import Path

import pytest

pytestmark = [pytest.mark.umockdev, pytest.mark.slow]

BENCHMARKS = Path(__file__).resolve().parent.parent / "benchmarks"


def test_a_two_minute_shift_loses_duplicates_and_mistakes_nothing(tmp_path: Path) -> None:
    sys.path.insert(0, str(BENCHMARKS))
    try:
        import bench_shift
    finally:
        sys.path.remove(str(BENCHMARKS))
    result = bench_shift.run(minutes=2, ports=12, seed=11, workdir=tmp_path)
    bench_shift.show(result)
    assert result["plugs"] > 20
    assert result["lost"] == 0, result
    assert result["duplicated"] == 0, result
    assert result["wrong"] == 0, result["wrong_examples"]
    assert result["unfinished"] == 0, result
    assert result["unexpected_records"] == 0, result
    assert result["records"] == result["plugs"]
    # Every fault of issue 7 was exercised at least once in two minutes.
    assert len(result["by_scenario"]) >= 8, result["by_scenario"]
    # The shift ended with SIGTERM, some devices failed on purpose: exit 1, summary written.
    assert result["exit_code"] == 1
    assert result["summary"] is not None and result["summary"]["devices"] == result["records"]
