"""``parallel-flash boot`` on the simulated line: exit codes, report, bad input, Ctrl-C."""

from __future__ import annotations

import hashlib
import json
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from parallel_flash.cli import main
from parallel_flash.output.report import read_report

WIMLIB_IMAGEX = shutil.which("wimlib-imagex")


def test_eight_simulated_devices_boot_with_a_full_report(
    tmp_path: Path, small_wim: Path, small_sdi: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "run.jsonl"
    code = main([
        "boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "8", "--sim-rate", "0",
        "--report", str(report), "--plain",
    ])
    assert code == 0
    out = capsys.readouterr().out
    assert out.count("Found device:") == 8
    assert "Name: Contoso.Simulated.003" in out
    assert f"Booting WIM: {small_wim}" in out
    assert out.count("WIM transfer completed in") == 8
    records = read_report(report)
    devices = [r for r in records if r["type"] == "device"]
    assert len(devices) == 8
    expected = hashlib.sha256(small_sdi.read_bytes() + small_wim.read_bytes())
    for record in devices:
        assert record["ok"] is True and record["state"] == "booted" and record["status"] == 0
        assert record["image_sha256"] == expected.hexdigest()
        assert record["bytes"] == small_sdi.stat().st_size + small_wim.stat().st_size
    summary = records[-1]
    assert summary["type"] == "summary" and summary["booted"] == 8 and summary["failed"] == 0


def test_faults_fail_only_their_devices_and_exit_1(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "run.jsonl"
    code = main([
        "boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "6", "--sim-rate", "0",
        "--sim-fault", "2:status=-5", "--sim-fault", "4:stop-reading=1048576",
        "--sim-fault", "5:stale=4096,logs=1", "--transfer-timeout", "0.2",
        "--report", str(report), "--plain",
    ])
    assert code == 1
    by_port = {r["port"]: r for r in read_report(report) if r["type"] == "device"}
    assert by_port["sim-2"]["ok"] is False
    assert "WIM boot failure status 0xfffffffb" in by_port["sim-2"]["error"]
    assert by_port["sim-2"]["status"] == -5
    assert by_port["sim-4"]["ok"] is False
    assert "stopped reading" in by_port["sim-4"]["error"]
    for port in ("sim-1", "sim-3", "sim-5", "sim-6"):
        assert by_port[port]["ok"] is True, by_port[port]


def test_report_is_never_overwritten_silently(
    tmp_path: Path, small_wim: Path, small_sdi: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "run.jsonl"
    report.write_text('{"type": "summary"}\n')
    code = main([
        "boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "1", "--report", str(report),
    ])
    assert code == 2
    assert "already exists" in capsys.readouterr().err
    assert report.read_text() == '{"type": "summary"}\n'


# -- bad input: exit 2, a message naming the problem, and no device contacted ----------


def _patched(source: Path, dest: Path, offset: int, data: bytes) -> Path:
    raw = bytearray(source.read_bytes())
    raw[offset : offset + len(data)] = data
    dest.write_bytes(bytes(raw))
    return dest


def _sdi_without_wim_entry(sdi: Path, dest: Path) -> Path:
    raw = bytearray(sdi.read_bytes())
    for entry in range(0x400, 0x600, 64):
        if raw[entry : entry + 4] == b"WIM\0":
            raw[entry : entry + 64] = bytes(64)
    dest.write_bytes(bytes(raw))
    return dest


def _sparse_over_4gib(wim: Path, dest: Path) -> Path:
    shutil.copyfile(wim, dest)
    with open(dest, "r+b") as stream:
        stream.truncate(1 << 32)   # sparse: no disk is used for the hole
    return dest


def _split(wim: Path, dest: Path) -> Path:
    assert WIMLIB_IMAGEX, "wimtools is required"
    subprocess.run([WIMLIB_IMAGEX, "split", str(wim), str(dest), "1"], check=True,
                   capture_output=True)
    return dest


def _pipable(tree: Path, dest: Path) -> Path:
    assert WIMLIB_IMAGEX, "wimtools is required"
    subprocess.run([WIMLIB_IMAGEX, "capture", str(tree), str(dest), "P", "--pipable"],
                   check=True, capture_output=True)
    return dest


@pytest.mark.parametrize(
    ("case", "message"),
    [
        ("truncated", "bytes"),
        ("magic", "magic"),
        ("split", "part 1 of"),
        ("pipable", "pipable"),
        ("sdi-no-wim", "WIM"),
        ("over-4gib", "4 GiB"),
        ("missing", "not found"),
    ],
)
def test_invalid_inputs_exit_2_before_any_device(
    case: str,
    message: str,
    tmp_path: Path,
    small_wim: Path,
    small_sdi: Path,
    small_tree: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:
    wim, sdi = small_wim, small_sdi
    if case == "truncated":
        wim = tmp_path / "t.wim"
        wim.write_bytes(small_wim.read_bytes()[:100])
    elif case == "magic":
        wim = _patched(small_wim, tmp_path / "m.wim", 0, b"MSWIN\0\0\0")
    elif case == "split":
        wim = _split(small_wim, tmp_path / "s.swm")
    elif case == "pipable":
        wim = _pipable(small_tree, tmp_path / "p.wim")
    elif case == "sdi-no-wim":
        sdi = _sdi_without_wim_entry(small_sdi, tmp_path / "n.sdi")
    elif case == "over-4gib":
        wim = _sparse_over_4gib(small_wim, tmp_path / "big.wim")
    elif case == "missing":
        wim = tmp_path / "nowhere.wim"
    report = tmp_path / "run.jsonl"
    code = main([
        "boot", str(wim), "--sdi", str(sdi), "--sim", "2", "--report", str(report), "--plain",
    ])
    captured = capsys.readouterr()
    assert code == 2, captured
    assert message in captured.err
    assert captured.err.startswith("parallel-flash: error: ")
    assert "Found device" not in captured.out
    assert not report.exists()   # opened only once the inputs passed


def test_bad_arguments_exit_2(small_wim: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["boot", str(small_wim), "--sim", "2", "--in-flight", "0"]) == 2
    assert "--in-flight" in capsys.readouterr().err
    assert main(["boot", str(small_wim), "--sim", "2", "--confirm", "5"]) == 2
    assert "--confirm needs USB devices" in capsys.readouterr().err
    assert main(["boot", str(small_wim), "--count", "2"]) == 2
    assert "add --watch" in capsys.readouterr().err
    assert main(["boot", str(small_wim), "--sim", "2", "--sim-fault", "9:status=-1"]) == 2
    assert "slots [9]" in capsys.readouterr().err
    assert main(["boot", str(small_wim), "--sim-fault", "x"]) == 2
    assert "--sim-fault" in capsys.readouterr().err


# -- Ctrl-C --------------------------------------------------------------------------


def test_sigint_exits_130_quickly_with_a_record_per_device(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    report = tmp_path / "run.jsonl"
    process = subprocess.Popen(
        [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi", str(small_sdi),
         "--sim", "4", "--sim-rate", "0.5", "--report", str(report), "--plain"],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:   # wait until streaming has begun
        time.sleep(0.2)
        if report.exists() or process.poll() is not None:
            break
    time.sleep(1.0)
    sent = time.monotonic()
    process.send_signal(signal.SIGINT)
    out, err = process.communicate(timeout=30)
    elapsed = time.monotonic() - sent
    print(f"exit after SIGINT took {elapsed:.2f} s")
    assert process.returncode == 130, (out, err)
    records = read_report(report)
    devices = [r for r in records if r["type"] == "device"]
    assert sorted(r["port"] for r in devices) == ["sim-1", "sim-2", "sim-3", "sim-4"]
    assert all(r["error"] == "interrupted" and not r["ok"] for r in devices)
    assert records[-1]["type"] == "summary" and records[-1]["interrupted"] is True
    assert json.loads(report.read_text().splitlines()[-1])["type"] == "summary"
    assert elapsed < 10  # generous for a loaded CI machine; the figure is printed above
