"""Hostile and damaged files (issue 8): nothing destroyed, nothing hangs or balloons,
every failure one line. Every crafted file is built here, never shipped."""

from __future__ import annotations

import os
import shutil
import signal
import socket
import stat
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _hostile import (
    BUDGET_RSS_MB,
    BUDGET_SECONDS,
    CASES,
    big_sparse_mainos,
    craft_ffu,
    phone_disk,
    run_case,
    secwim_catalog_bomb,
    wim_integrity_bomb,
)
from parallel_flash.cli import main

#: Generous bounds: tests run on a loaded machine, so time is CPU time (the
#: work a file makes us do) at 4x the budget, and wall time only guards against
#: a hang; benchmarks/bench_hostile.py prints the real figures beside the budget.
CPU_BOUND = 4 * BUDGET_SECONDS
WALL_BOUND = 60.0
RSS_BOUND = BUDGET_RSS_MB


def _one_error_line(err: str) -> str:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1, err
    assert lines[0].startswith("parallel-flash: error: "), err
    assert "Traceback" not in err
    return lines[0]


# -- budgets: amplification refused (or described) in bounded time and memory ----------


@pytest.mark.parametrize("name", list(CASES))
def test_crafted_ffu_within_budget(name: str, tmp_path: Path) -> None:
    build, command = CASES[name]
    path = tmp_path / "crafted.ffu"
    path.write_bytes(build())
    assert path.stat().st_size <= 64 << 20
    measured = run_case([part.format(path=path) for part in command])
    print(f"{name}: exit {measured.exit_code}, {measured.seconds:.2f} s "
          f"({measured.cpu_seconds:.2f} s CPU), {measured.peak_rss_mb:.0f} MB")  # fmt: skip
    assert measured.cpu_seconds < CPU_BOUND and measured.seconds < WALL_BOUND
    assert measured.peak_rss_mb < RSS_BOUND
    if name.startswith("64 MiB of valid"):
        assert measured.exit_code == 0, measured.stderr
    else:
        assert measured.exit_code == 2, measured.stderr
        assert str(path) in _one_error_line(measured.stderr)


def test_wim_integrity_table_header_checked_first(small_wim: Path, tmp_path: Path) -> None:
    path = tmp_path / "bomb.wim"
    path.write_bytes(wim_integrity_bomb(small_wim)())
    measured = run_case(["info", "--verify-integrity", str(path)])
    assert measured.exit_code == 2
    assert "integrity_table" in _one_error_line(measured.stderr)
    assert measured.cpu_seconds < CPU_BOUND and measured.seconds < WALL_BOUND
    assert measured.peak_rss_mb < RSS_BOUND


def test_secwim_trailer_bomb(small_wim: Path, tmp_path: Path) -> None:
    path = tmp_path / "bomb.secwim"
    path.write_bytes(secwim_catalog_bomb(small_wim)())
    measured = run_case(["info", str(path)])
    # no valid trailer: described as what it starts with (an SDI), never trusted
    assert measured.exit_code in (0, 2) and "Traceback" not in measured.stderr
    assert measured.cpu_seconds < CPU_BOUND and measured.peak_rss_mb < RSS_BOUND


@pytest.mark.wimlib
def test_sparse_mainos_bounded_and_named(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    """A 1 TiB MainOS with a bogus NTFS: the temporary file stays sparse, the error names
    the FFU's MainOS (not a temporary file that is gone), and nothing is left behind."""
    ffu = tmp_path / "sparse.ffu"
    ffu.write_bytes(big_sparse_mainos())
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    code = main(["img2wim", "--no-progress", "--temp-dir", str(work), str(ffu), str(out / "x.wim")])
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    assert f"{ffu}: MainOS partition:" in line
    assert os.listdir(out) == [] and os.listdir(work) == []


# -- info and img2wim agree ---------------------------------------------------------


def _no_mainos() -> bytes:
    return craft_ffu(phone_disk(1 << 20, (8192, 16383), names=("EFIESP", "Data")))


def _not_ntfs() -> bytes:
    return craft_ffu(phone_disk(1 << 20, (8192, 16383), ntfs=False))


def _bad_gpt_crc() -> bytes:
    raw = bytearray(craft_ffu(phone_disk(1 << 20, (8192, 16383))))
    gpt = raw.index(b"EFI PART")
    raw[gpt + 0x30] ^= 0xFF  # first usable LBA: the header CRC no longer matches
    return _rehash(bytes(raw))


def _hash_mismatch() -> bytes:
    raw = bytearray(craft_ffu(phone_disk(1 << 20, (8192, 16383))))
    raw[raw.index(b"NTFS    ") + 100] ^= 0x01
    return bytes(raw)


def _rehash(raw: bytes) -> bytes:
    """Recompute the hash table after a deliberate edit (the GPT case is about the GPT)."""
    import hashlib
    import struct

    chunk = struct.unpack_from("<I", raw, 16)[0] * 1024
    catalog, table = struct.unpack_from("<II", raw, 24)
    image = -(-(32 + catalog + table) // chunk) * chunk
    digests = b"".join(
        hashlib.sha256(raw[i : i + chunk]).digest() for i in range(image, len(raw), chunk)
    )
    return raw[: 32 + catalog] + digests + raw[32 + catalog + len(digests) :]


@pytest.mark.parametrize(
    ("build", "info_code", "message"),
    [
        (_no_mainos, 0, "partition table: no MainOS partition"),
        (_not_ntfs, 0, "MainOS partition: is not NTFS (its first sector is empty"),
        (_bad_gpt_crc, 2, "GPT header.header_crc32: does not match the header"),
        (_hash_mismatch, 2, "does not match its SHA-256: the file is corrupt"),
    ],
)
def test_info_shows_what_img2wim_refuses(
    build: object, info_code: int, message: str, tmp_path: Path,
    capsys: pytest.CaptureFixture[str],
) -> None:  # fmt: skip
    ffu = tmp_path / "case.ffu"
    ffu.write_bytes(build())  # type: ignore[operator]
    assert main(["img2wim", str(ffu), str(tmp_path / "x.wim")]) == 2
    refusal = _one_error_line(capsys.readouterr().err)
    assert message in refusal and str(ffu) in refusal
    code = main(["info", str(ffu)])
    captured = capsys.readouterr()
    assert code == info_code
    shown = captured.out + captured.err
    assert message in " ".join(shown.split())  # the table may wrap a long warning
    if info_code == 0:
        assert "img2wim would refuse this FFU" in " ".join(captured.out.split())
    assert not (tmp_path / "x.wim").exists()


# -- output safety ------------------------------------------------------------------


@pytest.fixture
def crafted_ffu(tmp_path: Path) -> Path:
    path = tmp_path / "in.ffu"
    path.write_bytes(CASES["SectorSize 1 GiB"][0]())  # never reached: outputs come first
    return path


def _refused(args: list[str], capsys: pytest.CaptureFixture[str]) -> str:
    code = main(args)
    line = _one_error_line(capsys.readouterr().err)
    assert code == 2
    return line


@pytest.mark.skipif(os.geteuid() != 0, reason="mknod of a character device needs root")
def test_output_over_a_device_node_is_refused(
    crafted_ffu: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    node = tmp_path / "null"
    os.mknod(node, stat.S_IFCHR | 0o666, os.makedev(1, 3))  # /dev/null's numbers, our directory
    for force in ([], ["--force"]):
        line = _refused(["img2wim", *force, str(crafted_ffu), str(node)], capsys)
        assert "character device" in line
        assert stat.S_ISCHR(node.stat().st_mode)


def test_output_over_a_fifo_socket_or_directory_is_refused(
    crafted_ffu: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    assert "FIFO" in _refused(["img2wim", "--force", str(crafted_ffu), str(fifo)], capsys)
    assert stat.S_ISFIFO(fifo.stat().st_mode)
    sock_path = tmp_path / "sock"
    with socket.socket(socket.AF_UNIX) as sock:
        sock.bind(str(sock_path))
        assert "socket" in _refused(["img2wim", str(crafted_ffu), str(sock_path)], capsys)
    assert "directory" in _refused(["img2wim", str(crafted_ffu), str(tmp_path)], capsys)


def test_output_over_the_input_is_refused(
    crafted_ffu: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    before = crafted_ffu.read_bytes()
    alias = tmp_path / "alias.ffu"
    os.link(crafted_ffu, alias)
    for target in (crafted_ffu, alias):
        line = _refused(["img2wim", "--force", str(crafted_ffu), str(target)], capsys)
        assert "is the input file" in line
    assert crafted_ffu.read_bytes() == before


def test_existing_output_needs_force(
    crafted_ffu: Path, small_wim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    existing = tmp_path / "old.wim"
    shutil.copyfile(small_wim, existing)
    line = _refused(["img2wim", str(crafted_ffu), str(existing)], capsys)
    assert "already exists" in line and "--force" in line
    assert existing.read_bytes() == small_wim.read_bytes()
    # --force gets past the output checks: the (crafted, bad) FFU is what refuses now
    line = _refused(["img2wim", "--force", str(crafted_ffu), str(existing)], capsys)
    assert "SectorSize" in line
    assert existing.read_bytes() == small_wim.read_bytes()


def test_report_output_rules(
    small_wim: Path, small_sdi: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    fifo = tmp_path / "fifo"
    os.mkfifo(fifo)
    base = ["boot", str(small_wim), "--sdi", str(small_sdi), "--sim", "1", "--plain"]
    assert "FIFO" in _refused([*base, "--report", str(fifo)], capsys)
    assert "is the input file" in _refused([*base, "--report", str(small_wim), "--append"],
                                           capsys)  # fmt: skip


def test_report_to_stdout(small_wim: Path, small_sdi: Path) -> None:
    """``--report -``: JSON lines on stdout, the human output on stderr."""
    proc = subprocess.run(
        [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi",
         str(small_sdi), "--sim", "2", "--sim-rate", "0", "--plain", "--report", "-"],
        capture_output=True, text=True, timeout=120, check=False,
    )  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    import json

    entries = [json.loads(line) for line in proc.stdout.splitlines()]
    assert [e["type"] for e in entries] == ["device", "device", "summary"]
    assert "booted" in proc.stderr


# -- inputs are regular files, opened without blocking --------------------------------


@pytest.mark.parametrize("command", ["info", "img2wim"])
def test_fifo_input_is_refused_at_once(command: str, tmp_path: Path) -> None:
    fifo = tmp_path / "in.ffu"
    os.mkfifo(fifo)
    args = [command, str(fifo)] + ([str(tmp_path / "x.wim")] if command == "img2wim" else [])
    proc = subprocess.run(
        [sys.executable, "-m", "parallel_flash", *args],
        capture_output=True, text=True, timeout=60, check=False,
    )  # fmt: skip
    assert proc.returncode == 2
    line = _one_error_line(proc.stderr)
    assert str(fifo) in line and "FIFO" in line


# -- one line, printed literally ---------------------------------------------------


def test_markup_and_control_characters_in_paths_are_literal(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    (tmp_path / "a[").mkdir()
    name = tmp_path / "a[" / "]b[red]\x1b[31mc\u202e.wim"  # a path holding "[/]"
    name.write_bytes(b"not a wim at all")
    for args in (["info", str(name)], ["img2wim", str(name), str(tmp_path / "x.wim")]):
        assert main(args) == 2
        line = _one_error_line(capsys.readouterr().err)
        assert "\x1b" not in line and "\u202e" not in line
        assert "a[/]b[red]\\x1b[31mc\\u202e.wim" in line


def test_temp_dir_problems_are_one_line(
    crafted_ffu: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    out = str(tmp_path / "x.wim")
    for temp in (tmp_path / "missing", crafted_ffu):
        assert main(["img2wim", "--temp-dir", str(temp), str(crafted_ffu), out]) == 2
        err = capsys.readouterr().err
        assert "--temp-dir" in err and "Traceback" not in err


@pytest.mark.parametrize(
    ("args", "option"),
    [
        (["--transfer-size", "9" * 400], "--transfer-size"),
        (["--sim-fault", "1:status=-99999999999"], "--sim-fault"),
        (["--sim-fault", "1:stop-reading=-1"], "--sim-fault"),
        (["--sim-fault", "1:logs=100000000"], "--sim-fault"),
        (["--status-timeout", "1e308"], "--status-timeout"),
        (["--transfer-timeout", "inf"], "--transfer-timeout"),
        (["--id-timeout", "0"], "--id-timeout"),
        (["--sim-rate", "nan"], "--sim-rate"),
        (["--sim-rate", "-1"], "--sim-rate"),
        (["--in-flight", "1" * 50], "--in-flight"),
    ],
)
def test_option_values_checked_at_parse_time(
    args: list[str], option: str, small_wim: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["boot", str(small_wim), "--sim", "1", *args]) == 2
    err = capsys.readouterr().err
    assert option in err and "Traceback" not in err


def test_debug_shows_the_traceback(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    missing = tmp_path / "missing.ffu"
    assert main(["--debug", "img2wim", str(missing), str(tmp_path / "x.wim")]) == 2
    err = capsys.readouterr().err
    assert "Traceback" in err and err.rstrip().splitlines()[-1].startswith("parallel-flash: error:")


# -- signals ------------------------------------------------------------------------


@pytest.fixture(scope="module")
def slow_ffu(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """An FFU whose MainOS holds enough incompressible data that LZX takes seconds."""
    from parallel_flash.demo.ffu import build_demo_disk, write_demo_tree
    from parallel_flash.demo.ffu_writer import write_ffu

    work = tmp_path_factory.mktemp("slow")
    tree = write_demo_tree(work / "tree", size=2 << 20, seed=5)
    (tree / "blob.bin").write_bytes(os.urandom(48 << 20))
    disk = build_demo_disk(work / "disk", tree=tree, mainos_size=80 << 20)
    return write_ffu([disk.path], work / "slow.ffu", version=1).path


@pytest.mark.wimlib
@pytest.mark.slow
@pytest.mark.parametrize(
    ("signum", "code", "stage"),
    [
        (signal.SIGTERM, 143, "Reading the image file"),
        (signal.SIGINT, 130, "Capturing"),
        (signal.SIGTERM, 143, "Capturing"),
    ],
)
def test_signals_leave_nothing_behind(
    signum: int, code: int, stage: str, slow_ffu: Path, tmp_path: Path
) -> None:
    out, work = tmp_path / "out", tmp_path / "work"
    out.mkdir()
    work.mkdir()
    proc = subprocess.Popen(
        [sys.executable, "-m", "parallel_flash", "img2wim", "--no-progress", "--temp-dir",
         str(work), str(slow_ffu), str(out / "mainos.wim")],
        stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    try:
        assert proc.stdout is not None
        for line in proc.stdout:
            if stage in line:
                break
        if stage == "Capturing":
            time.sleep(0.3)  # inside libwim's C code
        proc.send_signal(signum)
        sent = time.monotonic()
        proc.wait(timeout=30)
        elapsed = time.monotonic() - sent
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.stderr is not None
    err = proc.stderr.read()
    print(
        f"{signal.Signals(signum).name} at {stage!r}: exit {proc.returncode} after {elapsed:.2f} s"
    )
    assert proc.returncode == code, err
    assert "Traceback" not in err
    assert os.listdir(out) == [] and os.listdir(work) == []


def test_size_options_have_their_own_ranges(capsys: pytest.CaptureFixture[str]) -> None:
    from parallel_flash.cli import build_parser

    parser = build_parser()
    assert parser.parse_args(["demo", "--wim-size", "256MiB"]).wim_size == 256 << 20
    assert main(["demo", "--wim-size", "5GiB"]) == 2  # SDI + WIM must stay under 4 GiB
    assert "--wim-size" in capsys.readouterr().err
    assert main(["demo", "--rate", "nan"]) == 2
    assert "--rate" in capsys.readouterr().err
    assert main(["boot", "x.wim", "--sim", "1", "--transfer-size", "128MiB"]) == 2
    assert "--transfer-size" in capsys.readouterr().err
