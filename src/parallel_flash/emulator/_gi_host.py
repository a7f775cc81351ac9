"""The umockdev host: a process that emulates a line of USB devices.

Run by :class:`~parallel_flash.emulator.EmulatedLine` as::

    LD_PRELOAD=libumockdev-preload.so.0 PYTHONPATH=<src> /usr/bin/python3 \\
        -m parallel_flash.emulator._gi_host '<config json>'

Why its own process, under Debian's python3: umockdev's Python API is GObject
introspection (``python3-gi`` + ``gir1.2-umockdev-1.0``), which Debian ships
for its own interpreter only; and a testbed only delivers hotplug uevents
when the process that owns it runs under the preload too. Keeping the
emulator out of the process that drives libusb also keeps it off that
process's GIL, so timings mean something.

Imports: the parent puts the directory holding the ``parallel_flash``
package on PYTHONPATH (so this module loads), and passes the directories of
the project's pure-Python dependencies (construct) in
``PARALLEL_FLASH_EMULATOR_PATH``; they are *appended* to sys.path so Debian's
own packages (gi) keep precedence. That works because the dependencies the
device model needs are pure Python and both interpreters are CPython 3.11
(a different minor version is reported as a warning, not refused).

Threads: umockdev answers ioctls in its worker thread (:mod:`.ioctl`); this
module's main thread runs a GLib main loop that changes the testbed (plug,
unplug, uevents) and answers the control channel (:mod:`.control`), read by
a small stdin thread. Both sides hold :attr:`Usbfs.lock` while they touch
devices. The process ends on ``shutdown``, stdin EOF, SIGTERM, or when its
parent goes away; SIGINT is ignored (Ctrl-C belongs to the command under
test; the parent stops this process).
"""

from __future__ import annotations

import json
import logging
import os
import signal
import sys
import threading
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

# Stdlib-only siblings; the device model (construct) and gi come after _bootstrap().
from . import descriptors as d
from .control import split_faults
from .ports import HUB_PORTS, ROOT_PORTS, PortPath, default_port

logger = logging.getLogger("parallel_flash.emulator.host")

#: Exit status when a Debian package is missing (the error event names it).
EXIT_MISSING = 3


def _emit(message: dict[str, Any]) -> None:
    data = json.dumps(message, separators=(",", ":")) + "\n"
    with _STDOUT_LOCK:
        sys.stdout.write(data)
        sys.stdout.flush()


_STDOUT_LOCK = threading.Lock()


def _bootstrap() -> Any:
    """Make the project's dependencies importable, then import gi + UMockdev."""
    for entry in filter(None, os.environ.get("PARALLEL_FLASH_EMULATOR_PATH", "").split(os.pathsep)):
        if entry not in sys.path:
            sys.path.append(entry)
    _measure_coverage()
    try:
        import gi
    except ImportError:
        _fail("python3-gi is not installed for " + sys.executable, "python3-gi")
    try:
        gi.require_version("UMockdev", "1.0")
        from gi.repository import UMockdev  # noqa: F401
    except (ImportError, ValueError):
        _fail("the UMockdev GObject introspection data is missing", "gir1.2-umockdev-1.0")
    from gi.repository import GLib

    return GLib


def _measure_coverage() -> None:
    """Under ``run.sh coverage``, measure this process too.

    coverage.py starts itself in Python subprocesses through a .pth file in
    the project's site-packages; this interpreter is Debian's, whose site
    path does not hold it, so it is started here once that directory is on
    sys.path (the modules imported before this point miss their import lines).
    """
    wanted = ("COVERAGE_PROCESS_CONFIG", "COVERAGE_PROCESS_START")
    if not any(os.environ.get(name) for name in wanted):
        return
    try:
        import coverage
    except ImportError:
        return
    coverage.process_startup()


def _fail(message: str, package: str | None = None) -> None:
    _emit({"event": "error", "message": message, "package": package})
    sys.exit(EXIT_MISSING if package else 1)


@dataclass(slots=True)
class _PortRecord:
    """Everything that happened on one port."""

    port: PortPath
    device: Any = None  # EmulatedDevice currently plugged, or None
    #: Flashing-mode devices plugged here, oldest first.
    history: list[Any] = field(default_factory=list)
    flags: frozenset[str] = frozenset()
    state: str = "empty"  # flashing | booted-image | empty
    plugs: int = 0
    #: Which device model plugs in here (protocol.models.MODEL_KINDS).
    kind: str = "simpleio"


class Host:
    """The testbed, its devices and the control channel (main thread)."""

    def __init__(self, config: dict[str, Any], glib: Any) -> None:
        from gi.repository import UMockdev

        from ..protocol.models import build_model, parse_faults
        from .devio import Client, EmulatedDevice, LinkThrottle, Usbfs, UsbfsMemory
        from .ioctl import UsbdevfsHandler

        self._glib = glib
        self._build_model = build_model
        self._parse_faults = parse_faults
        self._LinkThrottle = LinkThrottle
        self._EmulatedDevice = EmulatedDevice
        self._Client = Client
        self.config = config
        self.vid = int(config.get("vid", d.MICROSOFT_VID))
        self.pid = int(config.get("pid", d.FLASHING_PID))
        self.booted_pid = int(config.get("booted_pid", d.BOOTED_PID))
        self.link_rate = config.get("link_rate")  # bytes/s or None
        self.bus_rate = config.get("bus_rate")
        self.leave_delay = float(config.get("leave_delay", 0.2))
        self.reappear_delay = config.get("reappear_delay", 0.5)  # None = stay away
        self.record_transcript = bool(config.get("record_transcript", True))
        self.verify_data = bool(config.get("verify_data", True))

        self.testbed = UMockdev.Testbed.new()
        self.root = self.testbed.get_root_dir()
        self.sys_dir = self.testbed.get_sys_dir()
        self.usbfs = Usbfs(UsbfsMemory(int(config.get("usbfs_memory_mb", 16))), self)
        self.handler = UsbdevfsHandler(self.usbfs)
        self._write_usbfs_memory_mb(int(config.get("usbfs_memory_mb", 16)))

        self.ports: dict[str, _PortRecord] = {}
        self._hubs: dict[str, Any] = {}
        self._devnums: dict[int, set[int]] = {}
        self._next_devnum: dict[int, int] = {}
        self._bus_links: dict[int, Any] = {}
        self._default_index = 0
        self.loop = glib.MainLoop()

    # -- testbed -----------------------------------------------------------------

    def _write_usbfs_memory_mb(self, value: int) -> None:
        """Fake /sys/module/usbcore/parameters/usbfs_memory_mb, which the transport reads."""
        directory = os.path.join(self.sys_dir, "module", "usbcore", "parameters")
        os.makedirs(directory, exist_ok=True)
        with open(os.path.join(directory, "usbfs_memory_mb"), "w", encoding="ascii") as f:
            f.write(f"{value}\n")

    def _alloc_devnum(self, bus: int) -> int:
        used = self._devnums.setdefault(bus, {1})
        start = self._next_devnum.get(bus, 2)
        for step in range(126):
            candidate = (start - 2 + step) % 126 + 2
            if candidate not in used:
                used.add(candidate)
                self._next_devnum[bus] = candidate + 1
                return candidate
        raise RuntimeError(f"bus {bus} has no free device address left (127 devices)")

    def _sysfs_record(
        self, syspath: str, devnum: int, bus: int, identity: Any, devpath: str
    ) -> str:
        blob = d.device_descriptor(identity) + d.configuration_descriptor(identity)
        hub = bool(identity.hub_ports)
        lines = [
            f"P: {syspath}",
            f"N: bus/usb/{bus:03d}/{devnum:03d}",
            "E: SUBSYSTEM=usb",
            "E: DEVTYPE=usb_device",
            "E: DRIVER=usb",
            f"E: PRODUCT={identity.vid:x}/{identity.pid:x}/{identity.bcd_device:x}",
            f"E: TYPE={9 if hub else 0}/0/{1 if hub else 0}",
            f"E: BUSNUM={bus:03d}",
            f"E: DEVNUM={devnum:03d}",
            f"E: DEVNAME=/dev/bus/usb/{bus:03d}/{devnum:03d}",
            f"A: busnum={bus}\\n",
            f"A: devnum={devnum}\\n",
            f"A: devpath={devpath}\\n",
            "A: speed=480\\n",
            "A: version= 2.00\\n",
            "A: bConfigurationValue=1\\n",
            "A: bNumConfigurations=1\\n",
            "A: bNumInterfaces= 1\\n",
            f"A: bDeviceClass={9 if hub else 0:02x}\\n",
            "A: bMaxPacketSize0=64\\n",
            f"A: idVendor={identity.vid:04x}\\n",
            f"A: idProduct={identity.pid:04x}\\n",
            f"A: bcdDevice={identity.bcd_device:04x}\\n",
            f"A: manufacturer={identity.manufacturer}\\n",
            f"A: product={identity.product}\\n",
            f"A: maxchild={identity.hub_ports}\\n",
            f"H: descriptors={blob.hex().upper()}",
        ]
        if identity.serial:
            lines.append(f"A: serial={identity.serial}\\n")
        return "\n".join(lines) + "\n"

    def _add_to_testbed(self, device: Any, syspath: str, devpath: str) -> None:
        # The ioctl socket must exist before the node appears (and the add
        # uevent goes out), or a fast client's open() races it.
        self.testbed.attach_ioctl(device.devnode, self.handler)
        with self.usbfs.lock:
            self.usbfs.attach(device)
        record = self._sysfs_record(
            syspath, device.devnum, device.port.bus, device.identity, devpath
        )
        self.testbed.add_from_string(record)

    def _ensure_hubs(self, port: PortPath) -> None:
        chain: list[Any] = []
        parent = port.parent
        while parent is not None:
            chain.append(parent)
            parent = parent.parent
        root_key = f"usb{port.bus}"
        needed: list[tuple[str, str, Any, int, str]] = []
        if root_key not in self._hubs:
            needed.append(
                (root_key, f"/devices/usb{port.bus}", PortPath(port.bus, ()), ROOT_PORTS, "0")
            )
        for hub in reversed(chain):
            key = str(hub)
            if key not in self._hubs:
                needed.append((key, hub.sysfs_path(), hub, HUB_PORTS, hub.devpath))
        for key, syspath, hub_port, ports, devpath in needed:
            identity = d.DeviceIdentity(
                vid=d.HUB_VID,
                pid=d.HUB_PID,
                manufacturer="Linux Foundation",
                product="2.0 hub (emulated)",
                hub_ports=ports,
                bulk_endpoints=False,
            )
            devnum = 1 if not hub_port.ports else self._alloc_devnum(port.bus)
            self._devnums.setdefault(port.bus, {1})
            device = self._EmulatedDevice(
                port=hub_port, devnum=devnum, identity=identity, model=None, usbfs=self.usbfs
            )
            self._add_to_testbed(device, syspath, devpath)
            self._hubs[key] = device

    # -- plugging ------------------------------------------------------------------

    def _next_free_port(self) -> PortPath:
        while True:
            port = default_port(self._default_index)
            self._default_index += 1
            record = self.ports.get(str(port))
            if record is None or record.device is None:
                return port

    def plug(self, spec: dict[str, Any]) -> str:
        port = PortPath.parse(spec["port"]) if spec.get("port") else self._next_free_port()
        key = str(port)
        if key in self._hubs:
            raise ValueError(f"port {key} is a hub of the emulated line")
        record = self.ports.get(key)
        if record is not None and record.device is not None:
            raise ValueError(f"port {key} is already in use ({record.state})")
        model_faults, flags = split_faults(spec.get("faults") or "")
        kind = str(spec.get("kind") or "simpleio")
        faults = self._parse_faults(kind, model_faults)
        unique_id = uuid.UUID(str(spec["unique_id"])) if spec.get("unique_id") else uuid.uuid4()
        prefix = {"simpleio": "Contoso", "lumia": "Lumia"}.get(kind, "UFP")
        model = self._build_model(
            kind,
            name=spec.get("name") or f"{prefix}.Emulated.{key}",
            unique_id=unique_id,
            ram_limit=int(spec.get("ram_limit", 1 << 32)),
            faults=faults,
            record_transcript=self.record_transcript,
            count_only=not self.verify_data,
        )
        if record is None:
            record = self.ports[key] = _PortRecord(port)
        record.flags = flags
        record.kind = kind
        rate = spec.get("link_rate_mbps")
        self._plug_device(record, model, link_rate=float(rate) * 1e6 if rate else None)
        return key

    def _plug_device(
        self,
        record: _PortRecord,
        model: Any,
        ids: tuple[int, int] | None = None,
        *,
        link_rate: float | None = None,
    ) -> None:
        """Plug a flashing-mode device (``model``) or, with None, a booted image.

        ``ids`` (booted image only) are the IDs it comes back with; a Lumia
        comes back in Label mode, the rest as the emulator's booted image.
        ``link_rate`` (bytes/s) overrides the line's for this device.
        """
        port = record.port
        self._ensure_hubs(port)
        if model is not None:
            vid, pid = getattr(model, "ids", (self.vid, self.pid))
            identity = d.DeviceIdentity(vid=vid, pid=pid, serial=model.unique_id.hex.upper())
        else:
            vid, pid = ids or (self.vid, self.booted_pid)
            identity = d.DeviceIdentity(
                vid=vid,
                pid=pid,
                product="Windows Phone (booted image)",
                bulk_endpoints=False,
            )
        rate = link_rate or self.link_rate
        link = self._LinkThrottle(rate) if rate else None
        bus_link = None
        if self.bus_rate:
            bus_link = self._bus_links.setdefault(port.bus, self._LinkThrottle(self.bus_rate))
        device = self._EmulatedDevice(
            port=port,
            devnum=self._alloc_devnum(port.bus),
            identity=identity,
            model=model,
            usbfs=self.usbfs,
            link=link,
            bus_link=bus_link,
        )
        record.device = device
        record.plugs += 1
        record.state = "flashing" if model is not None else "booted-image"
        if model is not None:
            record.history.append(device)
            if "busy" in record.flags:
                # Another program's claim on interface 0.
                device.claimed_by = self._Client(device)
        adding = time.time()
        self._add_to_testbed(device, port.sysfs_path(), port.devpath)
        # The "add" uevent goes out inside add_from_string: between these two.
        plugged_at = time.time()
        if model is not None and "no-access" in record.flags:
            os.chmod(os.path.join(self.root, device.devnode.lstrip("/")), 0)
        logger.info("plugged %s at %s (%s)", identity.product, port, device.devnode)
        _emit(
            {"event": "plugged", "port": str(port), "state": record.state, "devnum": device.devnum,
             "at": plugged_at, "adding": adding}
        )

    def unplug(self, key: str) -> None:
        record = self.ports.get(key)
        if record is None or record.device is None:
            raise ValueError(f"nothing is plugged in at port {key}")
        with self.usbfs.lock:
            self.usbfs.disconnect(record.device, "unplugged")

    def set_fault(self, key: str, text: str) -> None:
        record = self.ports.get(key)
        if record is None or record.device is None or record.device.model is None:
            raise ValueError(f"no flashing-mode device at port {key}")
        model_faults, flags = split_faults(text)
        faults = self._parse_faults(record.kind, model_faults)
        with self.usbfs.lock:
            record.device.model.faults = faults
            record.flags = flags

    # -- events from devio (called with the lock held, any thread) ------------------

    def device_gone(self, device: Any, reason: str) -> None:
        self._glib.idle_add(self._remove_from_testbed, device, reason)

    def device_booted(self, device: Any) -> None:
        delay_ms = max(0, int(self.leave_delay * 1000))
        self._glib.timeout_add(delay_ms, self._leave_flashing_mode, device)

    def _leave_flashing_mode(self, device: Any) -> bool:
        with self.usbfs.lock:
            self.usbfs.disconnect(device, "left flashing mode (booted)")
        return False

    def _remove_from_testbed(self, device: Any, reason: str) -> bool:
        try:
            syspath = "/sys" + device.port.sysfs_path()
            self.testbed.uevent(syspath, "remove")
            self.testbed.remove_device(syspath)
            self.testbed.detach_ioctl(device.devnode)
            self._devnums.get(device.port.bus, set()).discard(device.devnum)
            key = str(device.port)
            record = self.ports.get(key)
            if record is not None and record.device is device:
                record.device = None
                record.state = "empty"
                booted = device.model is not None and device.model.booted
                _emit({"event": "unplugged", "port": key, "reason": reason, "booted": booted})
                stays_away = booted and getattr(device.model, "stays_away", False)
                if booted and self.reappear_delay is not None and not stays_away:
                    delay_ms = max(0, int(float(self.reappear_delay) * 1000))
                    self._glib.timeout_add(delay_ms, self._reappear, record, device)
            logger.info("unplugged %s (%s)", device.port, reason)
        except Exception:
            logger.exception("removing %s from the testbed failed", device.port)
        return False

    def _reappear(self, record: _PortRecord, previous: Any) -> bool:
        # A phone comes back only to a port nobody has plugged another phone
        # into since it left: once the operator swapped, the first phone is gone
        # (a stale timer must not bring it back after the second one leaves).
        if record.device is not None or not record.history or record.history[-1] is not previous:
            return False
        try:
            if "reappear-in-flashing" in record.flags:
                old = previous.model
                model = self._build_model(
                    record.kind,
                    name=old.friendly_name,
                    unique_id=old.unique_id,
                    ram_limit=old.ram_limit,
                    faults=old.faults,
                    record_transcript=self.record_transcript,
                    count_only=not self.verify_data,
                )
                # The failed boot happens once; a second boot succeeds.
                record.flags = record.flags - {"reappear-in-flashing"}
                self._plug_device(record, model)
            else:
                self._plug_device(record, None, getattr(previous.model, "returns_as", None))
        except Exception:
            logger.exception("re-plugging %s failed", record.port)
        return False

    # -- queries -------------------------------------------------------------------

    def summaries(self, transcript: bool) -> dict[str, Any]:
        result: dict[str, Any] = {}
        with self.usbfs.lock:
            for key, record in sorted(self.ports.items(), key=lambda item: item[1].port):
                if not record.history:
                    continue
                entries = [self._summary(device, transcript) for device in record.history]
                latest = dict(entries[-1])
                latest.update(
                    port=key,
                    state=record.state,
                    plugs=record.plugs,
                    present=record.device is not None,
                    earlier=entries[:-1],
                )
                result[key] = latest
        return result

    def port_summary(self, key: str) -> dict[str, Any] | None:
        """The latest flashing-mode device of one port (None if none was plugged there)."""
        with self.usbfs.lock:
            record = self.ports.get(key)
            if record is None or not record.history:
                return None
            latest = self._summary(record.history[-1], False)
            latest.update(
                port=key, state=record.state, plugs=record.plugs,
                present=record.device is not None,
            )
            return latest

    @staticmethod
    def _summary(device: Any, transcript: bool) -> dict[str, Any]:
        info: dict[str, Any] = device.summary()
        if transcript and device.model is not None:
            info["transcript"] = [list(entry) for entry in device.model.transcript]
        return info

    def stats(self) -> dict[str, Any]:
        self.handler.sweep_closed_clients()
        with self.usbfs.lock:
            info = self.usbfs.stats()
            info["ioctls"] = self.handler.ioctl_stats()
            info["devices"] = sum(1 for r in self.ports.values() if r.device is not None)
        return info

    # -- control channel -----------------------------------------------------------

    def handle(self, message: dict[str, Any]) -> None:
        request_id = message.get("id")
        command = message.get("cmd")
        try:
            if command == "plug":
                result: Any = self.plug(message.get("spec") or {})
            elif command == "unplug":
                self.unplug(str(message["port"]))
                result = None
            elif command == "set_fault":
                self.set_fault(str(message["port"]), str(message.get("faults", "")))
                result = None
            elif command == "summaries":
                result = self.summaries(bool(message.get("transcript", False)))
            elif command == "port_summary":
                result = self.port_summary(str(message["port"]))
            elif command == "stats":
                result = self.stats()
            elif command == "ping":
                result = "pong"
            elif command == "shutdown":
                result = None
                self.loop.quit()
            else:
                raise ValueError(f"unknown command {command!r}")
        except (ValueError, KeyError) as exc:
            _emit({"id": request_id, "ok": False, "error": str(exc)})
            return
        except Exception as exc:
            logger.exception("command %r failed", command)
            _emit({"id": request_id, "ok": False, "error": f"{type(exc).__name__}: {exc}"})
            return
        _emit({"id": request_id, "ok": True, "result": result})

    def _on_line(self, line: str) -> bool:
        try:
            message = json.loads(line)
            if not isinstance(message, dict):
                raise ValueError("not an object")
        except ValueError:
            _emit({"id": None, "ok": False, "error": f"bad control line: {line[:80]!r}"})
            return False
        self.handle(message)
        return False

    def _read_stdin(self) -> None:
        for line in sys.stdin:
            if line.strip():
                self._glib.idle_add(self._on_line, line)
        # EOF: the parent is gone or done with us.
        self._glib.idle_add(self._quit)

    def _quit(self) -> bool:
        self.loop.quit()
        return False

    def _sweep(self) -> bool:
        self.handler.sweep_closed_clients()
        return True

    def _watch_parent(self, parent: int) -> bool:
        if os.getppid() != parent:
            logger.warning("parent process went away; shutting down")
            self.loop.quit()
            return False
        return True

    def run(self, specs: list[dict[str, Any]]) -> None:
        warnings = []
        parent_version = os.environ.get("PARALLEL_FLASH_PARENT_PYTHON")
        mine = f"{sys.version_info.major}.{sys.version_info.minor}"
        if parent_version and parent_version != mine:
            warnings.append(
                f"emulator runs Python {mine}, parallel-flash runs {parent_version}: "
                "the shared pure-Python dependencies must support both"
            )
        for spec in specs:
            self.plug(spec)
        _emit(
            {
                "event": "ready",
                "root": self.root,
                "pid": os.getpid(),
                "python": sys.version.split()[0],
                "ports": [key for key, record in self.ports.items() if record.device is not None],
                "warnings": warnings,
            }
        )
        threading.Thread(target=self._read_stdin, name="control-stdin", daemon=True).start()
        self._glib.timeout_add(500, self._watch_parent, os.getppid())
        self._glib.timeout_add(200, self._sweep)
        self._glib.unix_signal_add(self._glib.PRIORITY_DEFAULT, signal.SIGTERM, self._quit)
        self.loop.run()

    def close(self) -> None:
        # Dropping the last reference finalizes the testbed, which removes its directory.
        self.handler.release_all()
        with self.usbfs.lock:
            for record in self.ports.values():
                if record.device is not None and not record.device.gone:
                    self.usbfs.disconnect(record.device, "emulator shut down")
        del self.testbed


def main(argv: list[str]) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    config = json.loads(argv[1]) if len(argv) > 1 else {}
    logging.basicConfig(
        level=int(config.get("log_level", logging.WARNING)),
        format="parallel-flash emulator: %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )
    glib = _bootstrap()
    try:
        host = Host(config, glib)
    except ImportError as exc:
        _fail(f"cannot import the device model under {sys.executable}: {exc}")
        return 1
    try:
        host.run(list(config.get("devices", [])))
    except ValueError as exc:
        _fail(str(exc))
    finally:
        host.close()
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
