"""parallel-flash info FILE...: what a WIM, SDI, .secwim or FFU file holds.

Runs the checks a boot run makes before touching any device: a WIM or
.secwim that info accepts is one boot will send. An SDI is described even
when its WIM entry is wrong, with a warning saying what boot would refuse.
Exit 0 when every file was read and passed, 2 when any could not be read or
failed a check (the error names the file, the field and the problem)."""

from __future__ import annotations

import argparse
import json
import sys

from rich.console import Console
from rich.table import Table
from rich.text import Text

from ..errors import FormatError, InputError
from ..output.inspect import FileDescription, describe_file
from ..output.ui import printable
from . import EXIT_OK, EXIT_USAGE

__all__ = ("register", "render_description", "run")

#: Console width when standard output is not a terminal: wide enough that
#: no row is ever folded.
_UNWRAPPED = 100_000


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "info",
        help="describe and check WIM, SDI, .secwim or FFU files",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="files to describe")
    parser.add_argument(
        "--verify-integrity",
        action="store_true",
        help="re-hash a WIM against its integrity table (reads the whole file)",
    )
    parser.add_argument(
        "--json",
        action="store_true",
        help="print one JSON array instead, typed fields per file (schemas/info.schema.json)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    """Describe every file; a bad one is reported and the rest still shown."""
    results: list[FileDescription | InputError] = []
    for path in args.files:
        try:
            results.append(describe_file(path, verify_integrity=args.verify_integrity))
        except InputError as exc:
            results.append(exc)
    if args.json:
        json.dump(
            [_as_json(path, r) for path, r in zip(args.files, results, strict=True)],
            sys.stdout,
            indent=2,
        )
        sys.stdout.write("\n")
    else:
        # A pipe or a file gets each row whole, never folded at 80 columns, and
        # without the padding to the table's width: `info x.wim | grep SHA-256`
        # must see the whole hash, and `awk '{print $NF}'` the value.
        tty = sys.stdout.isatty()
        console = Console(highlight=False, width=None if tty else _UNWRAPPED)
        for result in results:
            if not isinstance(result, FileDescription):
                continue
            if tty:
                console.print(render_description(result))
                continue
            with console.capture() as captured:
                console.print(render_description(result))
            sys.stdout.write("".join(f"{line.rstrip()}\n" for line in captured.get().splitlines()))
    failed = [r for r in results if isinstance(r, InputError)]
    for error in failed:
        print(f"parallel-flash: error: {printable(str(error))}", file=sys.stderr)
    return EXIT_USAGE if failed else EXIT_OK


def render_description(description: FileDescription) -> Table:
    """A two-column table; every string from the file is shown literally.

    Values go in as :class:`~rich.text.Text` (never parsed as markup) after
    :func:`~parallel_flash.output.ui.printable` has escaped control characters, so an
    image name like ``[red]x`` or one holding ESC cannot restyle the terminal.
    """
    table = Table(
        title=Text(printable(description.title)),
        title_justify="left",
        show_header=False,
        box=None,
        padding=(0, 2, 0, 0),
    )
    table.add_column("field", style="bold", no_wrap=True)
    table.add_column("value", overflow="fold")
    for label, value in description.rows:
        table.add_row(Text(printable(label)), Text(printable(value)))
    for warning in description.warnings:
        table.add_row(Text("warning", style="yellow bold"), Text(printable(warning), "yellow"))
    return table


def _as_json(path: str, result: FileDescription | InputError) -> dict[str, object]:
    if isinstance(result, FileDescription):
        return result.as_dict()
    error: dict[str, str | None]
    if isinstance(result, FormatError):
        error = {"field": result.field, "problem": result.problem}
    else:
        error = {"field": None, "problem": str(result)}
    return {"path": path, "ok": False, "error": error}
