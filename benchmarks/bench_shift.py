"""A simulated shift: station mode on the emulated line, its own ledger vs the report.

``parallel-flash boot WIM --watch`` runs for ``--minutes`` against devices
emulated behind umockdev (real libusb, real hotplug). An operator script --
this benchmark -- keeps ``--ports`` ports busy: it plugs devices at random,
each with one scenario (a healthy phone, or one of issue 7's faults), pulls
some out mid-transfer, swaps phones inside the confirmation window, and
removes each device once its record is in the report. It keeps its own
ledger of what it plugged and what each device must end as, and compares it
with the report: records lost, duplicated, wrong (outcome or reason), devices
never finished; and the tool's file descriptors, threads and RSS at the start,
once warm, and at the end. At the end of the shift it sends SIGTERM (the
normal end of a shift: exit 0 unless a device failed -- here some must).

Targets (issue 7): 0 lost, 0 duplicated, 0 wrong, 0 unfinished; fds and
threads flat; RSS growth under 5 MB per 10,000 devices.

    python benchmarks/bench_shift.py --minutes 10
"""

from __future__ import annotations

import argparse
import json
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import print_table
from parallel_flash.emulator import DeviceSpec, EmulatedLine
from parallel_flash.errors import EmulatorError

#: The booted image of the emulated line (EmulatedLine's default booted_pid).
BOOTED_ID = "045E:0A00"
#: A device with no record this long after its plug counts as never finished.
RECORD_TIMEOUT = 90.0


@dataclass(frozen=True, slots=True)
class Scenario:
    """What the operator plugs, and what the report must say about it."""

    name: str
    faults: str
    ok: bool
    #: Substring the record's error must contain (failures only).
    reason: str = ""
    weight: int = 1
    #: Link rate of this device (MB/s), None = the line's.
    rate: float | None = None


SCENARIOS = (
    Scenario("healthy", "", True, weight=14),
    Scenario("negative status", "status=-5", False, "status 0xfffffffb"),
    Scenario("stops reading", "stop-reading=1048576", False, "timed out"),
    Scenario("disconnects", "disconnect=1048576", False, "disconnected"),
    Scenario("stale, many Log packets", "stale=4096,logs=8", True),
    Scenario("curPosition low byte 5", "stale=5", True),
    Scenario("RAM too small", "ram=1048576", False, "0xc0000017"),
    Scenario("busy", "busy", False, "device busy"),
    Scenario("bounces", "reappear-in-flashing", False, "came back in flashing mode"),
    Scenario("unplugged mid-transfer", "", False, "disconnected", rate=2.0),
    Scenario("swapped in the window", "", True, weight=2),
)


@dataclass(slots=True)
class Plug:
    """One device the operator plugged: a line of the ledger."""

    unique_id: str
    port: str
    scenario: Scenario
    plugged: float
    streaming_seen: bool = False
    pulled: bool = False
    swap_done: bool = False
    records: list[dict[str, Any]] = field(default_factory=list)


@dataclass(slots=True)
class PortState:
    port: str
    plug: Plug | None = None
    #: The swapped-in phone waiting for its record, after ``plug``'s.
    second: Plug | None = None


def _proc_figures(pid: int) -> dict[str, int]:
    """Open fds, threads and RSS (KiB) of a process, from /proc."""
    fds = len(os.listdir(f"/proc/{pid}/fd"))
    threads = rss = 0
    with open(f"/proc/{pid}/status", encoding="ascii") as status:
        for line in status:
            if line.startswith("Threads:"):
                threads = int(line.split()[1])
            elif line.startswith("VmRSS:"):
                rss = int(line.split()[1])
    return {"fds": fds, "threads": threads, "rss_kib": rss}


class ReportTail:
    """Reads the report's new lines as they are written (whole lines only)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.offset = 0
        self.devices: list[dict[str, Any]] = []
        self.summary: dict[str, Any] | None = None

    def poll(self) -> list[dict[str, Any]]:
        if not self.path.exists():
            return []
        with open(self.path, "rb") as file:
            file.seek(self.offset)
            data = file.read()
        end = data.rfind(b"\n") + 1
        self.offset += end
        new = []
        for line in data[:end].splitlines():
            if not line.strip():
                continue
            entry = json.loads(line)
            if entry.get("type") == "device":
                new.append(entry)
            elif entry.get("type") == "summary":
                self.summary = entry
        self.devices += new
        return new


class Shift:
    """The operator: plugs, pulls, swaps, and keeps the ledger."""

    def __init__(self, line: EmulatedLine, ports: list[str], rng: random.Random) -> None:
        self.line = line
        self.rng = rng
        self.ports = {port: PortState(port) for port in ports}
        self.ledger: dict[str, Plug] = {}
        self.unexpected: list[dict[str, Any]] = []
        self.event_index = 0
        self.unfinished: list[Plug] = []
        self._weights = [s.weight for s in SCENARIOS]

    def plug(self, state: PortState, scenario: Scenario | None = None) -> Plug | None:
        """Plug a device; None if the port is not free yet (tried again on the next pass)."""
        scenario = scenario or self.rng.choices(SCENARIOS, self._weights)[0]
        unique_id = str(uuid.UUID(int=self.rng.getrandbits(128)))
        try:
            self.line.plug(
                DeviceSpec(
                    port=state.port, unique_id=unique_id, faults=scenario.faults,
                    name=f"Contoso.Shift.{scenario.name.replace(' ', '-')}",
                    link_rate_mbps=scenario.rate,
                )
            )
        except EmulatorError as exc:
            if "already in use" not in str(exc):
                raise
            return None
        plug = Plug(unique_id, state.port, scenario, time.monotonic())
        self.ledger[unique_id] = plug
        return plug

    def clear(self, state: PortState) -> None:
        """Take whatever is plugged at the port out (booted image or failed phone)."""
        summary = self.line.port_summary(state.port)
        if summary is not None and summary["present"]:
            try:
                self.line.unplug(state.port)
            except EmulatorError:  # it left by itself in between
                return

    def take_records(self, entries: list[dict[str, Any]]) -> None:
        for entry in entries:
            plug = self.ledger.get(entry.get("unique_id") or "")
            if plug is None and not entry.get("unique_id"):
                # Never opened (busy, no permission): no unique ID, so the port tells.
                plug = self._waiting_on(entry["port"])
            if plug is None:
                self.unexpected.append(entry)
            else:
                plug.records.append(entry)

    def _waiting_on(self, port: str) -> Plug | None:
        state = self.ports.get(port)
        if state is None:
            return None
        for plug in (state.plug, state.second):
            if plug is not None and not plug.records:
                return plug
        return None

    def on_events(self) -> None:
        events, self.event_index = self.line.events_since(self.event_index)
        for event in events:
            if event.get("event") != "unplugged" or not event.get("booted"):
                continue
            state = self.ports.get(event["port"])
            if state is None or state.plug is None or state.second is not None:
                continue
            if state.plug.scenario.name == "swapped in the window" and not state.plug.swap_done:
                # The booted phone left; the next one goes in before it shows up booted.
                state.plug.swap_done = True
                state.second = self.plug(state, SCENARIOS[0])

    def step(self, taking: bool) -> int:
        """One pass over the ports; returns how many are busy."""
        busy = 0
        now = time.monotonic()
        for state in self.ports.values():
            plug = state.plug
            if plug is None:
                if taking:
                    state.plug = self.plug(state)
                    busy += state.plug is not None
                continue
            busy += 1
            if plug.scenario.name == "unplugged mid-transfer" and not plug.pulled:
                summary = self.line.port_summary(state.port)
                if summary and summary.get("received_bytes", 0) > 0:
                    self.line.unplug(state.port)
                    plug.pulled = True
                continue
            waiting = state.second or plug
            if waiting.records:
                if state.second is not None and not plug.records:
                    continue  # the first phone's verdict is still to come
                self.clear(state)
                state.plug = state.second = None
            elif now - waiting.plugged > RECORD_TIMEOUT:
                self.unfinished.append(waiting)
                self.clear(state)
                state.plug = state.second = None
        return busy


def judge(ledger: dict[str, Plug]) -> dict[str, Any]:
    lost = duplicated = wrong = 0
    by_reason: Counter[str] = Counter()
    wrong_examples: list[str] = []
    for plug in ledger.values():
        if not plug.records:
            lost += 1
            continue
        if len(plug.records) > 1:
            duplicated += 1
        record = plug.records[0]
        scenario = plug.scenario
        if record["ok"] != scenario.ok or (
            not scenario.ok and scenario.reason not in (record.get("error") or "")
        ):
            wrong += 1
            if len(wrong_examples) < 5:
                wrong_examples.append(
                    f"{scenario.name}: ok={record['ok']} error={record.get('error')!r}"
                )
        by_reason[scenario.name] += 1
    return {
        "lost": lost, "duplicated": duplicated, "wrong": wrong,
        "by_scenario": dict(by_reason), "wrong_examples": wrong_examples,
    }


def run(minutes: float, ports: int, seed: int, workdir: Path) -> dict[str, Any]:
    from parallel_flash.demo.inputs import demo_inputs

    wim, sdi = demo_inputs(workdir, wim_size=4 << 20)
    report = workdir / "shift.jsonl"
    if report.exists():
        report.unlink()
    rng = random.Random(seed)
    port_names = [f"1-{hub}.{slot}" for hub in range(1, 8) for slot in range(1, 8)][:ports]
    stderr_path = workdir / "station.log"
    with EmulatedLine(
        0, link_rate_mbps=40, leave_delay=0.2, reappear_delay=1.0,
        record_transcript=False, verify_data=True,
    ) as line, open(stderr_path, "w") as log:
        argv = [
            sys.executable, "-m", "parallel_flash", "boot", str(wim), "--sdi", str(sdi),
            "--watch", "--plain", "--report", str(report), "--confirm", "10",
            "--expect", BOOTED_ID, "--retries", "1",
        ]
        process = line.popen(
            argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        )
        assert process.stderr is not None
        deadline = time.monotonic() + 60
        while "station ready" not in process.stderr.readline():
            if time.monotonic() > deadline or process.poll() is not None:
                raise SystemExit("the station never became ready")
        # The rest of the station's log goes to a file, not a pipe that could fill.
        relay = subprocess.Popen(["cat"], stdin=process.stderr, stdout=log)
        start_figures = _proc_figures(process.pid)
        tail = ReportTail(report)
        shift = Shift(line, port_names, rng)
        began = time.monotonic()
        end = began + minutes * 60
        warm: dict[str, int] | None = None
        warm_devices = 0
        # "Warm": a quarter into the shift, once allocators and caches have settled.
        warm_at = began + minutes * 60 / 4
        while True:
            taking = time.monotonic() < end
            shift.take_records(tail.poll())
            shift.on_events()
            busy = shift.step(taking)
            if warm is None and time.monotonic() >= warm_at:
                warm, warm_devices = _proc_figures(process.pid), len(tail.devices)
            if not taking and busy == 0:
                break
            time.sleep(0.05)
        end_figures = _proc_figures(process.pid)
        shift_seconds = time.monotonic() - began
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(60)
        except subprocess.TimeoutExpired:
            process.kill()
            code = process.wait()
        relay.wait(10)
        shift.take_records(tail.poll())
    verdict = judge(shift.ledger)
    records = len(tail.devices)
    failures: Counter[str] = Counter()
    for entry in tail.devices:
        if not entry["ok"]:
            failures[_reason_class(entry.get("error") or "")] += 1
    warm = warm or start_figures
    grown_devices = max(1, records - warm_devices)
    return {
        "minutes": round(shift_seconds / 60, 1),
        "plugs": len(shift.ledger),
        "records": records,
        "booted": sum(1 for e in tail.devices if e["ok"]),
        "failed": sum(1 for e in tail.devices if not e["ok"]),
        "expected_ok": sum(1 for p in shift.ledger.values() if p.scenario.ok),
        "failures_by_reason": dict(failures),
        "unexpected_records": len(shift.unexpected),
        "unfinished": len(shift.unfinished),
        "exit_code": code,
        "summary": tail.summary,
        "start": start_figures,
        "warm": warm,
        "end": end_figures,
        "rss_growth_kib_per_10k": round(
            (end_figures["rss_kib"] - warm["rss_kib"]) * 10_000 / grown_devices
        ),
        **verdict,
    }


def _reason_class(error: str) -> str:
    for needle in (
        "came back", "device busy", "0xc0000017", "0xfffffffb", "disconnected",
        "timed out", "not seen as", "still in flashing",
    ):
        if needle in error:
            return needle
    return error[:40]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0)
    parser.add_argument("--ports", type=int, default=16)
    parser.add_argument("--seed", type=int, default=7)
    parser.add_argument("--json", action="store_true", help="print the figures as JSON too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="bench-shift-") as tmp:
        result = run(args.minutes, args.ports, args.seed, Path(tmp))
    show(result)
    if args.json:
        print(json.dumps(result))


def show(result: dict[str, Any]) -> None:
    summary = result.get("summary") or {}
    rows = [
        ["devices plugged / recorded", str(result["plugs"]), str(result["records"]), "equal"],
        ["booted", str(result["expected_ok"]), str(result["booted"]), "equal"],
        ["failed", str(result["plugs"] - result["expected_ok"]), str(result["failed"]), "equal"],
        ["records lost", "0", str(result["lost"]), "0"],
        ["records duplicated", "0", str(result["duplicated"]), "0"],
        ["records wrong (outcome/reason)", "0", str(result["wrong"]), "0"],
        ["devices never finished", "0", str(result["unfinished"]), "0"],
        ["records of unknown devices", "0", str(result["unexpected_records"]), "0"],
        ["summary devices / failed", "", f"{summary.get('devices')} / {summary.get('failed')}",
         "= records"],
        ["exit status after SIGTERM", "1 (some failed)", str(result["exit_code"]), "1"],
    ]
    start, warm, end = result["start"], result["warm"], result["end"]
    for key, label in (("fds", "open fds"), ("threads", "threads"), ("rss_kib", "RSS KiB")):
        rows.append([f"{label} start / warm / end", "",
                     f"{start[key]} / {warm[key]} / {end[key]}", "flat"])
    rows.append(["RSS growth per 10,000 devices", "", f"{result['rss_growth_kib_per_10k']} KiB",
                 "< 5,000 KiB"])
    print_table(
        f"Simulated shift: {result['minutes']} min, {result['plugs']} devices "
        "(ledger vs the tool's report)",
        ["", "ledger", "report / tool", "target"],
        rows,
    )
    print("by scenario:", json.dumps(result["by_scenario"], sort_keys=True))
    print("failures by reason:", json.dumps(result["failures_by_reason"], sort_keys=True))
    if result["wrong_examples"]:
        print("wrong:", *result["wrong_examples"], sep="\n  ")


if __name__ == "__main__":
    main()
