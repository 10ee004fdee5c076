"""The command registry: each command declared once, argparse subcommands pick it (the default
when none is named), shared options keep the value given before the command, and each job has
one name (ledger, metrics, logs)."""

from __future__ import annotations

import pytest

from source.commands.backups import BACKUPS
from source.commands.main import MAIN
from source.commands.registry import CommandLine

# The metrics' `job` label values: an interface, fixed.
JOB_LABELS = {"pipeline", "backfill", "import_csv", "train", "backup"}


def test_the_default_command_runs_when_none_is_named():
    command, args = MAIN.parse(["--no-train", "--metals", "gold"])
    assert (command.name, command.job, args.no_train, args.metals) == (
        None,
        "pipeline",
        True,
        "gold",
    )
    assert BACKUPS.parse([])[0].name == "create"


@pytest.mark.parametrize("argv", [["--demo", "train"], ["train", "--demo"]])
def test_shared_options_hold_before_or_after_the_command(argv):
    command, args = MAIN.parse([*argv, "--metals", "gold"])
    assert (command.name, args.demo, args.metals) == ("train", True, "gold")


def test_a_value_that_looks_like_a_command_is_not_taken_for_one():
    command, args = MAIN.parse(["import-csv", "train", "--metal", "gold"])
    assert (command.name, str(args.path)) == ("import-csv", "train")


@pytest.mark.parametrize(
    "argv", [["--no-train", "train"], ["--demo", "backtest", "--csv", "x", "--column", "c"]]
)
def test_an_option_of_the_hourly_run_given_to_another_command_is_a_usage_error(argv, capsys):
    with pytest.raises(SystemExit) as stop:
        MAIN.parse(argv)
    assert stop.value.code == 2
    assert "is not an option of" in capsys.readouterr().err


def test_every_monitored_job_has_one_of_the_metric_labels():
    commands = [*MAIN.commands.values(), *BACKUPS.commands.values()]
    assert {c.job for c in commands if c.monitored} == JOB_LABELS
    assert MAIN.commands["import-csv"].job == "import_csv"  # the CLI spelling stays import-csv


def test_a_command_is_declared_once():
    program = CommandLine(prog="p", description="", epilog="")
    program.command("x")(lambda settings, args: 0)
    with pytest.raises(ValueError, match="declared twice"):
        program.command("x")(lambda settings, args: 0)
