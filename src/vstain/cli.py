"""The ``vstain`` command: one sub-command per job, each defined in :mod:`vstain.commands`.

Each command module exposes ``register(subparsers)`` (light: argparse only) and ``run(args) -> int``
(imports what it needs), so ``vstain --help`` stays fast and ``vstain check`` never loads torch.
Errors a user can fix (:class:`vstain.errors.VstainError`) are printed as one line, exit code 2;
parameter names the library puts in backticks are shown as the sub-command's flags
(:func:`command_flags`).
"""

from __future__ import annotations

import argparse
import importlib
import sys
from typing import Sequence

from vstain.errors import VstainError, message_for_cli

#: Sub-command name -> module in vstain.commands, in the order ``--help`` lists them.
COMMANDS: dict[str, str] = {
    "synth": "synth",
    "check": "check",
    "stats": "stats",
    "cache": "cache",
    "convert": "convert",
    "align": "align",
    "train": "train",
    "predict": "predict",
    "calibrate": "calibrate",
    "evaluate": "evaluate",
    "bench": "bench",
    "demo": "demo",
    "export": "export",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser with every available sub-command registered."""
    from vstain import __version__

    parser = argparse.ArgumentParser(
        prog="vstain",
        description="Virtual staining of brightfield z-stacks, with CellProfiler-equivalent evaluation.",
        epilog="Run `vstain <command> --help` for a command's options and an example.",
    )
    parser.add_argument("--version", action="version", version=f"vstain {__version__}")
    subparsers = parser.add_subparsers(dest="command", metavar="<command>")
    for module_name in COMMANDS.values():
        try:
            module = importlib.import_module(f"vstain.commands.{module_name}")
        except ModuleNotFoundError as exc:
            if exc.name == f"vstain.commands.{module_name}":
                continue  # command not built yet
            raise
        module.register(subparsers)
    return parser


def command_flags(parser: argparse.ArgumentParser, command: str | None) -> dict[str, str]:
    """Parameter name -> flag of ``command``'s options (``report_fields`` -> ``--report-fields``).

    A command module may add ``PARAMETER_FLAGS`` for library parameters whose name differs from
    the option's (e.g. ``{"plate_dir": "--input"}``). Positional arguments map to their
    upper-case name (``plate`` -> ``PLATE``).
    """
    subparsers = next((a for a in parser._actions if isinstance(a, argparse._SubParsersAction)), None)
    sub = subparsers.choices.get(command) if subparsers is not None and command else None
    if sub is None:
        return {}
    flags: dict[str, str] = {}
    for action in sub._actions:
        if action.dest in (argparse.SUPPRESS, "help"):
            continue
        long = [o for o in action.option_strings if o.startswith("--")]
        flags[action.dest] = long[0] if long else (action.option_strings or [action.dest.upper()])[0]
    module = importlib.import_module(f"vstain.commands.{COMMANDS[command]}")
    flags.update(getattr(module, "PARAMETER_FLAGS", {}))
    return flags


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``vstain`` console script and of ``python -m vstain``."""
    args_list = list(sys.argv[1:] if argv is None else argv)
    if args_list and args_list[0] in ("-c", "--config"):
        args_list.insert(0, "train")  # `python -m vstain -c CONFIG`, as the reference ran
    parser = build_parser()
    args = parser.parse_args(args_list)
    if not getattr(args, "run", None):
        parser.print_help()
        return 2
    try:
        return int(args.run(args) or 0)
    except VstainError as exc:
        print(f"error: {message_for_cli(exc, command_flags(parser, args.command))}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
