"""Boot throughput with and without publishing to MQTT (issue 12: within 2 %).

Runs ``parallel-flash boot --sim N`` as a user would, alternating a run
without line integration and a run with ``--mqtt`` (a real Mosquitto on
loopback, started here and stopped by its pid) plus ``--metrics``, both with
the same ``--report``. Figures are medians over the runs:

* aggregate MB/s -- the report's summary (bytes over streaming time): what the
  line delivers to the devices;
* wall seconds -- process start to exit, so it includes connecting to the
  broker and waiting for the last acknowledgements.

Two lines: devices at 40 MB/s (a USB 2.0-class link: publishing must not
take a share of it) and unthrottled links (the host CPU is the limit: the
publisher's thread competes with the engine for it).

Usage: python benchmarks/bench_publish.py [--devices 8] [--wim-mib 128] [--runs 5]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from _common import print_table

WORKDIR = Path(os.environ.get("PF_BENCH_DIR", "/tmp/parallel-flash-bench"))


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def start_broker(workdir: Path) -> tuple[subprocess.Popen[bytes], int]:
    exe = shutil.which("mosquitto") or "/usr/sbin/mosquitto"
    if not os.path.exists(exe):
        sys.exit("bench_publish: mosquitto is not installed (Debian package mosquitto)")
    port = free_port()
    config = workdir / "mosquitto.conf"
    config.write_text(f"listener {port} 127.0.0.1\nallow_anonymous true\npersistence false\n")
    process = subprocess.Popen([exe, "-c", str(config)], stdout=subprocess.DEVNULL,
                               stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 15
    while True:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return process, port
        except OSError:
            if time.monotonic() > deadline or process.poll() is not None:
                sys.exit("bench_publish: mosquitto did not start")
            time.sleep(0.05)


def one_run(
    wim: Path, sdi: Path, workdir: Path, devices: int, rate: float, extra: list[str]
) -> tuple[float, float]:
    """(aggregate MB/s from the report, wall seconds) of one CLI run."""
    report = workdir / f"run-{time.monotonic_ns()}.jsonl"
    argv = [sys.executable, "-m", "parallel_flash", "boot", str(wim), "--sdi", str(sdi),
            "--sim", str(devices), "--sim-rate", str(rate), "--plain",
            "--report", str(report), *extra]
    started = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    wall = time.perf_counter() - started
    summary = json.loads(report.read_text().splitlines()[-1])
    report.unlink()
    return float(summary["mb_per_s"]), wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=8)
    parser.add_argument("--wim-mib", type=int, default=128)
    parser.add_argument("--runs", type=int, default=5, help="runs of each kind, alternating")
    args = parser.parse_args()

    from parallel_flash.demo.inputs import demo_inputs

    wim, sdi = demo_inputs(WORKDIR, wim_size=args.wim_mib << 20)
    with tempfile.TemporaryDirectory(prefix="bench-publish-") as tmp:
        workdir = Path(tmp)
        broker, port = start_broker(workdir)
        try:
            rows = []
            for rate in (40.0, 0.0):
                figures: dict[str, list[tuple[float, float]]] = {"without": [], "with": []}
                for run in range(args.runs):
                    with_mqtt = [
                        "--mqtt", f"mqtt://127.0.0.1:{port}", "--line", "bench",
                        "--station", "st1", "--mqtt-outbox", str(workdir / "outbox.jsonl"),
                        "--metrics", f"127.0.0.1:{free_port()}",
                    ]
                    order = [("without", []), ("with", with_mqtt)]
                    for kind, extra in order if run % 2 == 0 else order[::-1]:
                        figures[kind].append(
                            one_run(wim, sdi, workdir, args.devices, rate, extra)
                        )
                without_runs = [mb for mb, _ in figures["without"]]
                with_runs = [mb for mb, _ in figures["with"]]
                without = statistics.median(without_runs)
                with_ = statistics.median(with_runs)
                delta = (with_ - without) / without * 100
                link = f"{rate:g} MB/s" if rate else "unthrottled"
                rows.append([
                    f"{args.devices} x {link}",
                    f"{without:,.1f} ({min(without_runs):,.0f}-{max(without_runs):,.0f})",
                    f"{with_:,.1f} ({min(with_runs):,.0f}-{max(with_runs):,.0f})",
                    f"{delta:+.1f} %",
                    ">= -2 %: " + ("met" if delta >= -2 else "NOT met"),
                    f"{statistics.median(w for _, w in figures['without']):.2f}",
                    f"{statistics.median(w for _, w in figures['with']):.2f}",
                ])
        finally:
            broker.send_signal(signal.SIGTERM)
            broker.wait(10)
    print_table(
        f"boot throughput with and without MQTT + metrics ({args.wim_mib} MiB WIM, "
        f"median of {args.runs} alternating runs each)",
        ["line", "MB/s without (range)", "MB/s with --mqtt (range)", "difference", "target",
         "wall s without", "wall s with"],
        rows,
        width=150,
    )


if __name__ == "__main__":
    main()
