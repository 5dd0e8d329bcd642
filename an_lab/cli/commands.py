"""The registry of `an-lab` commands: each one is its handler and the function that declares its arguments."""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass


@dataclass(frozen=True)
class Command:
    name: str
    help: str
    description: str
    arguments: Callable[[argparse.ArgumentParser], None]
    run: Callable[[argparse.Namespace], int]


COMMANDS: list[Command] = []

SWEEP_HELP = "the sweep file (YAML), or its folder <output_dir>/sweeps/<name>/ that `an-lab sweep` wrote"


def command(name: str, arguments: Callable[[argparse.ArgumentParser], None], help: str, description: str = ""):
    """Register the decorated handler as `an-lab NAME`, with `arguments` declaring its options."""

    def register(run: Callable[[argparse.Namespace], int]) -> Callable[[argparse.Namespace], int]:
        COMMANDS.append(Command(name, help, description or help, arguments, run))
        return run

    return register


def add_sweep(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("sweep", metavar="SWEEP", help=SWEEP_HELP)


def add_set(parser: argparse.ArgumentParser, help: str = "override a key of the sweep file, repeatable") -> None:
    parser.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help=help)
