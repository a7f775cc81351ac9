"""EmulatedLine: a line of emulated USB devices for the process that drives libusb.

The devices live in a separate process (:mod:`._gi_host`) that owns a
umockdev testbed. Any command started with :meth:`EmulatedLine.environ`
(``LD_PRELOAD`` of umockdev's preload library plus ``UMOCKDEV_DIR``) sees
them as real USB devices through unmodified libusb. This module is stdlib
only and never imports ``gi``.
"""

from __future__ import annotations

import contextlib
import ctypes.util
import functools
import itertools
import json
import logging
import os
import queue
import shutil
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from ..errors import EmulatorError
from .control import DeviceSpec, decode, encode, split_faults
from .descriptors import FLASHING_PID, MICROSOFT_VID

__all__ = (
    "DEFAULT_GI_PYTHON",
    "PRELOAD_LIBRARY",
    "EmulatedLine",
    "check_environment",
)

logger = logging.getLogger(__name__)

#: umockdev's preload library (Debian package libumockdev0, pulled in by umockdev).
PRELOAD_LIBRARY = "libumockdev-preload.so.0"
#: The interpreter that has python3-gi (Debian's); override with PARALLEL_FLASH_GI_PYTHON.
DEFAULT_GI_PYTHON = "/usr/bin/python3"
#: Time allowed for the host to start and plug the initial devices.
_START_TIMEOUT = 30.0
#: Time allowed for one control command.
_COMMAND_TIMEOUT = 20.0
#: Time the host gets to exit after ``shutdown`` before it is killed.
_STOP_TIMEOUT = 5.0
_SOCKET_ENV = "PARALLEL_FLASH_EMULATOR_SOCKET"


def _gi_python() -> str:
    return os.environ.get("PARALLEL_FLASH_GI_PYTHON", DEFAULT_GI_PYTHON)


def _find_preload() -> str | None:
    for directory in ("/usr/lib/x86_64-linux-gnu", "/usr/lib64", "/usr/lib", "/usr/local/lib"):
        if os.path.exists(os.path.join(directory, PRELOAD_LIBRARY)):
            return os.path.join(directory, PRELOAD_LIBRARY)
    found = ctypes.util.find_library("umockdev-preload")
    return found


def check_environment() -> list[str]:
    """What is missing to run the emulator, one line each naming the Debian package.

    Empty when everything is there. Checks the preload library, libusb, the
    gi interpreter, python3-gi and the UMockdev typelib (the last two by
    running the interpreter once).
    """
    problems: list[str] = []
    if _find_preload() is None:
        problems.append(
            f"{PRELOAD_LIBRARY} not found: install the Debian package umockdev "
            "(sudo apt-get install umockdev)"
        )
    if ctypes.util.find_library("usb-1.0") is None:
        problems.append(
            "libusb-1.0 not found: install the Debian package libusb-1.0-0 "
            "(sudo apt-get install libusb-1.0-0)"
        )
    python = _gi_python()
    if not os.path.exists(python):
        problems.append(f"{python} not found: install the Debian package python3")
        return problems
    problems.extend(_probe_gi(python))
    return problems


@functools.cache
def _probe_gi(python: str) -> tuple[str, ...]:
    """Run ``python`` once to see whether it imports gi and UMockdev (cached per path)."""
    probe = (
        "import sys\n"
        "try:\n import gi\nexcept ImportError:\n print('python3-gi'); sys.exit()\n"
        "try:\n gi.require_version('UMockdev', '1.0')\n from gi.repository import UMockdev\n"
        "except (ImportError, ValueError):\n print('gir1.2-umockdev-1.0')\n"
    )
    try:
        answer = subprocess.run(
            [python, "-c", probe], capture_output=True, text=True, timeout=30, check=False
        ).stdout.strip()
    except (OSError, subprocess.TimeoutExpired) as exc:
        return (f"cannot run {python}: {exc}",)
    if answer:
        return (
            f"{python} cannot import {'gi' if answer == 'python3-gi' else 'UMockdev'}: "
            f"install the Debian package {answer} (sudo apt-get install {answer})",
        )
    return ()


def _import_paths() -> tuple[str, list[str]]:
    """(directory holding parallel_flash, directories of its pure-Python dependencies)."""
    import importlib.util

    package_dir = Path(__file__).resolve().parents[1]
    extra: list[str] = []
    for name in ("construct",):
        spec = importlib.util.find_spec(name)
        if spec is not None and spec.submodule_search_locations:
            location = str(Path(next(iter(spec.submodule_search_locations))).parent)
            if location not in extra:
                extra.append(location)
    return str(package_dir.parent), extra


class EmulatedLine:
    """A line of emulated devices behind umockdev; use as a context manager.

    :param devices: how many default devices to plug, or one
        :class:`DeviceSpec` per device.
    :param link_rate_mbps: throttle each device's bulk OUT to this many MB/s
        (10**6 bytes/s); None = as fast as the emulator goes.
    :param bus_rate_mbps: a ceiling shared by all devices on one bus.
    :param usbfs_memory_mb: the emulated kernel's usbfs memory cap (0 = none),
        also written to the testbed's /sys/module/usbcore/parameters/usbfs_memory_mb.
    :param faults: fault spec by port path (``"1-1.3"``) or by 0-based index
        into ``devices``; added to the spec's own faults.
    :param vid: idVendor of the devices in flashing mode; :param pid: idProduct.
    :param booted_pid: idProduct after a successful boot.
    :param leave_delay: seconds from the status read until the device leaves.
    :param reappear_delay: seconds until it re-enumerates on the same port
        (as the booted image); None = it stays away.
    :param record_transcript: keep each model's transfer transcript.
    :param verify_data: hash and check what each device receives (sha256,
        SDI/WIM checks, transcript). False makes the models count bytes only
        and lets the emulator skip reading image data out of the client:
        several times the throughput, for benchmarks of the host side.
    :param log_level: logging level of the host process (stderr).
    """

    def __init__(
        self,
        devices: int | Sequence[DeviceSpec] = 1,
        *,
        link_rate_mbps: float | None = None,
        bus_rate_mbps: float | None = None,
        usbfs_memory_mb: int = 16,
        faults: Mapping[str | int, str] | None = None,
        vid: int = MICROSOFT_VID,
        pid: int = FLASHING_PID,
        booted_pid: int = 0x0A00,
        leave_delay: float = 0.2,
        reappear_delay: float | None = 0.5,
        record_transcript: bool = True,
        verify_data: bool = True,
        log_level: int = logging.WARNING,
    ) -> None:
        specs = (
            [DeviceSpec() for _ in range(devices)] if isinstance(devices, int) else list(devices)
        )
        for index_or_port, text in (faults or {}).items():
            self._apply_fault(specs, index_or_port, text)
        from .ports import default_port

        for index, spec in enumerate(specs):
            _validate_faults(spec.faults, f"port {spec.port or default_port(index)}", spec.kind)
        for rate, name in ((link_rate_mbps, "link rate"), (bus_rate_mbps, "bus rate")):
            if rate is not None and rate <= 0:
                raise ValueError(f"{name} must be > 0 MB/s, not {rate}")
        if usbfs_memory_mb < 0:
            raise ValueError(f"usbfs_memory_mb must be >= 0, not {usbfs_memory_mb}")
        self._specs = specs
        self._config: dict[str, Any] = {
            "usbfs_memory_mb": usbfs_memory_mb,
            "link_rate": None if link_rate_mbps is None else link_rate_mbps * 1e6,
            "bus_rate": None if bus_rate_mbps is None else bus_rate_mbps * 1e6,
            "vid": vid,
            "pid": pid,
            "booted_pid": booted_pid,
            "leave_delay": leave_delay,
            "reappear_delay": reappear_delay,
            "record_transcript": record_transcript,
            "verify_data": verify_data,
            "log_level": log_level,
        }
        self.usbfs_memory_mb = usbfs_memory_mb
        self._process: subprocess.Popen[bytes] | None = None
        self._root: str | None = None
        self._ports: list[str] = []
        self._ids = itertools.count(1)
        self._replies: dict[int, queue.Queue[dict[str, Any]]] = {}
        self._replies_lock = threading.Lock()
        self._write_lock = threading.Lock()
        self._events: queue.Queue[dict[str, Any]] = queue.Queue()
        self._event_log: list[dict[str, Any]] = []
        self._reader: threading.Thread | None = None
        self._server: _ControlServer | None = None
        self.warnings: list[str] = []

    @staticmethod
    def _apply_fault(specs: list[DeviceSpec], index_or_port: str | int, text: str) -> None:
        if isinstance(index_or_port, int):
            if not 0 <= index_or_port < len(specs):
                raise ValueError(f"fault for device {index_or_port}: the line has {len(specs)}")
            spec = specs[index_or_port]
        else:
            from .ports import PortPath, default_port

            wanted = str(PortPath.parse(index_or_port))
            found = next(
                (
                    s
                    for i, s in enumerate(specs)
                    if (s.port and str(PortPath.parse(s.port)) == wanted)
                    or (not s.port and str(default_port(i)) == wanted)
                ),
                None,
            )
            if found is None:
                raise ValueError(f"fault for port {wanted}: no device of the line sits there")
            spec = found
        spec.faults = ",".join(filter(None, (str(spec.faults), text)))

    # -- lifecycle ---------------------------------------------------------------------

    def __enter__(self) -> EmulatedLine:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def start(self) -> None:
        """Start the host process and wait until every initial device is plugged."""
        if self._process is not None:
            raise RuntimeError("EmulatedLine already started")
        problems = check_environment()
        if problems:
            raise EmulatorError(problems[0])
        source_dir, extra = _import_paths()
        config = dict(self._config, devices=[spec.to_wire() for spec in self._specs])
        env = {
            key: value
            for key, value in os.environ.items()
            if not key.startswith(("PYTHON", "UMOCKDEV_", "LD_PRELOAD", "PYENV"))
        }
        env.update(
            LD_PRELOAD=PRELOAD_LIBRARY,
            PYTHONPATH=source_dir,
            PYTHONDONTWRITEBYTECODE="1",
            PARALLEL_FLASH_EMULATOR_PATH=os.pathsep.join(extra),
            PARALLEL_FLASH_PARENT_PYTHON=f"{sys.version_info.major}.{sys.version_info.minor}",
        )
        self._process = subprocess.Popen(
            [_gi_python(), "-m", "parallel_flash.emulator._gi_host", json.dumps(config)],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            env=env,
            # Ctrl-C in a terminal goes to the command under test, not here.
            start_new_session=True,
        )
        self._reader = threading.Thread(target=self._read, name="emulator-reader", daemon=True)
        self._reader.start()
        try:
            ready = self._wait_event("ready", _START_TIMEOUT)
        except BaseException:
            self.close()
            raise
        self._root = str(ready["root"])
        self._ports = list(ready.get("ports", []))
        self.warnings = list(ready.get("warnings", []))
        for warning in self.warnings:
            logger.warning("%s", warning)

    def close(self) -> None:
        """Stop the host (politely, then by force) and remove its testbed."""
        if self._server is not None:
            self._server.close()
            self._server = None
        process = self._process
        if process is None:
            return
        if process.poll() is None:
            try:
                self._send({"cmd": "shutdown"})
                assert process.stdin is not None
                process.stdin.close()
            except (OSError, ValueError):
                pass
            try:
                process.wait(_STOP_TIMEOUT)
            except subprocess.TimeoutExpired:
                logger.warning("emulator did not stop within %.0f s; killing it", _STOP_TIMEOUT)
                process.kill()
                process.wait()
        if process.stdout is not None:
            process.stdout.close()
        if self._root and os.path.isdir(self._root):
            shutil.rmtree(self._root, ignore_errors=True)
        self._process = None

    # -- what a command under the preload needs ------------------------------------------

    @property
    def root(self) -> str:
        if self._root is None:
            raise RuntimeError("EmulatedLine not started")
        return self._root

    @property
    def host_pid(self) -> int:
        """Process id of the emulator process (e.g. to measure its CPU time)."""
        if self._process is None:
            raise RuntimeError("EmulatedLine not started")
        return self._process.pid

    def environ(self) -> dict[str, str]:
        """Variables that make a process see the emulated devices (merge into its env)."""
        preload = os.environ.get("LD_PRELOAD", "")
        env = {
            "LD_PRELOAD": ":".join(filter(None, (PRELOAD_LIBRARY, preload)))
            if PRELOAD_LIBRARY not in preload.split(":")
            else preload,
            "UMOCKDEV_DIR": self.root,
        }
        if self._server is not None:
            env[_SOCKET_ENV] = self._server.path
        return env

    def _command_env(self, env: Mapping[str, str] | None) -> dict[str, str]:
        merged = dict(os.environ if env is None else env)
        merged.update(self.environ())
        return merged

    def popen(self, argv: Sequence[str], **kwargs: Any) -> subprocess.Popen[Any]:
        """Start ``argv`` under the preload; ``env=`` (default os.environ) gets environ() added."""
        kwargs["env"] = self._command_env(kwargs.get("env"))
        return subprocess.Popen(list(argv), **kwargs)

    def run(self, argv: Sequence[str], **kwargs: Any) -> subprocess.CompletedProcess[Any]:
        """Run ``argv`` under the preload to completion (subprocess.run semantics)."""
        kwargs["env"] = self._command_env(kwargs.get("env"))
        return subprocess.run(list(argv), **kwargs)

    # -- control ------------------------------------------------------------------------

    @property
    def ports(self) -> list[str]:
        """Port paths of the devices plugged at start and by :meth:`plug`, in order."""
        return list(self._ports)

    def plug(self, spec: DeviceSpec | None = None) -> str:
        """Plug one more device (hotplug ARRIVED for listeners); returns its port."""
        spec = spec or DeviceSpec()
        _validate_faults(spec.faults, f"device {spec.port or spec.name or ''}".strip())
        port = str(self.command("plug", spec=spec.to_wire()))
        self._ports.append(port)
        return port

    def unplug(self, port: str) -> None:
        """Pull the device out: pending transfers fail (NO_DEVICE), hotplug LEFT fires."""
        self.command("unplug", port=port)

    def set_fault(self, port: str, faults: str) -> None:
        """Replace the faults of the device at ``port`` (takes effect from now on)."""
        _validate_faults(faults, f"port {port}")
        self.command("set_fault", port=port, faults=faults)

    def summaries(self, *, transcript: bool = False) -> dict[str, dict[str, Any]]:
        """What every device received, by port path, in port order.

        Each entry is the latest flashing-mode device plugged at that port:
        its ``DeviceModel.summary()`` (name, unique_id, received_bytes,
        expected_bytes, sha256, booted, disconnected, rejection, status_sent,
        ...), the emulator's counters (control_urbs, out_urbs, out_bytes,
        in_urbs, zlps_from_flag, naks, discarded, vid, pid, devnum,
        gone_reason), and the port's state: ``state`` (flashing /
        booted-image / empty), ``present`` (a device of any kind is plugged
        there now), ``plugs`` (how often a device was plugged there) and
        ``earlier`` (summaries of previous flashing-mode devices on that port).
        With ``transcript=True`` each carries the model's transfer transcript.
        """
        result = self.command("summaries", transcript=transcript)
        assert isinstance(result, dict)
        return result

    def stats(self) -> dict[str, Any]:
        """usbfs memory use/peak/refusals and the number of devices present."""
        result = self.command("stats")
        assert isinstance(result, dict)
        return result

    def events(self) -> list[dict[str, Any]]:
        """Every event the host sent so far (plugged, unplugged), oldest first."""
        self._drain_events()
        return list(self._event_log)

    def events_since(self, index: int) -> tuple[list[dict[str, Any]], int]:
        """Events from position ``index`` on, and the position after them (no full copy)."""
        self._drain_events()
        return self._event_log[index:], len(self._event_log)

    def port_summary(self, port: str) -> dict[str, Any] | None:
        """The latest flashing-mode device at ``port`` (cheap: no history, no transcript)."""
        result = self.command("port_summary", port=port)
        return result if isinstance(result, dict) else None

    def wait_for(
        self, event: str, port: str | None = None, timeout: float = 10.0
    ) -> dict[str, Any]:
        """Wait for a host event (``plugged``/``unplugged``), optionally on one port."""
        deadline = time.monotonic() + timeout
        seen = len(self._event_log)
        while True:
            self._drain_events()
            for message in self._event_log[seen:]:
                if message.get("event") == event and port in (None, message.get("port")):
                    return message
            seen = len(self._event_log)
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmulatorError(
                    f"no {event!r} event{' on ' + port if port else ''} in {timeout} s"
                )
            try:
                self._event_log.append(self._events.get(timeout=remaining))
            except queue.Empty:
                continue

    def command(self, cmd: str, **args: Any) -> Any:
        """Send one control command and return its result; EmulatorError on failure."""
        if self._process is None:
            raise EmulatorError("the emulator is not running")
        request_id = next(self._ids)
        reply_queue: queue.Queue[dict[str, Any]] = queue.Queue(maxsize=1)
        with self._replies_lock:
            self._replies[request_id] = reply_queue
        try:
            self._send({"id": request_id, "cmd": cmd, **args})
            try:
                reply = reply_queue.get(timeout=_COMMAND_TIMEOUT)
            except queue.Empty:
                raise EmulatorError(
                    f"emulator did not answer {cmd!r} within {_COMMAND_TIMEOUT} s"
                ) from None
        finally:
            with self._replies_lock:
                self._replies.pop(request_id, None)
        if reply.get("event") == "exit":
            raise EmulatorError(f"emulator exited while answering {cmd!r}")
        if not reply.get("ok"):
            raise EmulatorError(f"emulator refused {cmd!r}: {reply.get('error')}")
        return reply.get("result")

    def serve(self, path: str | None = None) -> str:
        """Accept the control commands on a unix socket (JSON lines) for scripts.

        The path goes into :meth:`environ` as PARALLEL_FLASH_EMULATOR_SOCKET.
        """
        if self._server is None:
            self._server = _ControlServer(self, path or os.path.join(self.root, "control.sock"))
        return self._server.path

    # -- plumbing -----------------------------------------------------------------------

    def _send(self, message: dict[str, Any]) -> None:
        process = self._process
        if process is None or process.stdin is None:
            raise EmulatorError("the emulator is not running")
        with self._write_lock:
            try:
                process.stdin.write(encode(message))
                process.stdin.flush()
            except (BrokenPipeError, ValueError):
                raise EmulatorError(_exit_message(process)) from None

    def _read(self) -> None:
        process = self._process
        assert process is not None and process.stdout is not None
        stream: IO[bytes] = process.stdout
        for line in stream:
            try:
                message = decode(line)
            except ValueError:
                logger.warning("emulator wrote a bad control line: %r", line[:200])
                continue
            request_id = message.get("id")
            if request_id is not None or "ok" in message:
                with self._replies_lock:
                    target = self._replies.get(request_id) if request_id is not None else None
                if target is not None:
                    target.put(message)
                elif not message.get("ok"):
                    logger.warning("emulator: %s", message.get("error"))
                continue
            self._events.put(message)
        # EOF: wake everyone who waits.
        exit_event = {"event": "exit", "ok": False}
        with self._replies_lock:
            for target in self._replies.values():
                target.put(exit_event)
        self._events.put(exit_event)

    def _drain_events(self) -> None:
        while True:
            try:
                self._event_log.append(self._events.get_nowait())
            except queue.Empty:
                return

    def _wait_event(self, name: str, timeout: float) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while True:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise EmulatorError(f"the emulator did not become ready within {timeout:.0f} s")
            try:
                message = self._events.get(timeout=remaining)
            except queue.Empty:
                continue
            if message.get("event") == name:
                return message
            if message.get("event") == "error":
                package = message.get("package")
                text = str(message.get("message"))
                if package:
                    text += (
                        f": install the Debian package {package} (sudo apt-get install {package})"
                    )
                raise EmulatorError(text)
            if message.get("event") == "exit":
                assert self._process is not None
                raise EmulatorError(_exit_message(self._process))
            self._event_log.append(message)


def _exit_message(process: subprocess.Popen[bytes]) -> str:
    try:
        code = process.wait(2)
    except subprocess.TimeoutExpired:
        code = None
    return f"the emulator process exited unexpectedly (status {code}); its stderr says why"


def _validate_faults(text: Any, where: str, kind: str = "simpleio") -> None:
    """Reject a bad fault spec (or device kind) here, before it reaches the host process."""
    from ..protocol.models import parse_faults

    if not isinstance(text, str):
        return
    model_part, _flags = split_faults(text)
    try:
        parse_faults(kind, model_part)
    except ValueError as exc:
        raise ValueError(f"{where}: bad fault spec {text!r}: {exc}") from None


class _ControlServer:
    """A unix socket that relays JSON-line commands to the host (one thread per client)."""

    def __init__(self, line: EmulatedLine, path: str) -> None:
        self.path = path
        self._line = line
        if os.path.exists(path):
            os.unlink(path)
        self._socket = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self._socket.bind(path)
        self._socket.listen(8)
        self._closed = False
        self._thread = threading.Thread(target=self._accept, name="emulator-control", daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while not self._closed:
            try:
                connection, _ = self._socket.accept()
            except OSError:
                return
            threading.Thread(target=self._serve, args=(connection,), daemon=True).start()

    def _serve(self, connection: socket.socket) -> None:
        with connection, connection.makefile("rwb") as stream:
            for line in stream:
                try:
                    message = decode(line)
                    args = {k: v for k, v in message.items() if k not in ("id", "cmd")}
                    if message.get("cmd") == "shutdown":
                        raise ValueError("shutdown is reserved to the owner of the line")
                    if message.get("cmd") == "plug":
                        result = self._line.plug(DeviceSpec.from_wire(args.get("spec") or {}))
                    else:
                        result = self._line.command(str(message.get("cmd")), **args)
                    reply = {"id": message.get("id"), "ok": True, "result": result}
                except (ValueError, EmulatorError) as exc:
                    reply = {"ok": False, "error": str(exc)}
                stream.write(encode(reply))
                stream.flush()

    def close(self) -> None:
        self._closed = True
        with contextlib.suppress(OSError):
            self._socket.shutdown(socket.SHUT_RDWR)
        self._socket.close()
        if os.path.exists(self.path):
            os.unlink(self.path)
