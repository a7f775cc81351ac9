"""Real line services for the tests: Mosquitto, its subscriber, Prometheus, on loopback.

Each is started by the test as a child process and stopped by its process id
(terminate, then kill after a bounded wait). Nothing listens beyond 127.0.0.1.
"""

from __future__ import annotations

import getpass
import json
import os
import shutil
import signal
import socket
import subprocess
import threading
import time
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

MOSQUITTO = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
MOSQUITTO_SUB = shutil.which("mosquitto_sub")
PROMETHEUS = shutil.which("prometheus")
PROMTOOL = shutil.which("promtool")


def require(tool: str | None, package: str) -> str:
    if tool is None or not os.path.exists(tool):
        pytest.skip(f"{package} is not installed (Debian package {package})")
    return tool


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def wait_for_port(
    port: int, process: subprocess.Popen[Any], what: str, timeout: float = 15
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise AssertionError(f"{what} exited with {process.returncode} before listening")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
        except OSError:
            time.sleep(0.05)
    raise AssertionError(f"{what} did not listen on 127.0.0.1:{port} within {timeout} s")


def stop(process: subprocess.Popen[Any] | None, sig: int = signal.SIGTERM) -> None:
    """Stop one child by its pid: *sig*, then SIGKILL after 10 s."""
    if process is None or process.poll() is not None:
        return
    os.kill(process.pid, sig)
    try:
        process.wait(10)
    except subprocess.TimeoutExpired:
        os.kill(process.pid, signal.SIGKILL)
        process.wait(10)


class Mosquitto:
    """A broker on 127.0.0.1 with persistence (sessions survive a restart)."""

    def __init__(
        self, workdir: Path, *, extra_config: str = "", persistence: bool = True
    ) -> None:
        self.exe = require(MOSQUITTO, "mosquitto")
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "mosquitto.conf"
        saved = (
            f"persistence true\npersistence_location {workdir}/\nautosave_interval 1\n"
            if persistence
            else ""
        )
        self.config.write_text(
            f"listener {self.port} 127.0.0.1\n"
            + saved
            # Run as root (CI), mosquitto would switch to its own user and lose the test dir.
            + f"user {getpass.getuser()}\n"
            + f"log_dest file {workdir}/mosquitto.log\n"
            + (extra_config or "allow_anonymous true\n")
        )
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"mqtt://127.0.0.1:{self.port}"

    def start(self) -> None:
        self.process = subprocess.Popen(
            [self.exe, "-c", str(self.config)],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, self.process, "mosquitto")

    def stop(self, sig: int = signal.SIGTERM) -> None:
        stop(self.process, sig)
        self.process = None


class Subscriber:
    """``mosquitto_sub`` printing each message as JSON (``-F %j``), read by a thread."""

    def __init__(
        self,
        broker: Mosquitto,
        topic: str,
        *,
        session: str | None = None,
        auth: tuple[str, str] | None = None,
    ) -> None:
        self.exe = require(MOSQUITTO_SUB, "mosquitto-clients")
        self.broker = broker
        self.auth = auth
        self.topic = topic
        self.session = session
        self.messages: list[dict[str, Any]] = []
        self._lock = threading.Lock()
        self.process: subprocess.Popen[str] | None = None

    def start(self) -> None:
        argv = [self.exe, "-h", "127.0.0.1", "-p", str(self.broker.port), "-t", self.topic,
                "-q", "1", "-F", "%j"]
        if self.session is not None:  # a persistent session: the broker queues while we are away
            argv += ["-c", "-i", self.session]
        if self.auth is not None:
            argv += ["-u", self.auth[0], "-P", self.auth[1]]
        process = subprocess.Popen(argv, stdout=subprocess.PIPE, text=True, bufsize=1)
        self.process = process
        threading.Thread(target=self._read, args=(process,), daemon=True).start()

    def _read(self, process: subprocess.Popen[str]) -> None:
        assert process.stdout is not None
        for line in process.stdout:
            message = json.loads(line)
            raw = message.get("payload")
            message["data"] = json.loads(raw) if raw else None
            with self._lock:
                self.messages.append(message)

    def snapshot(self, suffix: str | None = None) -> list[dict[str, Any]]:
        with self._lock:
            messages = list(self.messages)
        if suffix is None:
            return messages
        return [m for m in messages if m["topic"].endswith(suffix)]

    def wait_for(
        self, predicate: Callable[[list[dict[str, Any]]], bool], timeout: float = 30
    ) -> list[dict[str, Any]]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            messages = self.snapshot()
            if predicate(messages):
                return messages
            time.sleep(0.05)
        raise AssertionError(f"timed out waiting for messages; got {len(self.snapshot())}")

    def stop(self) -> None:
        stop(self.process)
        self.process = None


class Prometheus:
    """A Prometheus server scraping one target every second."""

    def __init__(self, workdir: Path, target: str) -> None:
        self.exe = require(PROMETHEUS, "prometheus")
        self.workdir = workdir
        self.port = free_port()
        self.config = workdir / "prometheus.yml"
        self.config.write_text(
            "global:\n  scrape_interval: 1s\n  evaluation_interval: 1s\n"
            "scrape_configs:\n  - job_name: station\n"
            f"    static_configs:\n      - targets: ['{target}']\n"
        )
        self.process: subprocess.Popen[bytes] | None = None

    def start(self) -> None:
        with open(self.workdir / "prometheus.log", "wb") as log:
            self.process = subprocess.Popen(
                [self.exe, f"--config.file={self.config}",
                 f"--storage.tsdb.path={self.workdir / 'data'}",
                 f"--web.listen-address=127.0.0.1:{self.port}"],
                stdout=subprocess.DEVNULL, stderr=log,
            )
        wait_for_port(self.port, self.process, "prometheus", timeout=60)
        deadline = time.monotonic() + 60
        while True:  # listening comes before the storage is ready (503 until then)
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/-/ready", timeout=5):
                    return
            except OSError:
                assert time.monotonic() < deadline, "prometheus never became ready"
                time.sleep(0.2)

    def query(self, expression: str) -> list[dict[str, Any]]:
        url = (f"http://127.0.0.1:{self.port}/api/v1/query?"
               + urllib.parse.urlencode({"query": expression}))
        with urllib.request.urlopen(url, timeout=10) as response:
            body = json.load(response)
        assert body["status"] == "success", body
        result: list[dict[str, Any]] = body["data"]["result"]
        return result

    def stop(self) -> None:
        stop(self.process)
        self.process = None


def make_certificates(directory: Path) -> tuple[Path, Path, Path]:
    """A private CA and a broker certificate for 127.0.0.1 (openssl)."""
    openssl = require(shutil.which("openssl"), "openssl")

    def run(*args: str) -> None:
        subprocess.run([openssl, *args], check=True, capture_output=True, cwd=directory)

    run("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", "-subj", "/CN=line CA",
        "-keyout", "ca.key", "-out", "ca.crt")
    run("req", "-newkey", "rsa:2048", "-nodes", "-subj", "/CN=127.0.0.1",
        "-keyout", "broker.key", "-out", "broker.csr")
    (directory / "san.cnf").write_text("subjectAltName=IP:127.0.0.1\n")
    run("x509", "-req", "-in", "broker.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
        "-CAcreateserial", "-days", "2", "-extfile", "san.cnf", "-out", "broker.crt")
    return directory / "ca.crt", directory / "broker.crt", directory / "broker.key"
