"""`normguard report` (not yet available)."""

from __future__ import annotations

import argparse

from normguard.cli import UsageError


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("args", nargs="*")


def run(args: argparse.Namespace) -> int:
    raise UsageError("this subcommand is not available yet")
