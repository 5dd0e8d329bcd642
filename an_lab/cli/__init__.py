"""The `an-lab` command: parses, calls one function of the layers below, prints. Each command declares its arguments
next to its handler (an_lab.cli.runs: profile, train, plan, sweep, status, cancel; an_lab.cli.results: table, plot,
report, sync). Heavy libraries (torch, lightning, wandb) are imported inside the commands that need them, so that
--help and the bookkeeping commands start fast."""

from __future__ import annotations

import argparse
import os
import sys

from an_lab.cli.commands import COMMANDS
from an_lab.errors import UsageError


def _version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("an-lab")
    except PackageNotFoundError:  # run from a source tree that is not installed
        return "unknown (not installed)"


class _VersionAction(argparse.Action):
    """--version, looked up when asked for: reading the installed package's metadata takes 30 ms of every command."""

    def __init__(self, option_strings, dest=argparse.SUPPRESS, default=argparse.SUPPRESS, help=None):
        super().__init__(option_strings, dest=dest, default=default, nargs=0, help=help)

    def __call__(self, parser, namespace, values, option_string=None):
        print(f"an-lab {_version()}")
        parser.exit()


def build_parser() -> argparse.ArgumentParser:
    from an_lab.cli import runs, results  # noqa: F401, I001  (registers their commands, in this order)

    parser = argparse.ArgumentParser(prog="an-lab", description="Attentive Normalization experiments and sweeps.")
    parser.add_argument("--version", action=_VersionAction, help="show the version and exit")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        sub = commands.add_parser(command.name, help=command.help, description=command.description)
        command.arguments(sub)
        sub.set_defaults(run=command.run, parser=parser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    _autocomplete(parser)
    args = parser.parse_args(argv)
    try:
        return args.run(args)
    except UsageError as error:
        print(f"error: {error}", file=sys.stderr)
        return error.exit_code
    except BrokenPipeError:  # `an-lab table ... | head`: the reader left; end quietly, as `cat` does
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())
        return 141  # 128 + SIGPIPE, what a shell reports for a writer whose pipe closed


def _autocomplete(parser: argparse.ArgumentParser) -> None:
    """Shell completion through argcomplete when it is installed (`eval "$(register-python-argcomplete an-lab)"`);
    without it, `an-lab completion bash` prints a script."""
    if "_ARGCOMPLETE" not in os.environ:
        return
    try:
        import argcomplete
    except ImportError:
        return
    argcomplete.autocomplete(parser)


if __name__ == "__main__":
    sys.exit(main())
