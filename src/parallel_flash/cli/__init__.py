"""The ``parallel-flash`` command: one module per subcommand.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (``Callable[[argparse.Namespace], int]``) as the default. The
functions they call are the Python API; the CLI only parses, prints and maps
exceptions to exit codes:

* 0 -- every device booted (or the command succeeded)
* 1 -- at least one device failed
* 2 -- bad input or usage, reported before any device is touched
* 130 -- interrupted (Ctrl-C)
"""

from __future__ import annotations

import argparse
import importlib
import sys
from collections.abc import Sequence

from ..errors import InputError

__all__ = ("EXIT_FAILED", "EXIT_INTERRUPTED", "EXIT_OK", "EXIT_USAGE", "build_parser", "main")

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 130

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = ("boot", "demo", "info", "list", "emulate", "img2wim")


class _Parser(argparse.ArgumentParser):
    """argparse already exits 2 on usage errors; keep its message short."""


def build_parser() -> argparse.ArgumentParser:
    parser = _Parser(
        prog="parallel-flash",
        description="Boot many Windows Phone class devices at once from a WIM loaded into RAM.",
    )
    parser.add_argument(
        "-v", "--verbose", action="count", default=0, help="more log output (-vv: per transfer)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES:
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    _configure_logging(args.verbose)
    try:
        return int(args.func(args))
    except InputError as exc:
        print(f"parallel-flash: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("parallel-flash: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


def _configure_logging(verbosity: int) -> None:
    import logging

    from ..logs import TRACE

    level = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}.get(verbosity, TRACE)
    logging.basicConfig(level=level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")


def run() -> None:
    sys.exit(main())
