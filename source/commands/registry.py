"""The one pattern of main.py and backups_main.py: each command is declared once, beside its
handler, with its options and its policy (job name, lock, folders, API key, monitoring); one
runner turns a parsed command line into settings, checks, the lock and the handler's run."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Callable, Collection
from dataclasses import dataclass, field
from datetime import UTC, datetime
from functools import partial
from pathlib import Path
from typing import Any

from source.config import ConfigError, Settings, check_folder, load_settings
from source.console import quiet_when_pipe_closes
from source.entrypoint import run_locked
from source.errors import EXIT_USAGE, ReportableError

Handler = Callable[[Settings, argparse.Namespace], int]
ByArgs = Callable[[argparse.Namespace], bool]


@dataclass(frozen=True)
class Option:
    """One `add_argument` call, kept to be applied to the parser of each command that lists it."""

    flags: tuple[str, ...]
    kwargs: dict[str, Any]

    @property
    def dest(self) -> str:
        if "dest" in self.kwargs:
            return self.kwargs["dest"]
        name = next((f for f in self.flags if f.startswith("--")), self.flags[0])
        return name.lstrip("-").replace("-", "_")


def option(*flags: str, **kwargs: Any) -> Option:
    """An option (or positional) as `ArgumentParser.add_argument` takes it."""
    return Option(flags, kwargs)


def demo_option(help: str) -> Option:
    """`--demo`, shared by both programs; each says what it means there."""
    return option("--demo", action="store_true", help=help)


@dataclass(frozen=True)
class Lock:
    """A command's lock file, in the folder a setting names (that folder is checked first)."""

    folder: str  # the variable, e.g. DATA_DIR
    file: str

    def path(self, settings: Settings) -> Path:
        return folder_of(settings, self.folder) / self.file


PIPELINE_LOCK = Lock("DATA_DIR", ".pipeline.lock")  # every writer of main.py, and restore
BACKUP_LOCK = Lock("BACKUP_DIR", ".backup.lock")


def folder_of(settings: Settings, variable: str) -> Path:
    return getattr(settings, variable.lower())


@dataclass(frozen=True)
class Command:
    """A command and its policy. `name` None: the program's default run, options at the top."""

    name: str | None
    handler: Handler
    help: str = ""  # its line in the program's command list
    description: str = ""
    epilog: str = ""
    options: tuple[Option, ...] = ()
    # The job's one name: ledger (pipeline_runs.command), metrics `job` label, logger name.
    job: str | None = None
    monitored: bool = False  # reports to the monitors (metrics) when it ends
    ping: bool = False  # a scheduled job: pings its healthcheck too
    lock: Lock | None = None
    reads: ByArgs | None = None  # true: this call only reads, no lock, no lock folder
    folders: tuple[str, ...] = ()  # folders written besides LOG_DIR and the lock's
    # True: the command fetches from the API (key required; --demo checks the feed's units);
    # a function of the arguments: the key is needed only then (status --api).
    api_key: bool | ByArgs = False
    check: Callable[[argparse.Namespace], None] | None = None  # ConfigError: exit 2
    settings: bool = True  # False: the handler gets None and runs bare
    logged: bool = True  # False: no log file, lock or monitors (a quick listing)
    demo_seeds: bool = False  # under --demo the first run seeds history first

    def writes(self, args: argparse.Namespace) -> bool:
        return self.lock is not None and not (self.reads and self.reads(args))

    def needs_api_key(self, args: argparse.Namespace) -> bool:
        return self.api_key(args) if callable(self.api_key) else self.api_key


@dataclass
class CommandLine:
    """One program (main.py, backups_main.py): its commands, parser and runner."""

    prog: str
    description: str
    epilog: str
    default: str | None = None  # the command run when none is named (None: `name=None` one)
    options: tuple[Option, ...] = ()  # the program's own options (besides the default's)
    demo_feed: bool = False  # --demo also points the API at the local sandbox feed
    # A closed stdout (`status | head`) ends a command quietly, exit 0. Not for backups: a
    # create cut short there must not look done.
    quiet_pipe: bool = False
    commands: dict[str | None, Command] = field(default_factory=dict)

    def command(self, name: str | None = None, **policy: Any) -> Callable[[Handler], Handler]:
        """Declare the decorated handler as command `name`, with its options and policy."""

        def register(handler: Handler) -> Handler:
            if name in self.commands:
                raise ValueError(f"{self.prog}: command {name!r} declared twice")
            self.commands[name] = Command(name, handler, **policy)
            return handler

        return register

    def build_parser(self) -> argparse.ArgumentParser:
        top = self.commands.get(None)
        parser = argparse.ArgumentParser(
            prog=self.prog,
            description=self.description,
            epilog=self.epilog,
            formatter_class=argparse.RawDescriptionHelpFormatter,
        )
        top_options = (*self.options, *(top.options if top else ()))
        _add(parser, top_options)
        shared = {o.dest for o in top_options}
        named = [c for c in self.commands.values() if c.name is not None]
        subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
        for command in named:
            assert command.name is not None, "named: the program's own command is left out"
            sub = subparsers.add_parser(
                command.name,
                prog=f"{self.prog} {command.name}",
                help=command.help,
                description=command.description or command.help,
                epilog=command.epilog or None,
                formatter_class=argparse.RawDescriptionHelpFormatter,
            )
            # An option the program also takes before the command keeps that value when it is
            # not repeated after it: `main.py --demo train` = `main.py train --demo`.
            _add(sub, command.options, suppress=shared)
        return parser

    def parse(self, argv: list[str] | None) -> tuple[Command, argparse.Namespace]:
        parser = self.build_parser()
        args = parser.parse_args(argv)
        command = self.commands[args.command or self.default]
        if args.command is not None:
            _refuse_options_of_another(parser, command, args, self.commands.get(None))
        return command, args

    def main(self, argv: list[str] | None = None, *, now: datetime | None = None) -> int:
        """Parse, build the settings, check them and the arguments (exit 2), run the command."""
        command, args = self.parse(argv)
        # What every handler may read besides its options: its job's name and the run's time.
        args.job, args.now = command.job, now or datetime.now(UTC)
        if not command.settings:
            return command.handler(None, args)  # type: ignore[arg-type]
        try:
            settings = self._settings(command, args)
        except (ConfigError, ReportableError) as exc:
            kind = "configuration error" if isinstance(exc, ConfigError) else "usage error"
            print(f"{self.prog}: {kind}: {exc}", file=sys.stderr)
            return EXIT_USAGE
        step: Callable[[Settings], int] = partial(_call, command.handler, args=args)
        if settings.demo and self.demo_feed:
            from source.demo import with_sandbox

            step = partial(with_sandbox, step, seed=command.demo_seeds)
        if not command.logged:
            return step(settings)
        run: Callable[[], int] = partial(step, settings)
        if self.quiet_pipe:
            run = partial(quiet_when_pipe_closes, run)
        lock = command.lock.path(settings) if command.lock and command.writes(args) else None
        return run_locked(
            self.prog,
            settings,
            lock,
            run,
            job=command.job if command.monitored else None,
            ping=command.ping,
        )

    def _settings(self, command: Command, args: argparse.Namespace) -> Settings:
        """The settings, every folder the command writes, then its own checks of its arguments."""
        settings = load_settings(
            demo=getattr(args, "demo", False), require_api_key=command.needs_api_key(args)
        ).with_metals(getattr(args, "metals", None))
        folders = ["LOG_DIR"]  # every command logs
        if command.writes(args):
            folders.append(command.lock.folder)  # type: ignore[union-attr]
        for variable in [*folders, *command.folders]:
            check_folder(variable, folder_of(settings, variable))
        if settings.demo and self.demo_feed and command.api_key is True:
            from source.demo import check_demo_units

            check_demo_units(settings)
        if command.check is not None:
            command.check(args)
        return settings


def _call(handler: Handler, settings: Settings, *, args: argparse.Namespace) -> int:
    return handler(settings, args)


def _add(
    parser: argparse.ArgumentParser,
    options: tuple[Option, ...],
    suppress: Collection[str] = frozenset(),
) -> None:
    for opt in options:
        kwargs = dict(opt.kwargs)
        if opt.dest in suppress:
            kwargs["default"] = argparse.SUPPRESS
        parser.add_argument(*opt.flags, **kwargs)


def _refuse_options_of_another(
    parser: argparse.ArgumentParser,
    command: Command,
    args: argparse.Namespace,
    default: Command | None,
) -> None:
    """`main.py --no-train train`: an option of the default run given to another command."""
    own = {o.dest for o in command.options}
    for opt in default.options if default else ():
        if opt.dest not in own and getattr(args, opt.dest) != parser.get_default(opt.dest):
            parser.error(f"{opt.flags[0]} is not an option of {command.name}")
