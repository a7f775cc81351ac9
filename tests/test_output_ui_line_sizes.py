"""The live view of a whole simulated line on a real terminal, at the sizes operators use.

``parallel-flash demo`` boots 8, 64 and 128 simulated devices, some of them
faulty, drawn on tmux panes of 80x24 and 160x45. What is left on the screen
must give the totals and every failed device (port, name, ID, reason), with
no line wider than the terminal -- tmux wraps any longer line, and ``-J``
joins it back, so a too-long line shows as one.

With ``PARALLEL_FLASH_SCREENSHOTS=DIR`` the final frames are also written
to DIR (docs/screenshots/ comes from here).
"""

from __future__ import annotations

import os
import shutil
import sys
from pathlib import Path

import pytest

from _terminal import run_on_terminal

pytestmark = [
    pytest.mark.slow,
    pytest.mark.skipif(shutil.which("tmux") is None, reason="tmux is not installed"),
]

#: Failed slots per line size; they alternate a refusal and a disconnect.
FAILED = {8: [3, 6], 64: [3, 17, 40, 60], 128: [3, 17, 40, 99, 127]}
REASONS = ("WIM boot failure status 0xfffffffb", "disconnected while waiting")


def _faults(count: int) -> list[str]:
    args = []
    for index, slot in enumerate(FAILED[count]):
        spec = "status=-5" if index % 2 == 0 else "disconnect=1048576"
        args += ["--fault", f"{slot}:{spec}"]
    return args


@pytest.fixture(scope="module")
def demo_workdir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("demo-inputs")


@pytest.mark.parametrize(("width", "height"), [(80, 24), (160, 45)])
@pytest.mark.parametrize("count", [8, 64, 128])
def test_demo_line_on_a_real_terminal(
    count: int, width: int, height: int, demo_workdir: Path, tmp_path: Path
) -> None:
    argv = [
        sys.executable, "-m", "parallel_flash", "demo",
        "--devices", str(count), "--wim-size", "8MiB", "--rate", "8",
        "--workdir", str(demo_workdir), "--live", *_faults(count),
    ]  # fmt: skip
    screen = run_on_terminal(argv, width=width, height=height, workdir=tmp_path)
    assert screen.returncode == 1, screen.stderr  # some devices failed

    failed = FAILED[count]
    title = f"demo: {count} simulated devices booting"
    final = screen.history[screen.history.rindex(title) :]
    for line in screen.history.splitlines():
        assert len(line.rstrip()) <= width, line
    totals = f"{count} devices: {count - len(failed)} booted, {len(failed)} failed"
    assert totals in final
    assert totals in screen.visible  # the totals line is on screen at the end
    assert f"Failed ({len(failed)}):" in final
    for slot in failed:
        identity = (
            f"✗ sim-{slot}  Contoso.Simulated.{slot:03d}  00000011-f151-a509-0000-{slot:012x}"
        )
        assert identity in final, final
        after = final[final.index(identity) :].split("\n✗", 1)[0]
        assert any(reason in " ".join(after.split()) for reason in REASONS), after
    if count >= 32:  # the port grid, not a row per device
        assert "ports sim-*" in final
        assert "sim-1 " not in final.replace("✗ sim-1 ", "")
    else:
        rows = [line for line in final.splitlines() if line.startswith("sim-")]
        assert len(rows) == count

    directory = os.environ.get("PARALLEL_FLASH_SCREENSHOTS")
    if directory:
        path = Path(directory) / f"live-{count}-devices-{width}x{height}.txt"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text("\n".join(line.rstrip() for line in final.splitlines()).strip("\n") + "\n")
