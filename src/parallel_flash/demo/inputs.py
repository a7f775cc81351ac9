"""The demo's inputs, made here: a generated WIM and the project's own SDI.

No Microsoft file is shipped or downloaded (protocol.md "boot.sdi"). The WIM
is a real one -- wimlib captures a generated file tree, sets boot index 1, and
the result passes :func:`~parallel_flash.formats.wim.parse_wim_header` and
``wimlib-imagex verify`` -- so the demo streams the same kind of bytes a
factory line would. Its content is pseudo-random (so it does not compress
away and the transfer is honest) but deterministic for a given seed.

Generation is cached by name in the work directory: a second demo starts at
once, and a half-written file is never mistaken for a finished one (both
writers replace the target atomically).
"""

from __future__ import annotations

import logging
import os
import random
import tempfile
from pathlib import Path
from typing import cast

from ..errors import FormatError, InputError
from ..formats.sdi import build_sdi, check_sdi_for_wim_boot, read_sdi_info
from ..formats.wim import read_wim_info
from ..img2wim import wimlib

__all__ = (
    "DEFAULT_DEMO_FILES",
    "DEFAULT_DEMO_WIM_SIZE",
    "build_demo_sdi",
    "build_demo_wim",
    "demo_inputs",
)

logger = logging.getLogger(__name__)

DEFAULT_DEMO_WIM_SIZE = 64 << 20
DEFAULT_DEMO_FILES = 48
#: The tree's directories; files are dealt out over them in turn.
_DIRECTORIES = (
    "Windows/System32/Drivers",
    "Windows/System32/Config",
    "Windows/Boot",
    "Program Files/Demo",
    "Users/Public",
)
_COMPRESSIONS = ("none", "xpress", "lzx", "lzms")
_WRITE_BLOCK = 1 << 20


def build_demo_sdi(path: str | os.PathLike[str]) -> Path:
    """Write the project's own SDI (:func:`~parallel_flash.formats.sdi.build_sdi`)."""
    target = Path(path)
    _write_atomically(target, build_sdi())
    return target


def build_demo_wim(
    path: str | os.PathLike[str],
    *,
    size: int,
    files: int = DEFAULT_DEMO_FILES,
    compression: str = "none",
    seed: int = 0,
) -> Path:
    """Capture a generated tree of about ``size`` bytes into a bootable WIM.

    :param size: total bytes of file content (the WIM adds a few KiB of
        metadata; with compression "none" the WIM is about this large).
    :param files: how many files; sizes vary, deterministic per ``seed``.
    :param compression: "none", "xpress", "lzx" or "lzms" (any case).
    :raises ValueError: for a negative size, fewer than one file, or an
        unknown compression.
    :raises ~parallel_flash.errors.WimlibError: when wimlib fails.
    """
    mode = compression.lower()
    if mode not in _COMPRESSIONS:
        choices = ", ".join(_COMPRESSIONS)
        raise ValueError(f"compression must be one of {choices}, not {compression!r}")
    if size < 0 or files < 1:
        raise ValueError(f"need size >= 0 and files >= 1, not size={size}, files={files}")
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    # Beside the target, not in /tmp: /tmp is often RAM, and the tree is as big as the WIM.
    with tempfile.TemporaryDirectory(prefix=".demo-tree-", dir=target.parent) as tree:
        _write_tree(Path(tree), size=size, files=files, seed=seed)
        _capture(Path(tree), target, compression=mode)
    logger.info("built demo WIM %s (%d bytes of content, %d files)", target, size, files)
    return target


def demo_inputs(
    workdir: str | os.PathLike[str], *, wim_size: int = DEFAULT_DEMO_WIM_SIZE, seed: int = 0
) -> tuple[Path, Path]:
    """The demo's (WIM, SDI), generated once per size and seed and then reused.

    A cached file is reused only if it still passes the boot checks.
    """
    directory = Path(workdir)
    directory.mkdir(parents=True, exist_ok=True)
    wim = directory / f"demo-{wim_size}-seed{seed}.wim"
    sdi = directory / "demo.sdi"
    if not _usable_wim(wim):
        build_demo_wim(wim, size=wim_size, seed=seed)
    if not _usable_sdi(sdi):
        build_demo_sdi(sdi)
    return wim, sdi


# -- helpers ------------------------------------------------------------------


def _capture(source: Path, wim: Path, *, compression: str) -> None:
    """The one place a WIM gets written: libwim through our ctypes binding."""
    wimlib.capture(
        source, wim, image_name="Demo", compression=cast(wimlib.Compression, compression), boot=True
    )


def _write_tree(root: Path, *, size: int, files: int, seed: int) -> None:
    """Deterministic pseudo-random files whose sizes add up to exactly ``size``."""
    rng = random.Random(seed)
    weights = [rng.random() + 0.05 for _ in range(files)]
    total = sum(weights)
    sizes = [int(size * weight / total) for weight in weights]
    sizes[-1] += size - sum(sizes)
    for name in _DIRECTORIES:
        (root / name).mkdir(parents=True, exist_ok=True)
    for index, length in enumerate(sizes):
        folder = root / _DIRECTORIES[index % len(_DIRECTORIES)]
        with open(folder / f"file{index:04d}.bin", "wb") as f:
            remaining = length
            while remaining:
                block = min(remaining, _WRITE_BLOCK)
                f.write(rng.randbytes(block))
                remaining -= block


def _write_atomically(target: Path, data: bytes) -> None:
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".partial", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(data)
        os.chmod(tmp, 0o644)
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _usable_wim(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        info = read_wim_info(path)
    except InputError as exc:
        logger.warning("%s: cached demo WIM is unusable (%s); building it again", path, exc)
        return False
    return info.boot_index == 1


def _usable_sdi(path: Path) -> bool:
    if not path.is_file():
        return False
    try:
        check_sdi_for_wim_boot(read_sdi_info(path))
    except FormatError as exc:
        logger.warning("%s: cached demo SDI is unusable (%s); building it again", path, exc)
        return False
    return True
