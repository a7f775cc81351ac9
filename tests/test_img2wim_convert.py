"""img2wim end to end: file tree -> NTFS MainOS in a GPT disk -> FFU -> WIM -> read back.

Every piece is real: mkntfs/mkfs.vfat make the file systems, wimlib fills
and captures them, our writer makes the FFU and our reader takes it apart.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import struct
from pathlib import Path

import pytest

from parallel_flash.cli import main
from parallel_flash.demo.ffu import DemoDisk, build_demo_disk, write_demo_tree
from parallel_flash.demo.ffu_writer import StoreSource, write_ffu
from parallel_flash.errors import FormatError
from parallel_flash.formats.ffu import AccessMethod, iter_descriptors, read_ffu
from parallel_flash.formats.wim import parse_wim_header, read_wim_info
from parallel_flash.img2wim import wimlib
from parallel_flash.img2wim.convert import Img2WimProgress, img2wim, leads_to_other_volume
from parallel_flash.img2wim.ntfs3g import IO_REPARSE_TAG_MOUNT_POINT, ReparsePoint

pytestmark = [
    pytest.mark.wimlib,
    pytest.mark.skipif(
        not all(shutil.which(t) for t in ("mkntfs", "mkfs.vfat", "mcopy")),
        reason="needs ntfs-3g, dosfstools and mtools",
    ),
]

REMOVED = {"/Data", "/EFIESP"}  # top-level junctions to other volumes


@pytest.fixture(scope="module")
def demo(tmp_path_factory: pytest.TempPathFactory) -> DemoDisk:
    work = tmp_path_factory.mktemp("demo")
    tree = write_demo_tree(work / "tree", size=1_500_000, seed=11)
    return build_demo_disk(work / "disk", tree=tree, mainos_size=12 << 20)


@pytest.fixture(scope="module")
def ffu_v1(demo: DemoDisk, tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_ffu([demo.path], tmp_path_factory.mktemp("v1") / "v1.ffu", version=1).path


@pytest.fixture(scope="module")
def ffu_v2(demo: DemoDisk, tmp_path_factory: pytest.TempPathFactory) -> Path:
    work = tmp_path_factory.mktemp("v2")
    lun = work / "lun1.img"
    lun.write_bytes(os.urandom(150_000) + bytes(900_000))
    sources = [StoreSource(demo.path, "VenHw(LUN0)"), StoreSource(lun, "VenHw(LUN1)")]
    return write_ffu(sources, work / "v2.ffu", version=2).path


def _tree_listing(root: Path) -> dict[str, tuple[bool, int, str | None]]:
    out: dict[str, tuple[bool, int, str | None]] = {}
    for path in root.rglob("*"):
        rel = "/" + path.relative_to(root).as_posix()
        if path.is_dir():
            out[rel] = (True, 0, None)
        else:
            data = path.read_bytes()
            out[rel] = (False, len(data), hashlib.sha256(data).hexdigest())
    return out


def _wim_listing(wim: Path, scratch: Path) -> dict[str, tuple[bool, int, str | None]]:
    """Paths, sizes and SHA-256 of file contents, read back with wimlib."""
    tree = wimlib.read_tree(wim)
    out: dict[str, tuple[bool, int, str | None]] = {}
    for path, entry in tree.items():
        if entry.is_dir:
            out[path] = (True, 0, None)
            continue
        dest = scratch / hashlib.sha1(path.encode()).hexdigest()
        dest.mkdir(parents=True)
        data = wimlib.extract_file(wim, path, dest).read_bytes()
        assert entry.sha1 == (hashlib.sha1(data).digest() if data else None)
        out[path] = (False, entry.size, hashlib.sha256(data).hexdigest())
    return out


@pytest.mark.parametrize("which", ["v1", "v2 two stores"])
def test_round_trip(which: str, demo: DemoDisk, request: pytest.FixtureRequest, tmp_path: Path):
    ffu = request.getfixturevalue("ffu_v1" if which == "v1" else "ffu_v2")
    wim = tmp_path / "mainos.wim"
    reports: list[Img2WimProgress] = []
    milestones: list[str] = []
    result = img2wim(ffu, wim, progress=reports.append, milestone=milestones.append)

    expected = {p: v for p, v in _tree_listing(demo.tree).items() if p not in REMOVED}
    got = _wim_listing(wim, tmp_path / "x")
    # kept junctions are reparse points in the WIM, not directories
    kept = {"/Documents and Settings", "/Users/All Users"}
    assert set(got) == set(expected)
    for path in kept:
        assert got[path][1] == 0
    assert {p: v for p, v in got.items() if p not in kept} == {
        p: v for p, v in expected.items() if p not in kept
    }
    entries = wimlib.read_tree(wim)
    assert all(entries[p].reparse_tag == IO_REPARSE_TAG_MOUNT_POINT for p in kept)
    assert set(result.removed_junctions) == REMOVED
    assert "/Documents and Settings" in result.kept_reparse_points

    info = wimlib.wim_info(wim)
    assert (info.image_count, info.boot_index, info.compression) == (1, 1, "LZX")
    header = parse_wim_header(wim.read_bytes()[:208], path=str(wim), file_size=wim.stat().st_size)
    assert header.boot_index == 1 and not header.warnings
    assert read_wim_info(wim).image_names == ("MainOS",)

    assert milestones[0].startswith("Reading the image file")
    assert milestones[1:] == [
        f"Creating the WIM {wim}",
        "Capturing 'MainOS'",
        "WIM creation complete",
    ]
    stages = [r.stage for r in reports]
    assert stages.index("verify") < stages.index("scan") < stages.index("write")
    verify = [r for r in reports if r.stage == "verify"]
    assert verify[-1].done == verify[-1].total
    assert result.chunks_verified == read_ffu(ffu).chunk_count
    assert result.ffu_version == (1 if which == "v1" else 2) and result.store_number == 1
    # the sparse MainOS image used no more disk than the FFU writes into MainOS
    assert 0 < result.temp_allocated <= result.mainos_written < result.mainos.size
    assert sorted(os.listdir(tmp_path)) == ["mainos.wim", "x"]  # no temporary left


def test_cli_converts_and_info_accepts(ffu_v2: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    wim = tmp_path / "out.wim"
    assert main(["img2wim", "--no-progress", str(ffu_v2), str(wim)]) == 0
    out = capsys.readouterr().out
    for text in ("Reading the image file", "Creating the WIM", "Capturing 'MainOS'", "complete"):
        assert text in out
    assert "removed junctions to other partitions: /Data, /EFIESP" in out
    assert main(["info", str(wim)]) == 0
    assert main(["info", str(ffu_v2)]) == 0
    out = capsys.readouterr().out
    for text in ("FFU v2 (2 stores)", "ParallelFlash.Demo.Platform", "VenHw(LUN1)", "MainOS: LBA"):
        assert text in out
    assert "Data: LBA" in out and "not written" in out
    assert "hash check" in out and "OK: all" in out


def test_info_on_ffu_json(ffu_v1: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    import json

    assert main(["info", "--json", str(ffu_v1)]) == 0
    (entry,) = json.loads(capsys.readouterr().out)
    rows = {r["label"]: r["value"] for r in entry["rows"]}
    assert rows["type"] == "FFU v1 (1 store)"
    assert rows["chunk size"].startswith("131,072 bytes")
    assert rows["block size"].startswith("131,072 bytes")
    assert "EFIESP" in rows["store 1 partition 1"] and "written" in rows["store 1 partition 1"]
    assert rows["hash check"].startswith("OK")


# --- refusals: clear error, exit 2, nothing left behind ----------------------------


def _rehash(path: Path) -> None:
    """Recompute the hash table so a deliberate header change is not caught as corruption."""
    ffu = read_ffu(path)
    digests = bytearray()
    with path.open("r+b") as f:
        f.seek(ffu.image_offset)
        while chunk := f.read(ffu.chunk_size):
            digests += hashlib.sha256(chunk).digest()
        f.seek(ffu.hash_table_offset)
        f.write(digests)


def _flip(path: Path, offset: int) -> None:
    with path.open("r+b") as f:
        f.seek(offset)
        b = f.read(1)
        f.seek(offset)
        f.write(bytes([b[0] ^ 0xFF]))


def _mainos_block_offset(path: Path) -> tuple[int, int]:
    """(file offset of a payload block inside MainOS, offset of its descriptor's location)."""
    ffu = read_ffu(path)
    store = ffu.stores[0]
    pos = store.descriptor_offset
    for desc in iter_descriptors(ffu, store):
        loc = desc.locations[0]
        if loc.method == AccessMethod.DISK_BEGIN and loc.block_index * store.block_size > 5 << 20:
            return desc.file_offset, pos + 8
        pos += 8 + 8 * len(desc.locations)
    raise AssertionError("no MainOS block")


def _bad_signature(ffu: Path, work: Path) -> str:
    _flip(ffu, 10)
    return "security header.signature"


def _truncated(ffu: Path, work: Path) -> str:
    os.truncate(ffu, ffu.stat().st_size - 100_000)
    return "truncated"


def _flipped_chunk_byte(ffu: Path, work: Path) -> str:
    block, _ = _mainos_block_offset(ffu)
    _flip(ffu, block + 4242)
    info = read_ffu(ffu)
    chunk = (block + 4242 - info.image_offset) // info.chunk_size
    return f"chunk {chunk} (file offset 0x"


def _descriptor_past_end(ffu: Path, work: Path) -> str:
    _, location = _mainos_block_offset(ffu)
    with ffu.open("r+b") as f:
        f.seek(location + 4)
        f.write(struct.pack("<I", 100_000))  # block 100000: 12 GiB into a 20 MiB disk
    _rehash(ffu)
    return "lies outside the disk"


def _rebuild_without(
    *, partitions: tuple[str, ...] = ("EFIESP", "MainOS", "Data"), fs: str = "ntfs"
):  # type: ignore[no-untyped-def]
    def make(ffu: Path, work: Path) -> str:
        tree = write_demo_tree(work / "tree", size=100_000)
        disk = build_demo_disk(
            work / "d", tree=tree, partitions=partitions, mainos_fs=fs, mainos_size=8 << 20
        )
        write_ffu([disk.path], ffu, version=1)
        if fs != "ntfs":
            return "MainOS partition: is not NTFS (it holds a FAT file system)"
        missing = ({"EFIESP", "MainOS"} - set(partitions)).pop()
        return f"no {missing} partition"

    return make


CORRUPTIONS = {
    "bad signature": _bad_signature,
    "truncated payload": _truncated,
    "flipped byte in a chunk": _flipped_chunk_byte,
    "descriptor past the end": _descriptor_past_end,
    "missing MainOS": _rebuild_without(partitions=("EFIESP", "Data")),
    "missing EFIESP": _rebuild_without(partitions=("MainOS", "Data")),
    "MainOS not NTFS": _rebuild_without(fs="fat"),
}


@pytest.mark.parametrize("case", list(CORRUPTIONS))
def test_refused_with_exit_2_and_no_wim(case: str, ffu_v1: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    scratch = tmp_path / "scratch"
    scratch.mkdir()
    out_dir = tmp_path / "out"
    out_dir.mkdir()
    ffu = scratch / "bad.ffu"
    shutil.copy(ffu_v1, ffu)
    expected = CORRUPTIONS[case](ffu, scratch)
    code = main(["img2wim", "--no-progress", str(ffu), str(out_dir / "mainos.wim")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert expected in err and str(ffu) in err
    assert err.count("\n") == 1  # one clear line, no traceback
    assert os.listdir(out_dir) == []  # no WIM, partial or otherwise, no temporary


def test_ctrl_c_during_capture_leaves_nothing(ffu_v1: Path, tmp_path: Path) -> None:
    for stage in ("verify", "write"):

        def interrupt(report: Img2WimProgress, stage: str = stage) -> None:
            if report.stage == stage:
                raise KeyboardInterrupt

        with pytest.raises(KeyboardInterrupt):
            img2wim(ffu_v1, tmp_path / "mainos.wim", progress=interrupt)
        assert os.listdir(tmp_path) == []


def test_bad_target(ffu_v1: Path, tmp_path: Path) -> None:
    assert main(["img2wim", str(ffu_v1), str(tmp_path)]) == 2
    assert main(["img2wim", str(ffu_v1), str(tmp_path / "no" / "such.wim")]) == 2
    with pytest.raises(FormatError):
        img2wim(tmp_path / "missing.ffu", tmp_path / "x.wim")


@pytest.mark.parametrize(
    ("target", "elsewhere"),
    [
        ("\\??\\Volume{01234567-89ab-cdef-0123-456789abcdef}\\", True),
        ("\\??\\D:\\", True),
        ("\\Device\\HarddiskVolume3\\", True),
        ("\\??\\UNC\\server\\share", True),
        ("\\??\\C:\\Users", False),
        ("\\??\\c:\\ProgramData", False),
        ("Windows\\System32", False),
    ],
)
def test_junction_classification(target: str, elsewhere: bool) -> None:
    point = ReparsePoint(IO_REPARSE_TAG_MOUNT_POINT, target, "")
    assert leads_to_other_volume(point) is elsewhere


def test_info_refuses_corrupt_ffu(ffu_v1: Path, tmp_path: Path, capsys) -> None:  # type: ignore[no-untyped-def]
    bad = tmp_path / "bad.ffu"
    shutil.copy(ffu_v1, bad)
    expected = _flipped_chunk_byte(bad, tmp_path)
    assert main(["info", str(bad)]) == 2
    captured = capsys.readouterr()
    assert expected in captured.out + captured.err
