"""One error hierarchy, and library parameter names shown as the command's flags."""

from __future__ import annotations

import pytest

from vstain import errors
from vstain.cli import build_parser, command_flags, main
from vstain.errors import VstainError, message_for_cli


@pytest.mark.parametrize("cls, builtin", [
    (errors.InvalidName, ValueError), (errors.ConfigError, ValueError), (errors.ConfigNotFound, FileNotFoundError),
    (errors.SplitError, ValueError), (errors.SplitNotFound, FileNotFoundError), (errors.PlateError, ValueError),
    (errors.PlateNotFound, FileNotFoundError), (errors.BundleError, ValueError),
])
def test_every_error_is_a_vstain_error_and_the_builtin_it_is(cls, builtin):
    error = cls("x: broken")
    assert isinstance(error, VstainError) and isinstance(error, builtin) and str(error) == "x: broken"


def test_bundle_error_is_the_one_hierarchy():
    from vstain.inference.bundle import BundleError

    assert BundleError is errors.BundleError


def test_flags_come_from_the_parser_and_the_command_table():
    parser = build_parser()
    evaluate = command_flags(parser, "evaluate")
    assert evaluate["truth"] == "--truth" and evaluate["report_fields"] == "--report-fields"
    assert command_flags(parser, "check")["plate"] == "PLATE"  # a positional argument
    assert command_flags(parser, "synth")["root"] == "--out"  # PARAMETER_FLAGS of the command
    assert command_flags(parser, "predict")["plate_dir"] == "--input"
    assert command_flags(parser, None) == {}


def test_only_known_backticked_parameters_are_replaced():
    error = errors.PlateError("p: not `this` but `root`; see `vstain check`")
    assert message_for_cli(error, {"root": "--out"}) == "p: not `this` but --out; see `vstain check`"


def test_the_command_line_shows_flags(random_plate, capsys):
    inside = random_plate / "cache"
    assert main(["cache", str(random_plate), "--out", str(inside)]) == 2
    err = capsys.readouterr().err
    assert err == f"error: {inside}: cache folder inside the plate {random_plate}; choose one outside (--out)\n"
