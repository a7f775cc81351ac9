"""Shared fixtures: small inputs the project generates itself (never Microsoft's files)."""

from __future__ import annotations

import os
import random
import shutil
import subprocess
from collections.abc import Callable
from functools import cache
from pathlib import Path

import pytest
from hypothesis import HealthCheck, settings

from _nok_pair import FfuInput, make_ffu

# Property tests (tests/test_fuzz_*.py, marker "fuzz"): a bounded profile for
# every run, a long one for `bash scripts/run.sh fuzz` (HYPOTHESIS_PROFILE=long).
# No deadline: the machine is shared, and a slow example is not a wrong one.
settings.register_profile(
    "ci",
    max_examples=300,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.register_profile(
    "long",
    max_examples=5_000,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
)
settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))


@pytest.fixture(scope="session")
def small_tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A deterministic file tree of ~3 MB to capture into WIMs."""
    root = tmp_path_factory.mktemp("tree")
    rng = random.Random(1234)
    (root / "Windows" / "System32").mkdir(parents=True)
    (root / "Data").mkdir()
    (root / "Windows" / "System32" / "boot.bin").write_bytes(rng.randbytes(2_500_000))
    (root / "Data" / "notes.txt").write_text("parallel-flash test tree\n" * 100)
    (root / "Data" / "blob").write_bytes(rng.randbytes(600_001))
    return root


@pytest.fixture(scope="session")
def small_wim(tmp_path_factory: pytest.TempPathFactory, small_tree: Path) -> Path:
    """A valid, uncompressed WIM (boot index 1) captured with libwim."""
    from parallel_flash.img2wim.wimlib import capture

    path = tmp_path_factory.mktemp("wim") / "small.wim"
    capture(small_tree, path, image_name="Small", compression="none", boot=True)
    return path


@pytest.fixture(scope="session")
def small_sdi(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The project's own SDI, with its WIM entry at its end."""
    from parallel_flash.formats.sdi import build_sdi

    path = tmp_path_factory.mktemp("sdi") / "small.sdi"
    path.write_bytes(build_sdi())
    return path


@pytest.fixture(scope="session")
def wimlib_imagex() -> Callable[..., subprocess.CompletedProcess[str]]:
    """Run the reference tool ``wimlib-imagex`` (Debian wimtools); fails loudly on error."""
    exe = shutil.which("wimlib-imagex")
    if exe is None:
        pytest.skip("wimlib-imagex (Debian package wimtools) is not installed")

    def run(*args: str | os.PathLike[str]) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [exe, *map(os.fspath, args)], check=True, capture_output=True, text=True
        )

    return run


@pytest.fixture(scope="session")
def imagex_wim(
    tmp_path_factory: pytest.TempPathFactory,
    small_tree: Path,
    wimlib_imagex: Callable[..., subprocess.CompletedProcess[str]],
) -> Path:
    """A WIM made by the wimlib-imagex CLI: LZX, boot index 1, with an integrity table."""
    path = tmp_path_factory.mktemp("imagex") / "imagex.wim"
    wimlib_imagex("capture", small_tree, path, "Imagex Demo", "--boot", "--compress=lzx", "--check")
    return path


@cache
def _umockdev_problems() -> tuple[str, ...]:
    from parallel_flash.emulator import check_environment

    return tuple(check_environment())


def pytest_runtest_setup(item: pytest.Item) -> None:
    """umockdev tests fail (never skip) when the emulator cannot run.

    CI must run them for real. ``PARALLEL_FLASH_ALLOW_SKIP_UMOCKDEV=1`` turns
    the failure into a skip, for developers' machines only.
    """
    if item.get_closest_marker("umockdev") is None:
        return
    problems = _umockdev_problems()
    if not problems:
        return
    message = "umockdev emulator unavailable: " + "; ".join(problems)
    if os.environ.get("PARALLEL_FLASH_ALLOW_SKIP_UMOCKDEV") == "1":
        pytest.skip(message)
    pytest.fail(message, pytrace=False)


@pytest.hookimpl(hookwrapper=True)
def pytest_runtest_makereport(item: pytest.Item, call: pytest.CallInfo[None]):  # type: ignore[no-untyped-def]
    """With PARALLEL_FLASH_REQUIRE_ALL=1 (set by ``scripts/run.sh test``, hence CI), a skip
    is a failure: a missing tool must never make a test silently disappear. An expected
    failure (xfail) is reported as a skip and fails too: a known bug is fixed, not parked."""
    outcome = yield
    report = outcome.get_result()
    if report.skipped and os.environ.get("PARALLEL_FLASH_REQUIRE_ALL") == "1":
        report.outcome = "failed"
        reason = report.longrepr[2] if isinstance(report.longrepr, tuple) else report.longrepr
        report.longrepr = f"skipped, but PARALLEL_FLASH_REQUIRE_ALL=1 forbids skips: {reason}"


@pytest.fixture(scope="session")
def secwim(tmp_path_factory: pytest.TempPathFactory, small_wim: Path) -> Path:
    """A .secwim (the SDI inside) of the small WIM: what Lumia and SimpleIO devices take."""
    from parallel_flash.formats.sdi import build_sdi
    from parallel_flash.formats.secwim import build_secwim

    path = tmp_path_factory.mktemp("secwim") / "mmos.secwim"
    path.write_bytes(build_secwim(build_sdi(), small_wim.read_bytes()))
    return path


@pytest.fixture(scope="session")
def ffu(tmp_path_factory: pytest.TempPathFactory) -> FfuInput:
    """A v2 FFU of a small disk: what UFP devices take."""
    return make_ffu(tmp_path_factory.mktemp("ffu"), version=2)
