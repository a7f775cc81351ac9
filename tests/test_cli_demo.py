"""``parallel-flash demo``: the built-in default job, and the whole seed flow from an FFU."""

from __future__ import annotations

from pathlib import Path

import pytest

from parallel_flash.cli import main
from parallel_flash.output.report import read_report


def devices(report: Path) -> list[dict[str, object]]:
    return [r for r in read_report(report) if r["type"] == "device"]


def test_demo_boots_a_generated_image_on_the_simulated_line(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    report = tmp_path / "demo.jsonl"
    code = main([
        "demo", "--devices", "4", "--rate", "0", "--wim-size", "4MiB",
        "--workdir", str(tmp_path / "work"), "--report", str(report), "--plain",
    ])
    assert code == 0
    assert capsys.readouterr().out.count("WIM transfer completed in") == 4
    records = devices(report)
    assert len(records) == 4 and all(r["ok"] for r in records)
    assert (tmp_path / "work" / "demo.sdi").exists()


def test_demo_with_a_fault_exits_1(tmp_path: Path) -> None:
    report = tmp_path / "demo.jsonl"
    code = main([
        "demo", "--devices", "3", "--rate", "0", "--wim-size", "4MiB", "--fault", "2:status=-1",
        "--workdir", str(tmp_path / "work"), "--report", str(report), "--plain",
    ])
    assert code == 1
    assert [r["ok"] for r in devices(report)] == [True, False, True]


def test_demo_arguments_are_checked(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["demo", "--devices", "0", "--workdir", str(tmp_path)]) == 2
    assert "--devices" in capsys.readouterr().err
    assert main(["demo", "--devices", "2", "--fault", "5:status=-1",
                 "--workdir", str(tmp_path)]) == 2


@pytest.mark.wimlib
def test_demo_from_ffu_runs_the_seed_flow(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from parallel_flash.img2wim import wimlib

    work = tmp_path / "work"
    report = tmp_path / "seed.jsonl"
    code = main([
        "demo", "--from-ffu", "--devices", "3", "--rate", "0",
        "--workdir", str(work), "--report", str(report), "--plain",
    ])
    err = capsys.readouterr().err
    assert code == 0, err
    for step in ("Reading the image file", "Capturing 'MainOS'", "WIM creation complete"):
        assert step in err
    info = wimlib.wim_info(work / "demo-from-ffu.wim")
    assert info.boot_index == 1 and info.compression == "LZX"
    records = devices(report)
    assert len(records) == 3 and all(r["ok"] for r in records)
