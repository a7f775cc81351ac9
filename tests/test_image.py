"""The shared image buffer: read once, hashed once, zero-copy, immune to the file changing."""

from __future__ import annotations

import errno
import hashlib
import mmap
import os
from pathlib import Path

import anyio
import anyio.lowlevel
import pytest

from parallel_flash.engine.pipeline import boot_line
from parallel_flash.engine.records import DeviceRecord, DeviceState
from parallel_flash.errors import FormatError, InputError
from parallel_flash.formats.secwim import build_secwim
from parallel_flash.image import ImageBuffer
from parallel_flash.transport.sim import simulated_line


def test_load_concatenates_sdi_and_wim_and_hashes_them(small_wim: Path, small_sdi: Path) -> None:
    sdi, wim = small_sdi.read_bytes(), small_wim.read_bytes()
    with ImageBuffer.load(small_wim, small_sdi) as image:
        assert image.sdi_length == len(sdi) and image.wim_length == len(wim)
        assert bytes(image.view) == sdi + wim
        assert image.sha256 == hashlib.sha256(sdi + wim).hexdigest()
        assert image.sdi_path == str(small_sdi) and image.wim_path == str(small_wim)


def test_slices_are_views_of_the_one_writable_buffer(small_wim: Path, small_sdi: Path) -> None:
    with ImageBuffer.load(small_wim, small_sdi) as image:
        piece = image.view[100 : 100 + 4096]       # as the engine slices its transfers
        assert isinstance(piece.obj, mmap.mmap)     # no copy: the anonymous map itself
        assert not piece.readonly                   # libusb uses writable buffers in place
        assert piece.obj is image.view[0:1].obj
        piece.release()


def _scribble_over(path: Path) -> None:
    """Overwrite, then truncate, the file on disk while devices stream it."""
    with open(path, "r+b") as stream:
        stream.write(b"\xff" * 4096)
        stream.truncate(1000)


def test_a_file_changed_or_truncated_during_the_run_changes_nothing(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    wim = tmp_path / "live.wim"
    wim.write_bytes(small_wim.read_bytes())
    expected = hashlib.sha256(small_sdi.read_bytes() + small_wim.read_bytes()).hexdigest()
    with ImageBuffer.load(wim, small_sdi) as image:
        # Once read (in the background, while devices are found), the file is out of the loop.
        image.available(image.total_length)
        links = simulated_line(3, rate=None)

        async def run() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: boot_line(links, image))
                await anyio.lowlevel.checkpoint()
                _scribble_over(wim)

        anyio.run(run)
        assert image.sha256 == expected
        for link in links:
            assert link.model.booted and link.model.sha256 == expected


def test_a_file_that_shrinks_while_loading_is_an_input_error(
    tmp_path: Path, small_wim: Path, small_sdi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    wim = tmp_path / "cut.wim"
    wim.write_bytes(small_wim.read_bytes())
    from parallel_flash import image as image_module

    read = image_module._Loader._read

    def truncate_then_read(self):  # type: ignore[no-untyped-def]
        # The file is cut after its size was taken and before it is read:
        # the real read then comes up short.
        os.truncate(wim, 1000)
        read(self)

    monkeypatch.setattr(image_module._Loader, "_read", truncate_then_read)
    shrank = r"cut.wim: file shrank while being read: got 1000 of"
    # The headers are intact, so loading starts; whoever needs the rest gets the error.
    with ImageBuffer.load(wim, small_sdi) as image:
        with pytest.raises(InputError, match=shrank):
            image.available(image.total_length)
        with pytest.raises(InputError, match=shrank):
            _ = image.sha256
    monkeypatch.undo()
    wim.write_bytes(small_wim.read_bytes())

    def cut_in_header(self):  # type: ignore[no-untyped-def]
        os.truncate(wim, 100)
        read(self)

    monkeypatch.setattr(image_module._Loader, "_read", cut_in_header)
    # Cut inside the WIM header, which loading checks: loading itself fails.
    with pytest.raises(InputError, match=r"cut.wim: file shrank while being read: got 100 of"):
        ImageBuffer.load(wim, small_sdi)


def test_secwim_is_sent_as_is_without_an_sdi(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    bundle = tmp_path / "x.secwim"
    bundle.write_bytes(build_secwim(small_sdi.read_bytes(), small_wim.read_bytes()))
    with ImageBuffer.load(bundle) as image:
        assert image.is_secwim and image.sdi_length == 0
        assert image.wim_length == bundle.stat().st_size
        links = simulated_line(1, rate=None)
        records = anyio.run(lambda: boot_line(links, image))
        assert records[0].state is DeviceState.BOOTED, records[0].error
    with pytest.raises(InputError, match="already holds its SDI"):
        ImageBuffer.load(bundle, small_sdi)


def test_plain_wim_without_sdi_says_where_to_find_one(small_wim: Path) -> None:
    with pytest.raises(InputError, match="--sdi"):
        ImageBuffer.load(small_wim)


def test_non_image_files_are_refused(tmp_path: Path, small_sdi: Path) -> None:
    text = tmp_path / "notes.txt"
    text.write_text("hello")
    with pytest.raises(FormatError, match="magic"):
        ImageBuffer.load(text, small_sdi)
    empty = tmp_path / "empty.wim"
    empty.touch()
    with pytest.raises(FormatError, match="empty"):
        ImageBuffer.load(empty, small_sdi)
    with pytest.raises(InputError, match="not a regular file"):
        ImageBuffer.load(tmp_path, small_sdi)


def test_without_a_memory_file_the_image_loads_into_an_anonymous_map(
    small_wim: Path, small_sdi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A file size limit (RLIMIT_FSIZE) refuses the memory file: same bytes, same digest."""
    from parallel_flash import image as image_module

    def too_large(_fd: int, _size: int) -> None:
        raise OSError(errno.EFBIG, "File too large")

    expected = hashlib.sha256(small_sdi.read_bytes() + small_wim.read_bytes()).hexdigest()
    monkeypatch.setattr(image_module.os, "ftruncate", too_large)
    with ImageBuffer.load(small_wim, small_sdi) as image:
        assert image.sha256 == expected
        assert bytes(image.view[: image.sdi_length]) == small_sdi.read_bytes()


def test_devices_stream_what_is_read_while_the_rest_is_still_being_read(
    small_wim: Path, small_sdi: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 10: the first image byte goes out before the whole file is read, byte-exact."""
    import threading

    from parallel_flash import image as image_module
    from parallel_flash.engine.options import BootOptions

    monkeypatch.setattr(image_module, "_READ_BLOCK", 32 << 10)
    # The reader stops after the SDI and the WIM's header (which loading checks).
    hold_at = small_sdi.stat().st_size + (32 << 10)
    copy = image_module._Loader._copy
    held = threading.Event()
    release = threading.Event()

    def copy_then_hold(self, stream, start, end):  # type: ignore[no-untyped-def]
        if start >= hold_at and not release.is_set():
            held.set()
            assert release.wait(30), "the test never released the reader"
        return copy(self, stream, start, end)

    monkeypatch.setattr(image_module._Loader, "_copy", copy_then_hold)
    expected = hashlib.sha256(small_sdi.read_bytes() + small_wim.read_bytes()).hexdigest()
    options = BootOptions(transfer_size=16 << 10)
    with ImageBuffer.load(small_wim, small_sdi) as image:
        assert image.total_length > 2 * hold_at
        links = simulated_line(3, rate=None)
        records: list[DeviceRecord] = []

        async def run() -> None:
            async with anyio.create_task_group() as group:
                group.start_soon(lambda: boot_line(links, image, options=options, records=records))
                for _ in range(1000):  # up to 10 s
                    if held.is_set() and len(records) == 3 and all(
                        r.bytes_done > hold_at - (16 << 10) for r in records
                    ):
                        break
                    await anyio.sleep(0.01)
                else:
                    pytest.fail(f"devices never got what was read: {records}")
                # The reader is held: every device has what was read and waits for more.
                sent = [r.bytes_done for r in records]
                await anyio.sleep(0.2)
                assert [r.bytes_done for r in records] == sent
                assert image.loaded_length < image.total_length
                assert all(0 < done <= image.loaded_length for done in sent)
                assert {r.state for r in records} == {DeviceState.SENDING_WIM}
                release.set()

        anyio.run(run)
        assert image.sha256 == expected
        assert [r.state for r in records] == [DeviceState.BOOTED] * 3
        for link in links:
            assert link.model.booted and link.model.sha256 == expected
