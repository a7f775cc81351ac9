"""Lumia and UFP devices through the engine's one pipeline on the simulated line, mixed with
SimpleIO ones (the loader seam: protocol.loader).

Each refusal or fault fails only its own device, with a reason that names
the status and its meaning; the rest of the line boots.
"""

from __future__ import annotations

import hashlib
import json
import re
from pathlib import Path

import anyio
import pytest

from _nok_pair import FfuInput
from parallel_flash.engine.pipeline import BootOptions, boot_line
from parallel_flash.engine.records import DeviceRecord, FailureReason
from parallel_flash.errors import InputError
from parallel_flash.image import ImageBuffer
from parallel_flash.protocol.device import DeviceFaults
from parallel_flash.protocol.nokia.device import NokDeviceModel
from parallel_flash.protocol.nokia.faults import NokFaults
from parallel_flash.protocol.nokia.host import NokTimeouts
from parallel_flash.transport.sim import SimLink, simulated_line

FAST = BootOptions(
    nok_timeouts=NokTimeouts(info=0.5, reply=0.5, transfer_base=0.5, reenumerate=0.5)
)
MIX = {1: "simpleio", 2: "lumia", 3: "lumia", 4: "ufp-v1", 5: "ufp-v2"}


def run_line(
    path: Path, kinds: dict[int, str], faults: dict[int, DeviceFaults | NokFaults] | None = None
) -> tuple[list[DeviceRecord], list[SimLink]]:
    links = simulated_line(len(kinds), rate=None, kinds=kinds, faults=faults)
    with ImageBuffer.load(path) as image:
        records = anyio.run(lambda: boot_line(links, image, options=FAST))
    return sorted(records, key=lambda r: r.slot), links


def test_a_secwim_boots_simpleio_and_lumia_devices(secwim: Path) -> None:
    records, links = run_line(secwim, MIX)
    assert [r.loader for r in records] == ["simpleio", "lumia", "lumia", "ufp", "ufp"]
    assert [r.ok for r in records] == [True, True, True, False, False]
    digest = hashlib.sha256(secwim.read_bytes()).hexdigest()
    for record, link in zip(records[:3], links[:3], strict=True):
        assert link.model.sha256 == digest
        assert record.bytes_done == record.bytes_total == secwim.stat().st_size
    assert records[1].name == "Lumia FlashApp 2.75"
    for record in records[3:]:
        assert record.reason is FailureReason.REFUSED
        assert record.error == (
            f"a ufp device needs an FFU (FFU to RAM); {secwim} is a .secwim"
        )
        assert links[record.slot - 1].model.messages == 0  # nothing was sent


def test_an_ffu_boots_ufp_v1_and_v2_devices(ffu: FfuInput) -> None:
    records, links = run_line(ffu.path, MIX)
    assert [r.ok for r in records] == [False, False, False, True, True]
    assert "a simpleio device needs a WIM (with --sdi) or a .secwim" in (records[0].error or "")
    assert "a lumia device needs a signed .secwim" in (records[1].error or "")
    digest = hashlib.sha256(ffu.data).hexdigest()
    for link in links[3:]:
        model = link.model
        assert isinstance(model, NokDeviceModel)
        assert model.sha256 == digest and model.booted and model.rejection is None


@pytest.mark.parametrize(
    ("slot", "faults", "reason", "match", "refused"),
    [
        (2, "no-mmos", FailureReason.REFUSED, "subblock 0x1F is absent", True),
        (2, "mmos=0", FailureReason.REFUSED, "subblock 0x1F is 0, not 1", True),
        (2, "wbs=0", FailureReason.REFUSED, "WriteBufferSize 0", True),
        (2, "status=0x1003", FailureReason.DEVICE_STATUS, r"0x1003 \(hash mismatch\)", False),
        (2, "switch-status=0x0012", FailureReason.DEVICE_STATUS,
         r"NOKXCBA .* 0x0012 \(authentication required\)", False),
        (2, "disconnect=4096", FailureReason.DISCONNECTED, "disconnected while waiting for", False),
        (2, "stop-reading=4096", FailureReason.TIMEOUT, "timed out waiting for the device to "
         "take an MMOS piece", False),
        (2, "silent-after=1", FailureReason.TIMEOUT, "reply to an MMOS piece", False),
        (2, "no-return", FailureReason.TIMEOUT, "did not come back in Label mode", False),
        (2, "return-pid=0x066e", FailureReason.PROTOCOL, "unexpectedly switched mode", False),
    ],
)
def test_each_lumia_fault_fails_only_its_device(
    secwim: Path, slot: int, faults: str, reason: FailureReason, match: str, refused: bool
) -> None:
    records, links = run_line(secwim, MIX, {slot: NokFaults.parse(faults)})
    failed = records[slot - 1]
    assert not failed.ok and failed.reason is reason, failed.error
    assert re.search(match, failed.error or ""), failed.error
    assert [r.ok for i, r in enumerate(records[:3], start=1) if i != slot] == [True, True]
    model = links[slot - 1].model
    if refused:
        assert failed.error.startswith("refused before sending any image byte")  # type: ignore[union-attr]
        assert model.received_bytes == 0 and failed.bytes_done == 0


@pytest.mark.parametrize(
    ("faults", "reason", "match"),
    [
        ("mask=0", FailureReason.REFUSED, r"protocol mask 0x0000 has neither"),
        ("wbs=0", FailureReason.REFUSED, "WriteBufferSize 0"),
        ("memory=4096", FailureReason.REFUSED, "LargestMemoryRegion of 4096 bytes"),
        ("noku-v2", FailureReason.REFUSED, "flash protocol v2 not supported"),
        ("status=0x1304", FailureReason.DEVICE_STATUS, r"0x1304 \(invalid platform ID\)"),
        ("disconnect=0x10000", FailureReason.DISCONNECTED, "disconnected while waiting for"),
        ("stop-reading=0x10000", FailureReason.TIMEOUT, "timed out waiting for the device to take"),
    ],
)
def test_each_ufp_fault_fails_only_its_device(
    ffu: FfuInput, faults: str, reason: FailureReason, match: str
) -> None:
    records, links = run_line(ffu.path, {1: "ufp-v2", 2: "ufp-v2", 3: "ufp-v1"},
                              {2: NokFaults.parse(faults)})
    assert records[1].reason is reason, records[1].error
    assert re.search(match, records[1].error or ""), records[1].error
    assert records[0].ok and records[2].ok
    model = links[1].model
    assert isinstance(model, NokDeviceModel)
    if reason is FailureReason.REFUSED:
        # Refused before the device took any image byte, and before any payload byte.
        assert model.received_bytes == 0 and records[1].bytes_done == 0
    if faults == "noku-v2":
        assert model.messages == 2  # NOKV and the first header v2 message, nothing after
        assert (records[1].error or "").startswith(
            "refused before the device took any image byte: the device answered b'NOKU' to "
            "the FFU header v2 message at file offset 0"
        )
    elif reason is FailureReason.REFUSED:
        assert model.messages == 1  # NOKV only
        assert (records[1].error or "").startswith("refused before sending any image byte")


def test_boot_sim_mix_from_the_command_line(
    secwim: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from parallel_flash.cli import main

    report = tmp_path / "run.jsonl"
    code = main([
        "boot", str(secwim), "--sim", "4", "--sim-mix", "lumia=2,ufp-v2=1",
        "--sim-fault", "3:no-mmos", "--plain", "--report", str(report), "--sim-rate", "0",
    ])
    out = capsys.readouterr().out
    assert code == 1, out
    lines = [json.loads(line) for line in report.read_text().splitlines()]
    devices = {line["port"]: line for line in lines if "port" in line}
    assert {port: d["loader"] for port, d in devices.items()} == {
        "sim-1": "simpleio", "sim-2": "lumia", "sim-3": "lumia", "sim-4": "ufp",
    }
    assert devices["sim-2"]["state"] == "booted"
    assert "subblock 0x1F is absent" in devices["sim-3"]["error"]
    assert "needs an FFU" in devices["sim-4"]["error"]
    assert main(["boot", str(secwim), "--sim", "2", "--sim-mix", "lumia=3"]) == 2
    assert "--sim-mix names 3 devices" in capsys.readouterr().err
    assert main(["boot", str(secwim), "--sim", "2", "--sim-mix", "lumia=1",
                 "--sim-fault", "2:logs=3"]) == 2
    assert "unknown fault 'logs'" in capsys.readouterr().err


def test_one_run_boots_a_secwim_and_an_ffu_on_a_mixed_line(
    secwim: Path, ffu: FfuInput
) -> None:
    from parallel_flash.image import ImageSet

    links = simulated_line(len(MIX), rate=None, kinds=MIX)
    with ImageSet([ImageBuffer.load(secwim), ImageBuffer.load(ffu.path)]) as images:
        records = anyio.run(lambda: boot_line(links, images, options=FAST))
    assert all(record.ok for record in records), [r.error for r in records]
    digests = {
        "simpleio": hashlib.sha256(secwim.read_bytes()).hexdigest(),
        "lumia": hashlib.sha256(secwim.read_bytes()).hexdigest(),
        "ufp": hashlib.sha256(ffu.data).hexdigest(),
    }
    for record in records:
        assert links[record.slot - 1].model.sha256 == digests[record.loader]
        assert record.image_sha256 == digests[record.loader]  # its own file's, on record


def test_a_wim_and_a_secwim_together_are_refused(
    secwim: Path, small_wim: Path, small_sdi: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    from parallel_flash.cli import main

    code = main(["boot", str(small_wim), str(secwim), "--sdi", str(small_sdi), "--sim", "1"])
    assert code == 2
    assert "simpleio devices would take either" in capsys.readouterr().err
    assert main(["boot", str(secwim), str(secwim), "--sim", "1"]) == 2
    assert "more than one secwim file" in capsys.readouterr().err
    assert main(["boot", str(secwim), str(secwim), "--sdi", str(small_sdi),
                 "--sim", "1"]) == 2
    assert "--sdi" in capsys.readouterr().err


def test_nok_timeouts_come_from_the_command_line_with_one_set_of_defaults() -> None:
    """--nok-*-timeout and --return-timeout reach the engine; unset, they are NokTimeouts'."""
    from parallel_flash.cli import build_parser
    from parallel_flash.cli._args import boot_options

    parser = build_parser()
    defaults = boot_options(parser.parse_args(["boot", "x.secwim"])).nok_timeouts
    assert defaults == NokTimeouts()
    args = parser.parse_args([
        "boot", "x.secwim", "--nok-info-timeout", "1.5", "--nok-send-timeout", "2",
        "--nok-reply-timeout", "3", "--return-timeout", "4",
    ])
    assert boot_options(args).nok_timeouts == NokTimeouts(
        info=1.5, transfer_base=2, reply=3, reenumerate=4
    )
    with pytest.raises(InputError, match="NOK reply must be a positive number, not nan"):
        NokTimeouts(reply=float("nan"))


def test_a_lumia_that_does_not_come_back_fails_after_the_return_timeout(secwim: Path) -> None:
    """The wait for Label mode is bounded by its own timeout, and says what it waited for."""
    options = BootOptions(nok_timeouts=NokTimeouts(reenumerate=0.3))
    links = simulated_line(1, rate=None, kinds={1: "lumia"}, faults={1: NokFaults(no_return=True)})
    with ImageBuffer.load(secwim) as image:
        [record] = anyio.run(lambda: boot_line(links, image, options=options))
    assert record.reason is FailureReason.TIMEOUT
    assert record.error == "the device did not come back in Label mode on its port within 0.3 s"
    assert record.bytes_done == record.bytes_total  # it took the whole image first


def test_every_loader_runs_through_the_hosts_boot_options_name(
    secwim: Path, ffu: FfuInput
) -> None:
    """One pipeline: each device's host comes from BootOptions.hosts, whatever its loader."""
    from parallel_flash.image import ImageSet
    from parallel_flash.protocol.loader import HOSTS, HostFactory, HostSetup, LoaderHost
    from parallel_flash.protocol.selection import Loader

    built: list[tuple[Loader, str]] = []

    def watched(loader: Loader) -> HostFactory:
        def factory(setup: HostSetup) -> LoaderHost:
            host = HOSTS[loader](setup)
            built.append((loader, type(host).__name__))
            return host

        return factory

    options = BootOptions(
        hosts={loader: watched(loader) for loader in Loader}, nok_timeouts=FAST.nok_timeouts
    )
    links = simulated_line(len(MIX), rate=None, kinds=MIX)
    with ImageSet([ImageBuffer.load(secwim), ImageBuffer.load(ffu.path)]) as images:
        records = anyio.run(lambda: boot_line(links, images, options=options))
    assert all(record.ok for record in records), [r.error for r in records]
    assert sorted(built) == sorted([
        (Loader.SIMPLEIO, "WimBootHost"), (Loader.LUMIA, "LumiaMmosHost"),
        (Loader.LUMIA, "LumiaMmosHost"), (Loader.UFP, "UfpRamBootHost"),
        (Loader.UFP, "UfpRamBootHost"),
    ])
    with pytest.raises(InputError, match="no loader host for lumia, ufp devices"):
        BootOptions(hosts={Loader.SIMPLEIO: HOSTS[Loader.SIMPLEIO]})
