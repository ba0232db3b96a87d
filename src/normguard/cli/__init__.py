"""The ``normguard`` command line: ``normguard demo | spectrum | theory | pilot | report``.

Each subcommand lives in its own module of this package with two functions,
``add_arguments(parser)`` and ``run(args) -> int``; every one accepts ``--json``.
Bad input is reported in one line on stderr with exit status 2 (no traceback): options are
checked with :mod:`normguard.validation` inside :func:`usage_errors`, which turns the
``ValueError`` of a check (or of the library on the user's data) into a :class:`UsageError`.
A command whose optional dependency is missing says in one line which extra installs it
(exit status 1). Commands that can run for more than a few seconds draw a progress bar on
stderr when it is a terminal (``--no-progress`` hides it; so does ``NORMGUARD_PROGRESS=0``).
"""

from __future__ import annotations

import argparse
import contextlib
import importlib
import sys
from collections.abc import Iterator, Sequence

COMMANDS: dict[str, str] = {
    "demo": "train a small model past its noise floor and watch normguard react",
    "spectrum": "estimate the eigendecay exponent alpha of a data matrix",
    "theory": "the paper's trade-off between training and test error",
    "pilot": "measure how the min-norm near-interpolator's norm grows with n",
    "report": "draw a figure and a summary from normguard's TensorBoard logs",
}


class UsageError(Exception):
    """Bad input from the user: printed in one line, exit status 2."""


@contextlib.contextmanager
def usage_errors(prefix: str = "") -> Iterator[None]:
    """A ``ValueError`` raised inside becomes a :class:`UsageError` (its message after ``prefix``).

    Example:
        >>> from normguard.validation import check_int
        >>> with usage_errors():
        ...     check_int("--seeds", 0, 1)
        Traceback (most recent call last):
        ...
        normguard.cli.UsageError: Expected argument `--seeds` to be an integer >= 1 but got 0.
    """
    try:
        yield
    except ValueError as exc:
        raise UsageError(f"{prefix}{exc}") from exc


def build_parser() -> argparse.ArgumentParser:
    from normguard import __version__

    parser = argparse.ArgumentParser(
        prog="normguard",
        description="normguard's command line: the demo, the science tools (spectrum, theory, pilot) and the report.",
        epilog="normguard COMMAND --help describes a command.",
    )
    parser.add_argument("--version", action="version", version=f"normguard {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name, help_text in COMMANDS.items():
        module = importlib.import_module(f"normguard.cli.{name}")
        command = sub.add_parser(name, help=help_text, description=help_text)
        command.add_argument("--json", action="store_true", help="print one JSON object")
        module.add_arguments(command)
        command.set_defaults(_run=module.run)
    return parser


def add_progress_argument(parser: argparse.ArgumentParser) -> None:
    """``--no-progress``: hide the progress bar (it is drawn on stderr only when stderr is a terminal)."""
    parser.add_argument(
        "--no-progress", action="store_true", help="hide the progress bar (drawn only when stderr is a terminal)"
    )


def progress_flag(args: argparse.Namespace) -> bool | None:
    """``enabled`` for :func:`normguard.progress.progress`: ``False`` with ``--no-progress``, else ``None``
    (drawn when stderr is a terminal).

    Example:
        >>> progress_flag(argparse.Namespace(no_progress=True)), progress_flag(argparse.Namespace(no_progress=False))
        (False, None)
    """
    return False if getattr(args, "no_progress", False) else None


def missing_extra(exc: ImportError) -> str | None:
    """The one-line message for an optional dependency that is not installed, else ``None``.

    Example:
        >>> missing_extra(ModuleNotFoundError("No module named 'scipy'", name="scipy"))
        "scipy is not installed: pip install 'normguard[science]'"
        >>> missing_extra(ImportError("normguard.lightning needs Lightning: pip install 'normguard[lightning]'"))
        "normguard.lightning needs Lightning: pip install 'normguard[lightning]'"
        >>> missing_extra(ModuleNotFoundError("No module named 'torch'", name="torch")) is None
        True
    """
    from normguard import _EXTRA_OF

    if "pip install 'normguard[" in str(exc):
        return str(exc)
    missing = (exc.name or "").partition(".")[0]
    if missing in _EXTRA_OF:
        return f"{missing} is not installed: pip install 'normguard[{_EXTRA_OF[missing]}]'"
    return None


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args._run(args) or 0)
    except UsageError as exc:
        print(f"normguard {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except ImportError as exc:
        message = missing_extra(exc)
        if message is None:
            raise
        print(f"normguard {args.command}: error: {message}", file=sys.stderr)
        return 1
