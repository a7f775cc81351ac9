"""The ``parallel-flash`` command: one module per subcommand.

Each command module exposes ``register(subparsers)``, which adds its parser and
sets ``func`` (``Callable[[argparse.Namespace], int]``) as the default. The
functions they call are the Python API; the CLI only parses, prints and maps
exceptions to exit codes:

* 0 -- every device booted (or the command succeeded)
* 1 -- at least one device failed
* 2 -- bad input or usage, reported before any device is touched, or a
  library or USB access this machine lacks (one line naming the fix)
* 130 -- interrupted (Ctrl-C, SIGINT); 143 -- terminated (SIGTERM)

:func:`main` is the one boundary where exceptions become exit codes: every
failure reaches the user as one line, ``parallel-flash: error: ...``, with
control characters escaped; ``--debug`` adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import logging
import signal
import sys
import threading
import traceback
from collections.abc import Sequence
from types import FrameType

from .._version import __version__
from ..errors import HostSetupError, InputError, ParallelFlashError
from ..output.ui import printable

__all__ = (
    "EXIT_FAILED",
    "EXIT_INTERRUPTED",
    "EXIT_OK",
    "EXIT_TERMINATED",
    "EXIT_USAGE",
    "build_parser",
    "main",
)

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_USAGE = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT
EXIT_TERMINATED = 128 + signal.SIGTERM

#: Subcommand modules, in the order ``--help`` lists them.
COMMAND_MODULES: tuple[str, ...] = (
    "boot",
    "demo",
    "info",
    "list",
    "report",
    "udev_rule",
    "emulate",
    "img2wim",
    "completion",
)


class _Parser(argparse.ArgumentParser):
    """argparse already exits 2 on usage errors; keep its message short."""


#: Commands registered by a module other than the one of their own name.
_COMMAND_MODULE = {"manpage": "completion", "udev-rule": "udev_rule"}


def _command_module(argv: Sequence[str]) -> str | None:
    """The module of the command ``argv`` names, if it names one (the first non-option).

    Every option before the command is a flag, so the first word not starting
    with '-' is the command; ``--help`` or a typo still gets every command.
    """
    for word in argv:
        if word == "--":
            return None
        if not word.startswith("-"):
            module = _COMMAND_MODULE.get(word, word)
            return module if module in COMMAND_MODULES else None
    return None


def build_parser(only: str | None = None) -> argparse.ArgumentParser:
    """The whole command line; ``only``: just that command module's commands.

    Importing a command module imports what it runs (the engine, libusb,
    rich, wimlib...): registering only the command being run keeps those of
    the others off start-up (issue 10: command to first image byte).
    """
    parser = _Parser(
        prog="parallel-flash",
        description="Boot many Windows Phone class devices at once from a WIM loaded into RAM.",
    )
    parser.add_argument("--version", action="version", version=f"%(prog)s {__version__}")
    _add_verbosity(parser)
    parser.add_argument(
        "--debug", action="store_true", help="show a traceback with any error (for bug reports)"
    )
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)
    for name in COMMAND_MODULES if only is None else (only,):
        importlib.import_module(f"{__name__}.{name}").register(subparsers)
    for subparser in subparsers.choices.values():
        _add_verbosity(subparser, suffix="_here")
    return parser


def _add_verbosity(parser: argparse.ArgumentParser, *, suffix: str = "") -> None:
    """-v/-q, before or after the subcommand (each place counts into its own dest)."""
    parser.add_argument(
        "-v",
        "--verbose",
        action="count",
        default=0,
        dest=f"verbose{suffix}",
        help="more log output: -v steps, -vv debug, -vvv every transfer",
    )
    parser.add_argument(
        "-q",
        "--quiet",
        action="count",
        default=0,
        dest=f"quiet{suffix}",
        help="less log output: errors only",
    )


def verbosity(args: argparse.Namespace) -> int:
    """-v count minus -q count, wherever on the command line they were given."""
    verbose = int(args.verbose) + int(getattr(args, "verbose_here", 0))
    return verbose - int(args.quiet) - int(getattr(args, "quiet_here", 0))


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; return its exit code (argparse's usage errors included)."""
    parser = build_parser(_command_module(sys.argv[1:] if argv is None else argv))
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # --help (0) or a usage error (2), already printed
        return exc.code if isinstance(exc.code, int) else EXIT_USAGE
    _configure_logging(verbosity(args))
    _ignore_reopen_signal()
    try:
        return int(args.func(args))
    except BaseException as exc:  # the one boundary: everything ends as one line
        return _report(exc, debug=args.debug)


def _ignore_reopen_signal() -> None:
    """SIGUSR1 (logrotate's "reopen your report") never kills the tool.

    A run's session reopens the report on it; before the run starts (the image
    is still loading) and in the other commands there is nothing to reopen,
    and the default action would end a station before its shift began.
    A handler that does nothing, not SIG_IGN: an ignored signal stays ignored
    across exec, and the commands we start (result hooks, the emulator) keep
    the default.
    """
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, _nothing_to_reopen)


def _nothing_to_reopen(_signum: int, _frame: FrameType | None) -> None:
    pass


def _report(exc: BaseException, *, debug: bool) -> int:
    """Print ``exc`` as one line (``--debug``: with its traceback); return the exit code."""
    if isinstance(exc, SystemExit):
        raise exc
    if isinstance(exc, BaseExceptionGroup):  # raised in a task group, e.g. opening libusb
        setup, rest = exc.split((InputError, HostSetupError))
        if setup is not None and rest is None:
            exc = _first_leaf(setup)
    if isinstance(exc, KeyboardInterrupt):
        signum = getattr(exc, "signum", signal.SIGINT)
        _error("terminated" if signum == signal.SIGTERM else "interrupted", exc, debug, "")
        return 128 + int(signum)
    if isinstance(exc, BrokenPipeError):  # stdout closed by a pager or `head`
        return EXIT_FAILED
    if isinstance(exc, InputError | HostSetupError):
        _error(str(exc), exc, debug)
        return EXIT_USAGE
    if isinstance(exc, ParallelFlashError):
        _error(str(exc), exc, debug)
        return EXIT_FAILED
    if isinstance(exc, OSError):
        where = f"{exc.filename}: " if exc.filename else ""
        _error(f"{where}{exc.strerror or exc}", exc, debug)
        return EXIT_FAILED
    if isinstance(exc, MemoryError):
        _error("out of memory", exc, debug)
        return EXIT_FAILED
    if not isinstance(exc, Exception):
        raise exc
    _error(
        f"internal error: {type(exc).__name__}: {exc} (please report it; --debug shows where)",
        exc,
        debug,
    )
    return EXIT_FAILED


def _error(message: str, exc: BaseException, debug: bool, prefix: str = "error: ") -> None:
    if debug:
        traceback.print_exception(exc, file=sys.stderr)
    line = " ".join(message.splitlines()) or type(exc).__name__
    print(f"parallel-flash: {prefix}{printable(line)}", file=sys.stderr, flush=True)


def _first_leaf(group: BaseExceptionGroup[BaseException]) -> BaseException:
    first = group.exceptions[0]
    return _first_leaf(first) if isinstance(first, BaseExceptionGroup) else first


def _configure_logging(verbosity: int) -> None:
    from ..logs import TRACE
    from ..output.ui import ConsoleLogHandler

    if verbosity < 0:
        level = logging.ERROR
    else:
        level = {0: logging.WARNING, 1: logging.INFO, 2: logging.DEBUG}.get(verbosity, TRACE)
    # Our own console handler, so a live table can take its lines above itself.
    logging.basicConfig(
        level=level,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        handlers=[ConsoleLogHandler()],
    )


def run() -> None:
    code = main()
    # Python puts SIGUSR1's default action back while it shuts down: a logrotate
    # signal in that moment would end a finished run "killed by SIGUSR1". Nothing
    # is started from here on, so ignoring it leaks into no child.
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGUSR1, signal.SIG_IGN)
    sys.exit(code)
