"""docs/line.md's configuration is real: its alert rules pass promtool, its
Mosquitto configuration runs a broker that lets a station publish and an
archiver read -- and nothing else."""

from __future__ import annotations

import shutil
import subprocess
import sys
import time
from pathlib import Path

import pytest

from _line_services import (
    PROMTOOL,
    Mosquitto,
    Subscriber,
    free_port,
    make_certificates,
    require,
)

pytestmark = pytest.mark.slow

DOC = Path(__file__).resolve().parent.parent / "docs" / "line.md"


def fenced_blocks(language: str = "") -> list[str]:
    """The fenced code blocks of the doc that are marked *language* (none: unmarked)."""
    blocks: list[str] = []
    current: list[str] | None = None
    marked = ""
    for line in DOC.read_text().splitlines(keepends=True):
        if line.startswith("```"):
            if current is None:
                current, marked = [], line[3:].strip()
            else:
                if marked == language:
                    blocks.append("".join(current))
                current = None
        elif current is not None:
            current.append(line)
    return blocks


def test_the_example_alert_rules_and_scrape_config_pass_promtool(tmp_path: Path) -> None:
    promtool = require(PROMTOOL, "prometheus")
    rules = [block for block in fenced_blocks("yaml") if block.startswith("groups:")]
    assert len(rules) == 1
    path = tmp_path / "rules.yml"
    path.write_text(rules[0])
    check = subprocess.run([promtool, "check", "rules", str(path)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr
    assert "SUCCESS: 7 rules found" in check.stdout
    scrape = [block for block in fenced_blocks("yaml") if block.startswith("scrape_configs:")]
    config = tmp_path / "prometheus.yml"
    config.write_text(scrape[0])
    check = subprocess.run([promtool, "check", "config", str(config)],
                           capture_output=True, text=True, timeout=60)
    assert check.returncode == 0, check.stdout + check.stderr


def test_the_mosquitto_configuration_for_a_line_works_as_documented(
    tmp_path: Path, small_wim: Path, small_sdi: Path
) -> None:
    blocks = fenced_blocks()
    conf = next(b for b in blocks if b.startswith("# Stations and consumers"))
    acl = next(b for b in blocks if b.startswith("pattern write"))
    workdir = tmp_path / "broker"
    workdir.mkdir()
    ca, cert, key = make_certificates(workdir)
    passwd = require(shutil.which("mosquitto_passwd"), "mosquitto")
    subprocess.run([passwd, "-c", "-b", str(workdir / "passwd"), "st07", "pw7"], check=True)
    subprocess.run([passwd, "-b", str(workdir / "passwd"), "line3-archive", "pwa"], check=True)
    subprocess.run([passwd, "-b", str(workdir / "passwd"), "st08", "pw8"], check=True)
    (workdir / "acl").write_text(acl)
    tls_port = free_port()
    conf = (conf.replace("listener 8883", f"listener {tls_port} 127.0.0.1")
            .replace("/etc/mosquitto/certs/broker.crt", str(cert))
            .replace("/etc/mosquitto/certs/broker.key", str(key))
            .replace("/etc/mosquitto/certs/ca.crt", str(ca))
            .replace("/etc/mosquitto/passwd", str(workdir / "passwd"))
            .replace("/etc/mosquitto/acl", str(workdir / "acl"))
            .replace("/var/lib/mosquitto/", f"{workdir}/"))
    assert "/etc/" not in conf.split("#")[0]
    broker = Mosquitto(
        workdir, extra_config="per_listener_settings false\n" + conf, persistence=False
    )
    broker.start()
    try:
        archive = Subscriber(broker, "parallel-flash/v1/line3/+/result",
                             auth=("line3-archive", "pwa"))
        archive.start()
        time.sleep(0.3)

        def station(name: str, password: str, report: Path) -> subprocess.CompletedProcess[str]:
            pwfile = tmp_path / f"{name}.pw"
            pwfile.write_text(password + "\n")
            return subprocess.run(
                [sys.executable, "-m", "parallel_flash", "boot", str(small_wim), "--sdi",
                 str(small_sdi), "--sim", "1", "--sim-rate", "0", "--plain",
                 "--report", str(report), "--mqtt", f"mqtts://{name}@127.0.0.1:{tls_port}",
                 "--mqtt-password-file", str(pwfile), "--mqtt-ca", str(ca),
                 "--line", "line3", "--station", "st07",  # st08 below claims st07's name
                 "--mqtt-outbox", str(tmp_path / f"{name}.outbox")],
                capture_output=True, text=True, timeout=120,
            )

        good = station("st07", "pw7", tmp_path / "st07.jsonl")
        assert good.returncode == 0 and "not acknowledged" not in good.stderr, good.stderr
        archive.wait_for(lambda ms: len(ms) == 1)
        # The ACL lets a station write only under its own name: st08 posing as st07
        # is not delivered (Mosquitto acknowledges and drops what the ACL denies).
        impostor = station("st08", "pw8", tmp_path / "st08.jsonl")
        assert impostor.returncode == 0, impostor.stderr
        time.sleep(1.5)
        assert len(archive.snapshot()) == 1
        archive.stop()
    finally:
        broker.stop()
