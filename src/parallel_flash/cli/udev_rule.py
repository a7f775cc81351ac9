"""``parallel-flash udev-rule``: print, or install and reload, the station's udev rule."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from . import EXIT_OK

__all__ = ("register",)


def _usbfs_mb(text: str) -> int | None:
    if text == "keep":
        return None
    if not text.isdigit():
        raise argparse.ArgumentTypeError(f"{text!r}: expected a size in MB, 0 (no cap) or 'keep'")
    return int(text)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    from ..engine.udev import RULES_FILE, Access

    parser = subparsers.add_parser(
        "udev-rule",
        help="print (or install) the udev rule giving access to the devices",
        description=(
            "Print the udev rule that lets a non-root user open every device parallel-flash "
            "drives (SimpleIO, Lumia and UFP flash apps) and raises the kernel's usbfs memory "
            f"cap. With --install (as root): write it to {RULES_FILE}, reload udev and set the "
            "cap now."
        ),
    )
    parser.add_argument(
        "--install",
        action="store_true",
        help=f"write the rule to {RULES_FILE} (see --rules-file), reload udev, set the usbfs cap",
    )
    parser.add_argument(
        "--access",
        choices=[access.value for access in Access],
        default=Access.BOTH.value,
        help="uaccess: the user at the seat; plugdev: members of --group; both (default both)",
    )
    parser.add_argument(
        "--group",
        default="plugdev",
        metavar="NAME",
        help="group given access by the plugdev variant (default plugdev)",
    )
    parser.add_argument(
        "--usbfs-mb",
        type=_usbfs_mb,
        default=0,
        metavar="MB",
        help="usbfs memory cap to set: a size in MB, 0 = no cap, 'keep' = leave it (default 0)",
    )
    parser.add_argument(
        "--rules-file",
        type=Path,
        default=RULES_FILE,
        metavar="PATH",
        help=f"where --install writes the rule (default {RULES_FILE})",
    )
    parser.add_argument(
        "--no-reload",
        action="store_true",
        help="with --install: write the rule only (no udevadm, no usbfs change)",
    )
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from ..engine.udev import Access, install_udev_rule, udev_rule

    text = udev_rule(access=Access(args.access), group=args.group, usbfs_memory_mb=args.usbfs_mb)
    if not args.install:
        sys.stdout.write(text)
        return EXIT_OK
    result = install_udev_rule(
        text,
        path=args.rules_file,
        reload=not args.no_reload,
        usbfs_memory_mb=None if args.no_reload else args.usbfs_mb,
    )
    print(f"parallel-flash: udev rule written to {result.path}", file=sys.stderr)
    if result.reloaded:
        print("parallel-flash: udev rules reloaded; replug the devices", file=sys.stderr)
    if result.usbfs_set:
        print(f"parallel-flash: usbfs memory cap set to {args.usbfs_mb} MB", file=sys.stderr)
    for warning in result.warnings:
        print(f"parallel-flash: warning: {warning}", file=sys.stderr)
    return EXIT_OK
