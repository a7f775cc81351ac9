"""``parallel-flash completion SHELL`` and ``parallel-flash manpage``: generated from the parser.

Both are written from the same argparse parser the command runs with (shtab
for the shells, argparse-manpage for roff), so they never fall behind an
option.
"""

from __future__ import annotations

import argparse
import sys

from . import EXIT_OK

__all__ = ("register",)

_SHELLS = ("bash", "zsh", "tcsh")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    completion = subparsers.add_parser(
        "completion",
        help="print a shell completion script (bash, zsh, tcsh)",
        description=(
            "Print the completion script for SHELL. bash: "
            "parallel-flash completion bash > /etc/bash_completion.d/parallel-flash; "
            "zsh: parallel-flash completion zsh > ~/.zfunc/_parallel-flash."
        ),
    )
    completion.add_argument("shell", choices=_SHELLS, help="the shell to complete for")
    completion.set_defaults(func=run_completion)
    manpage = subparsers.add_parser(
        "manpage",
        help="print the manual page (roff), e.g. > /usr/local/share/man/man1/parallel-flash.1",
        description="Print parallel-flash(1) in roff, generated from the command's own options.",
    )
    manpage.set_defaults(func=run_manpage)


def run_completion(args: argparse.Namespace) -> int:
    import shtab

    from . import build_parser

    sys.stdout.write(shtab.complete(build_parser(), shell=args.shell))
    return EXIT_OK


def run_manpage(args: argparse.Namespace) -> int:
    from build_manpages.manpage import Manpage

    from .._version import __version__
    from . import build_parser

    page = Manpage(build_parser(), _data={"project_name": "parallel-flash", "version": __version__})
    sys.stdout.write(_escape_text_lines(str(page)))
    return EXIT_OK


#: The requests argparse-manpage writes; any other line starting with a dot is
#: help text that happened to wrap before a word like ".secwim".
_ROFF_REQUESTS = frozenset(
    {"TH", "SH", "SS", "TP", "B", "I", "IP", "PP", "RS", "RE", "br", "nf", "fi"}
)


def _escape_text_lines(page: str) -> str:
    """Keep roff from reading help text that starts with '.' or "'" as a request."""
    lines = []
    for line in page.splitlines(keepends=True):
        words = line[1:].split(maxsplit=1)
        if line[:1] in (".", "'") and words and words[0] not in _ROFF_REQUESTS:
            line = "\\&" + line
        lines.append(line)
    return "".join(lines)
