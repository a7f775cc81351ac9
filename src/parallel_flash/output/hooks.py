"""``--on-result CMD``: what a site does with each result (label printer, MES upload).

CMD runs through ``/bin/sh -c`` once per finished device, with the device's
record as one JSON object on standard input (the report's line plus
``record_id``, ``line`` and ``station``) and a few environment variables for
shell one-liners. Hooks run one at a time, in the order devices finished,
on the publisher's thread (output/publish.py): a slow hook delays the next
hook, never a boot.

A hook is bounded in time: after ``timeout`` seconds its whole process group
is killed. A hook that fails -- cannot start, exits non-zero, is killed -- is
logged with the tail of what it printed and counted in :attr:`ResultHook.failures`
(and the summary's ``hook_failures``); the device's result stays what it was.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import math
import os
import signal
from collections import deque
from typing import Any

from ..errors import InputError

__all__ = ("DEFAULT_HOOK_TIMEOUT", "ResultHook")

logger = logging.getLogger(__name__)

#: Seconds one run of the hook may take before it is killed.
DEFAULT_HOOK_TIMEOUT = 30.0
#: Characters of the hook's output quoted when it fails.
_OUTPUT_TAIL = 300


class ResultHook:
    """Runs one shell command per result; see the module doc."""

    def __init__(self, command: str, *, timeout: float = DEFAULT_HOOK_TIMEOUT) -> None:
        if not command.strip():
            raise InputError("--on-result needs a command, not an empty string")
        if not (math.isfinite(timeout) and timeout > 0):
            raise InputError(
                f"--on-result-timeout must be a positive number of seconds, not {timeout}"
            )
        self.command = command
        self.timeout = timeout
        #: Hook runs that ended in success / failure.
        self.runs = 0
        self.failures = 0
        self._pending: deque[dict[str, Any]] = deque()
        self._running = False
        self._wake: asyncio.Event | None = None

    def submit(self, record: dict[str, Any]) -> None:
        """Queue *record* for the hook (publisher's loop only)."""
        self._pending.append(record)
        if self._wake is not None:
            self._wake.set()

    @property
    def busy(self) -> bool:
        return self._running or bool(self._pending)

    async def run(self) -> None:
        """Run the hook for each submitted record, until cancelled."""
        self._wake = asyncio.Event()
        while True:
            while self._pending:
                record = self._pending[0]
                self._running = True
                try:
                    await self.run_once(record)
                finally:
                    self._running = False
                    self._pending.popleft()
            await self._wake.wait()
            self._wake.clear()

    async def run_once(self, record: dict[str, Any]) -> bool:
        """Run the hook for one record; True if it succeeded."""
        name = f"{record.get('port')} ({record.get('record_id')})"
        env = dict(os.environ)
        env.update(
            PARALLEL_FLASH_RECORD_ID=str(record.get("record_id", "")),
            PARALLEL_FLASH_PORT=str(record.get("port", "")),
            PARALLEL_FLASH_OK="1" if record.get("ok") else "0",
            PARALLEL_FLASH_REASON=str(record.get("reason", "")),
        )
        data = json.dumps(record, ensure_ascii=True, separators=(",", ":")).encode() + b"\n"
        try:
            process = await asyncio.create_subprocess_shell(
                self.command,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,  # its own process group: killed whole on timeout
                env=env,
            )
        except OSError as exc:
            return self._failed(name, f"cannot start: {exc.strerror}")
        try:
            output, _ = await asyncio.wait_for(process.communicate(data), self.timeout)
        except TimeoutError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            return self._failed(name, f"still running after {self.timeout:g} s; killed")
        except asyncio.CancelledError:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(process.pid, signal.SIGKILL)
            await process.wait()
            raise
        if process.returncode != 0:
            tail = output.decode(errors="replace").strip()[-_OUTPUT_TAIL:]
            status = process.returncode
            how = f"killed by signal {-status}" if status is not None and status < 0 else (
                f"exited with status {status}"
            )
            return self._failed(name, f"{how}" + (f": {tail}" if tail else ""))
        self.runs += 1
        return True

    def _failed(self, name: str, why: str) -> bool:
        self.runs += 1
        self.failures += 1
        logger.warning("--on-result hook for %s failed (the device's result stands): %s", name, why)
        return False

    def report_unfinished(self) -> None:
        """At close: name the results whose hook never ran (the drain deadline passed)."""
        if self._pending:
            ids = ", ".join(str(record.get("record_id")) for record in self._pending)
            logger.warning(
                "--on-result hook not run for %d results (stopped waiting): %s",
                len(self._pending), ids,
            )
            self.failures += len(self._pending)
