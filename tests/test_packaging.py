"""The source distribution is complete: built, unpacked elsewhere, it runs its own tests.

Distributions (Debian, conda-forge) build from the sdist and run its test
suite; a missing ``conftest.py`` or helper module fails them at collection.
The sdist is built offline (``--no-isolation``, with the test extras'
setuptools and build) and its tests run against its own ``src``, not the
installed project.
"""

from __future__ import annotations

import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]

#: Quick test modules run from the unpacked sdist; between them they use
#: conftest.py's fixtures and both helper modules.
SAMPLE = [
    "tests/test_protocol_messages.py",
    "tests/test_protocol_device.py",
    "tests/test_output_ui_table.py",
    "tests/test_output_report.py",
]

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def unpacked(tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("sdist")
    subprocess.run(
        [
            sys.executable,
            "-m",
            "build",
            "--sdist",
            "--no-isolation",
            "--outdir",
            str(out),
            str(ROOT),
        ],
        check=True,
        capture_output=True,
        text=True,
        timeout=300,
    )
    (archive,) = out.glob("parallel_flash-*.tar.gz")
    with tarfile.open(archive) as tar:
        tar.extractall(out, filter="data")
    (tree,) = (path for path in out.iterdir() if path.is_dir())
    return tree


def test_sdist_carries_license_typing_marker_and_test_helpers(unpacked: Path) -> None:
    assert "MIT License" in (unpacked / "LICENSE").read_text()
    assert (unpacked / "src" / "parallel_flash" / "py.typed").exists()
    for helper in ("conftest.py", "_pair.py", "_emulator_clients.py", "_terminal.py"):
        assert (unpacked / "tests" / helper).exists(), helper
    assert (unpacked / "scripts" / "run.sh").exists()
    metadata = (unpacked / "PKG-INFO").read_text()
    assert "License-Expression: MIT" in metadata
    assert "Classifier: Typing :: Typed" in metadata
    urls = dict(
        line.removeprefix("Project-URL: ").split(", ", 1)
        for line in metadata.splitlines()
        if line.startswith("Project-URL: ")
    )
    assert set(urls) == {"Homepage", "Documentation", "Issues", "Source"}, urls
    assert all(url.startswith("https://") for url in urls.values())
    # the README's clone command names the same repository
    assert f"git clone {urls['Source']}\n" in (unpacked / "README.md").read_text()


def test_unpacked_sdist_runs_its_tests(unpacked: Path) -> None:
    env = {**os.environ, "PYTHONPATH": str(unpacked / "src")}
    env.pop("PARALLEL_FLASH_REQUIRE_ALL", None)
    where = subprocess.run(
        [sys.executable, "-c", "import parallel_flash; print(parallel_flash.__file__)"],
        cwd=unpacked, env=env, check=True, capture_output=True, text=True,
    )  # fmt: skip
    assert Path(where.stdout.strip()).is_relative_to(unpacked), where.stdout
    pytest_args = [sys.executable, "-m", "pytest", "-p", "no:cacheprovider", "-q"]
    collected = subprocess.run(
        [*pytest_args, "--collect-only", "tests"],
        cwd=unpacked, env=env, capture_output=True, text=True, timeout=300,
    )  # fmt: skip
    assert collected.returncode == 0, collected.stdout[-3000:] + collected.stderr[-3000:]
    assert "error" not in collected.stdout.splitlines()[-1].lower()
    run = subprocess.run(
        [*pytest_args, *SAMPLE],
        cwd=unpacked, env=env, capture_output=True, text=True, timeout=600,
    )  # fmt: skip
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert " passed" in run.stdout.splitlines()[-1]
