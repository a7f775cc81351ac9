"""``parallel-flash info``: real files in, table or JSON out, exit 2 on bad input."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from parallel_flash.cli import main
from parallel_flash.formats.sdi import SDI_TOC_OFFSET, build_sdi
from parallel_flash.formats.secwim import build_secwim
from parallel_flash.output.inspect import FileDescription, describe_file, format_size

Imagex = Callable[..., Any]


@pytest.fixture(autouse=True)
def wide_console(monkeypatch: pytest.MonkeyPatch) -> None:
    """rich wraps at 80 columns when not on a terminal; keep rows on one line."""
    monkeypatch.setenv("COLUMNS", "200")


def info(capsys: pytest.CaptureFixture[str], *args: str | Path) -> tuple[int, str, str]:
    code = main(["info", *map(str, args)])
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.wimlib
def test_real_wim_from_imagex(capsys: pytest.CaptureFixture[str], imagex_wim: Path) -> None:
    code, out, err = info(capsys, imagex_wim)
    assert (code, err) == (0, "")
    assert f"{imagex_wim}: WIM" in out
    for expected in ("compression", "LZX", "32,768 bytes", "image 1", "Imagex Demo (boot)",
                     "boot index", "present (", "not verified", "boot checks"):  # fmt: skip
        assert expected in out


@pytest.mark.wimlib
def test_verify_integrity(capsys: pytest.CaptureFixture[str], imagex_wim: Path) -> None:
    code, out, _ = info(capsys, "--verify-integrity", imagex_wim)
    assert code == 0
    assert "verified: every chunk matches" in out


@pytest.mark.wimlib
def test_damaged_wim_fails_verification(
    capsys: pytest.CaptureFixture[str], imagex_wim: Path, tmp_path: Path
) -> None:
    damaged = tmp_path / "damaged.wim"
    data = bytearray(imagex_wim.read_bytes())
    data[5000] ^= 0x55
    damaged.write_bytes(data)
    assert info(capsys, damaged)[0] == 0  # the header alone is fine
    code, _out, err = info(capsys, "--verify-integrity", damaged)
    assert code == 2
    assert err.startswith(f"parallel-flash: error: {damaged}: integrity_table: chunk 0 of 1")


def test_sdi(capsys: pytest.CaptureFixture[str], small_sdi: Path) -> None:
    code, out, err = info(capsys, small_sdi)
    assert (code, err) == (0, "")
    for expected in ("SDI", "Microsoft boot.sdi", "no", "blob 0", "PART at 0x2000",
                     "blob 1", "WIM at 0x12000", "WIM entry", "OK: at 0x12000"):  # fmt: skip
        assert expected in out


def test_sdi_without_wim_entry_is_shown_with_a_warning(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    data = bytearray(build_sdi())
    data[SDI_TOC_OFFSET + 64 : SDI_TOC_OFFSET + 128] = bytes(64)  # drop the WIM entry
    path = tmp_path / "nowim.sdi"
    path.write_bytes(data)
    code, out, _ = info(capsys, path)
    assert code == 0
    assert "not OK: no WIM entry (entries: PART)" in out
    assert "warning" in out


@pytest.mark.wimlib
def test_secwim(capsys: pytest.CaptureFixture[str], small_wim: Path, tmp_path: Path) -> None:
    path = tmp_path / "bundle.secwim"
    device = uuid.UUID(int=42)
    path.write_bytes(
        build_secwim(build_sdi(), small_wim.read_bytes(), platforms=["Contoso.X"], devices=[device])
    )
    code, out, _ = info(capsys, path)
    assert code == 0
    for expected in (".secwim", "Contoso.X", str(device), "catalog", "Small (boot)",
                     "sent as-is with SDI length 0"):  # fmt: skip
        assert expected in out


def test_invalid_wim_exits_2_naming_the_problem(
    capsys: pytest.CaptureFixture[str], small_wim: Path, tmp_path: Path
) -> None:
    bad = tmp_path / "bad.wim"
    data = bytearray(small_wim.read_bytes())
    data[0x78:0x7C] = (5).to_bytes(4, "little")  # boot index 5 of 1 image
    bad.write_bytes(data)
    code, out, err = info(capsys, bad)
    assert (code, out) == (2, "")
    assert err == (
        f"parallel-flash: error: {bad}: boot_index: 5 is out of range: "
        "the WIM holds 1 image(s), expected 1..1\n"
    )


def test_pipable_wim_exits_2(
    capsys: pytest.CaptureFixture[str], small_wim: Path, tmp_path: Path
) -> None:
    pipable = tmp_path / "pipable.wim"
    pipable.write_bytes(b"WLPWM\0\0\0" + small_wim.read_bytes()[8:])
    code, _, err = info(capsys, pipable)
    assert code == 2
    assert f"{pipable}: magic: " in err
    assert "pipable WIM cannot be booted" in err


def test_missing_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    missing = tmp_path / "missing.wim"
    code, out, err = info(capsys, missing)
    assert (code, out) == (2, "")
    assert err == f"parallel-flash: error: {missing}: file: does not exist\n"


def test_unknown_type_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("just text\n")
    code, _, err = info(capsys, text)
    assert code == 2
    assert err.startswith(f"parallel-flash: error: {text}: type: not a WIM, SDI, .secwim or FFU")


def test_empty_file_exits_2(capsys: pytest.CaptureFixture[str], tmp_path: Path) -> None:
    empty = tmp_path / "empty.wim"
    empty.write_bytes(b"")
    code, _, err = info(capsys, empty)
    assert code == 2
    assert err == f"parallel-flash: error: {empty}: type: the file is empty\n"


def test_good_and_bad_files_together(
    capsys: pytest.CaptureFixture[str], small_sdi: Path, tmp_path: Path
) -> None:
    code, out, err = info(capsys, small_sdi, tmp_path / "gone.wim")
    assert code == 2
    assert f"{small_sdi}: SDI" in out
    assert "gone.wim: file: does not exist" in err


def test_json(capsys: pytest.CaptureFixture[str], small_sdi: Path, tmp_path: Path) -> None:
    code, out, _ = info(capsys, "--json", small_sdi, tmp_path / "gone.wim")
    assert code == 2
    good, bad = json.loads(out)
    assert good["path"] == str(small_sdi)
    assert good["type"] == "sdi"
    assert {"label": "blob 0", "value": "PART at 0x2000, 65,536 bytes (64.0 KiB)"} in good["rows"]
    assert good["warnings"] == []
    assert bad == {
        "path": str(tmp_path / "gone.wim"),
        "ok": False,
        "error": {"field": "file", "problem": "does not exist"},
    }


@pytest.mark.wimlib
def test_strings_from_the_file_are_shown_literally(
    capsys: pytest.CaptureFixture[str], small_tree: Path, tmp_path: Path, wimlib_imagex: Imagex
) -> None:
    wim = tmp_path / "markup.wim"
    wimlib_imagex("capture", small_tree, wim, "[bold red]boom\x1b[31m", "--boot")
    code, out, _ = info(capsys, wim)
    assert code == 0
    assert "[bold red]boom\\x1b[31m (boot)" in out
    assert "\x1b" not in out


def test_a_truncated_ffu_is_a_named_error(
    capsys: pytest.CaptureFixture[str], tmp_path: Path
) -> None:
    ffu = tmp_path / "tiny.ffu"
    ffu.write_bytes((32).to_bytes(4, "little") + b"SignedImage " + bytes(48))
    code, _, err = info(capsys, ffu)
    assert code == 2
    assert err.startswith(f"parallel-flash: error: {ffu}: security header")


def test_describe_file_is_plain_data(small_sdi: Path) -> None:
    description = describe_file(small_sdi)
    assert isinstance(description, FileDescription)
    assert description.kind == "sdi"
    assert description.rows[0] == ("type", "SDI")
    assert description.as_dict()["rows"][0] == {"label": "type", "value": "SDI"}


@pytest.mark.parametrize(
    ("size", "text"),
    [(0, "0 bytes"), (1023, "1,023 bytes"), (1024, "1,024 bytes (1.0 KiB)"),
     (3_170_304, "3,170,304 bytes (3.0 MiB)"), (5 << 30, "5,368,709,120 bytes (5.0 GiB)")],
)  # fmt: skip
def test_format_size(size: int, text: str) -> None:
    assert format_size(size) == text


def test_console_script_exit_code(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "parallel_flash", "info", str(tmp_path / "none.wim")],
        capture_output=True,
        text=True,
        check=False,
    )
    assert result.returncode == 2
    missing = tmp_path / "none.wim"
    assert result.stderr.strip() == f"parallel-flash: error: {missing}: file: does not exist"
