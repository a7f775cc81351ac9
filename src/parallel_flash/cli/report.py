"""``parallel-flash report FILE...``: totals, failures by reason, per-port yield, CSV export."""

from __future__ import annotations

import argparse
import sys

from . import EXIT_OK

__all__ = ("register",)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "report",
        help="summarise --report files: totals, failures by reason, yield per port, CSV",
        description=(
            "Read one or many JSON-lines reports written by --report (a shift, a day, several "
            "stations) and print the totals, the failures by reason and the yield of every "
            "port. --csv exports one row per device."
        ),
    )
    parser.add_argument("files", nargs="+", metavar="FILE", help="report files (JSON lines)")
    parser.add_argument(
        "--csv",
        metavar="OUT",
        default=None,
        help="also write a CSV row per device to OUT ('-' = standard output, the summary "
        "then goes to standard error)",
    )
    parser.set_defaults(func=run)


def _count(number: int, noun: str) -> str:
    return f"{number} {noun}{'' if number == 1 else 's'}"


def _percent(part: int, whole: int) -> str:
    return f"{100.0 * part / whole:.1f} %" if whole else "-"


def run(args: argparse.Namespace) -> int:
    from ..errors import InputError
    from ..output.report_stats import summarize_reports, write_csv
    from ..output.ui import printable

    digest = summarize_reports(args.files)
    out = sys.stderr if args.csv == "-" else sys.stdout
    if args.csv is not None:
        if args.csv == "-":
            write_csv(digest, sys.stdout)
        else:
            try:
                with open(args.csv, "x", encoding="utf-8", newline="") as file:
                    write_csv(digest, file)
            except FileExistsError:
                raise InputError(f"CSV file {args.csv} already exists; choose another") from None
            except OSError as exc:
                raise InputError(f"cannot write CSV file {args.csv}: {exc.strerror}") from None

    def say(line: str = "") -> None:
        print(line, file=out)

    stations = digest.stations
    devices = len(digest.devices)
    say(
        f"{_count(len(digest.files), 'report')}, {_count(digest.runs, 'run')}"
        f" ({digest.interrupted_runs} interrupted), {_count(len(stations), 'station')}: "
        f"{_count(devices, 'device')}, {digest.booted} booted, "
        f"{digest.failed} failed, yield {_percent(digest.booted, devices)}"
    )
    for path, number, problem in digest.unreadable:
        say(f"warning: {printable(path)} line {number}: {problem}; not counted")
    reasons = digest.failures_by_reason()
    if reasons:
        say()
        say("Failures by reason:")
        width = max(len(reason) for reason, _ in reasons)
        for reason, count in reasons:
            say(f"  {printable(reason):<{width}}  {count:>6}  {_percent(count, digest.failed):>7}")
    ports = digest.port_yields()
    if ports:
        say()
        say("Yield per port:")
        several = len(stations) > 1
        names = [printable(f"{row.station}/{row.port}" if several else row.port) for row in ports]
        width = max(len("port"), *(len(name) for name in names))
        say(f"  {'port':<{width}}  {'devices':>7}  {'booted':>7}  {'failed':>7}  {'yield':>7}")
        for name, row in zip(names, ports, strict=True):
            say(
                f"  {name:<{width}}  {row.devices:>7}  {row.booted:>7}  {row.failed:>7}  "
                f"{_percent(row.booted, row.devices):>7}"
            )
    if args.csv not in (None, "-"):
        say()
        say(f"{devices} device rows written to {printable(args.csv)}")
    return EXIT_OK
