"""Shared fixtures: small inputs the project generates itself (never Microsoft's files)."""

from __future__ import annotations

import random
from pathlib import Path

import pytest


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
    from parallel_flash.wimlib import capture

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
