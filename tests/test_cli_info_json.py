"""``info --json``: typed fields for every file type, against a checked-in schema.

A script reading ``info --json`` gets numbers as numbers and flags as
booleans, in a shape schemas/info.schema.json pins down; and ``info``
piped into grep gets each row whole, however long.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from importlib import resources
from pathlib import Path
from typing import Any

import jsonschema
import pytest

from parallel_flash.formats.sdi import build_sdi
from parallel_flash.formats.secwim import build_secwim

DEVICE = uuid.UUID("00000011-f151-a509-0000-000000000007")


def info(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "parallel_flash", "info", *map(os.fspath, args)],
        capture_output=True,
        text=True,
        timeout=120,
    )


def validate(items: Any) -> None:
    text = resources.files("parallel_flash").joinpath("schemas/info.schema.json").read_text()
    checker = jsonschema.Draft202012Validator
    schema = json.loads(text)
    checker.check_schema(schema)
    errors = sorted(checker(schema).iter_errors(items), key=str)
    assert not errors, [f"{list(error.path)}: {error.message}" for error in errors]


@pytest.mark.wimlib
def test_every_type_has_typed_fields(small_wim: Path, small_sdi: Path, tmp_path: Path) -> None:
    from parallel_flash.demo.ffu import build_demo_ffu

    secwim = tmp_path / "mmos.secwim"
    secwim.write_bytes(
        build_secwim(build_sdi(), small_wim.read_bytes(), platforms=["Contoso.*"], devices=[DEVICE])
    )
    ffu = build_demo_ffu(tmp_path / "ffu", mainos_size=4 << 20, tree_size=1 << 20)
    missing = tmp_path / "gone.wim"
    done = info("--json", small_wim, small_sdi, secwim, ffu, missing)
    assert done.returncode == 2  # one file could not be read
    items = json.loads(done.stdout)
    validate(items)
    wim, sdi, sec, image, gone = items

    assert (wim["type"], wim["ok"]) == ("wim", True)
    fields = wim["fields"]
    assert fields["file_size"] == small_wim.stat().st_size
    assert fields["image_count"] == 1 and fields["boot_index"] == 1
    assert fields["images"] == [{"index": 1, "name": "Small", "boot": True}]
    assert fields["integrity"] == {"present": False, "size": None, "verified": False}
    assert fields["solid"] is False and fields["boot_checks_passed"] is True

    assert sdi["fields"]["file_size"] == small_sdi.stat().st_size
    assert sdi["fields"]["wim_entry_ok"] is True and sdi["fields"]["microsoft_boot_sdi"] is False
    assert [blob["type"] for blob in sdi["fields"]["blobs"]][-1] == "WIM"

    assert sec["type"] == "secwim"
    assert sec["fields"]["platforms"] == ["Contoso.*"]
    assert sec["fields"]["devices"] == [str(DEVICE)]
    assert sec["fields"]["wim"]["boot_index"] == 1
    assert sec["fields"]["sdi_length"] + sec["fields"]["wim_length"] <= sec["fields"]["file_size"]

    assert image["type"] == "ffu"
    assert image["fields"]["img2wim"]["convertible"] is True
    assert image["fields"]["chunks_verified"] > 0
    partitions = image["fields"]["stores"][0]["partitions"]
    assert {"MainOS", "EFIESP"} <= {part["name"] for part in partitions}
    assert all(isinstance(part["written_bytes"], int) for part in partitions)

    assert gone == {
        "path": str(missing),
        "ok": False,
        "error": {"field": "file", "problem": "does not exist"},
    }


def test_rows_are_not_folded_when_piped(small_sdi: Path) -> None:
    done = info(small_sdi)
    assert done.returncode == 0, done.stderr
    (row,) = [line for line in done.stdout.splitlines() if line.startswith("SHA-256")]
    assert len(row.split()[-1]) == 64  # the whole hash on one line, for grep
    assert all(line == line.rstrip() for line in done.stdout.splitlines())  # no padding
