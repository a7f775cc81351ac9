"""Every record a faulty run writes validates against the checked-in JSON Schema.

The schema (src/parallel_flash/schemas/record.schema.json) is the report's
documentation for the line's MES and scripts; this keeps it true. Its enums
are also checked against the code's own, so a new state or failure reason
cannot reach a report without reaching the schema.
"""

from __future__ import annotations

import json
import socket
import subprocess
import sys
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from parallel_flash import __version__
from parallel_flash.engine.records import DeviceState, FailureReason
from parallel_flash.output.report import SCHEMA_VERSION

#: One device of each kind of failure, and one that boots despite error logs.
FAULTS = {
    2: "status=-5",
    3: "disconnect=1048576",
    4: "stop-reading=1048576",
    5: "stale=4096,refuse-reset",
    6: "logs=3",
    7: "silent-status",
}


def schema() -> dict[str, Any]:
    text = resources.files("parallel_flash").joinpath("schemas/record.schema.json").read_text()
    loaded = json.loads(text)
    assert isinstance(loaded, dict)
    return loaded


def validator() -> jsonschema.protocols.Validator:
    checker = jsonschema.Draft202012Validator
    checker.check_schema(schema())
    return checker(schema(), format_checker=checker.FORMAT_CHECKER)


def test_schema_enums_match_the_code() -> None:
    assert schema()["properties"]["schema_version"] == {
        "const": SCHEMA_VERSION,
        "description": "version of this schema the record follows",
    }
    device = schema()["$defs"]["device"]["properties"]
    assert set(device["state"]["enum"]) == {state.value for state in DeviceState}
    assert set(device["reason"]["enum"]) == {reason.value for reason in FailureReason}


@pytest.mark.slow
def test_every_record_of_a_faulty_run_validates(tmp_path: Path) -> None:
    report = tmp_path / "line.jsonl"
    faults = [arg for slot, spec in FAULTS.items() for arg in ("--fault", f"{slot}:{spec}")]
    done = subprocess.run(
        [
            sys.executable, "-m", "parallel_flash", "demo", "--devices", "8",
            "--wim-size", "4MiB", "--rate", "0", "--workdir", str(tmp_path / "inputs"),
            "--transfer-timeout", "1", "--status-timeout", "1", "--reset-timeout", "1",
            "--report", str(report), "--plain", *faults,
        ],
        capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert done.returncode == 1, done.stdout + done.stderr  # some devices failed
    records = [json.loads(line) for line in report.read_text().splitlines()]
    check = validator()
    for record in records:
        errors = sorted(check.iter_errors(record), key=str)
        assert not errors, (record, [error.message for error in errors])
    devices = [record for record in records if record["type"] == "device"]
    assert len(devices) == 8 and records[-1]["type"] == "summary"
    assert {record["reason"] for record in devices if not record["ok"]} >= {
        "device-status",
        "disconnected",
        "timeout",
    }
    for record in records:
        assert record["schema_version"] == 1
        assert record["version"] == __version__
        assert record["host"] == socket.gethostname()
        assert record["station"]


def test_the_schema_rejects_what_it_should() -> None:
    check = validator()
    good = {
        "type": "summary", "schema_version": 1, "version": "0.1.0", "station": "s1",
        "host": "h", "devices": 1, "booted": 1, "failed": 0, "unfinished": 0,
        "interrupted": False, "seconds": 1.0, "stream_seconds": 0.5, "mb_per_s": 3.0,
        "bytes": 10, "bytes_total": 10, "image_sha256": "0" * 64, "image_bytes": 10,
        "wim": "x.wim", "sdi": None, "started": "2026-01-01T00:00:00.000+00:00",
        "finished": "2026-01-01T00:00:01.000+00:00",
    }  # fmt: skip
    assert not list(check.iter_errors(good))
    for broken in (
        {**good, "schema_version": 2},
        {**good, "devices": -1},
        {**good, "image_sha256": "xyz"},
        {**good, "type": "other"},
        {key: value for key, value in good.items() if key != "station"},
    ):
        assert list(check.iter_errors(broken)), broken
