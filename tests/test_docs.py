"""The documentation stays true to the code: every command and option that --help prints is in
docs/cli.md, the README stays under 20 KB, and every relative link points to a file (and
heading) that exists."""

from __future__ import annotations

import argparse
import re
from pathlib import Path

import pytest

from source.commands.backups import BACKUPS
from source.commands.main import MAIN

REPO = Path(__file__).resolve().parent.parent
README = REPO / "README.md"
CLI_DOC = REPO / "docs" / "cli.md"
PAGES = [README, *sorted((REPO / "docs").glob("*.md"))]
README_LIMIT = 20_000
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def _options(parser: argparse.ArgumentParser) -> set[str]:
    """The long option strings --help shows (hidden ones left out)."""
    return {
        option
        for action in parser._actions
        if action.help != argparse.SUPPRESS
        for option in action.option_strings
        if option.startswith("--") and option != "--help"
    }


def _subparsers(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    return {
        name: sub
        for action in parser._actions
        if isinstance(action, argparse._SubParsersAction)
        for name, sub in action.choices.items()
    }


def _commands() -> dict[str, argparse.ArgumentParser]:
    """Every command a user can type, by the heading words it has in docs/cli.md."""
    commands = {}
    for program in (MAIN, BACKUPS):
        parser = program.build_parser()
        commands[program.prog] = parser
        commands.update({f"{program.prog} {n}": p for n, p in _subparsers(parser).items()})
    return commands


def _sections(text: str) -> dict[str, str]:
    """Heading line -> the text up to the next heading."""
    parts = re.split(r"^(#{1,6} .*)$", text, flags=re.M)
    return {parts[i]: parts[i + 1] for i in range(1, len(parts) - 1, 2)}


def _section_of(command: str, sections: dict[str, str]) -> str | None:
    """The section whose heading names this command (`python main.py backfill`, ...) and not
    one of its subcommands."""
    wanted = command.split()
    for heading, body in sections.items():
        code = re.findall(r"`([^`]*)`", heading)
        words = code[0].removeprefix("python ").split() if code else []
        rest = words[len(wanted):]
        if words[: len(wanted)] == wanted and not (rest and rest[0] in _SUBCOMMAND_WORDS):
            return body
    return None


_SUBCOMMAND_WORDS = {c.split()[-1] for c in _commands() if " " in c}


def test_every_command_has_help_that_argparse_can_print(capsys):
    for command, parser in _commands().items():
        with pytest.raises(SystemExit) as stop:
            parser.parse_args(["--help"])
        assert stop.value.code == 0, command
        assert "usage:" in capsys.readouterr().out, command


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_and_option_is_in_the_command_reference(command):
    sections = _sections(CLI_DOC.read_text())
    body = _section_of(command, sections)
    assert body is not None, f"docs/cli.md has no heading for `{command}`"
    missing = sorted(o for o in _options(_commands()[command]) if f"`{o}" not in body)
    assert not missing, f"docs/cli.md, `{command}`: options not documented: {missing}"


def test_every_option_is_somewhere_in_the_docs():
    text = "\n".join(page.read_text() for page in PAGES)
    everywhere = set().union(*(_options(p) for p in _commands().values()))
    assert not sorted(o for o in everywhere if o not in text)


def test_the_readme_is_at_most_20_kb():
    size = len(README.read_bytes())
    assert size <= README_LIMIT, f"README.md is {size} bytes, more than {README_LIMIT}"


def _anchors(page: Path) -> set[str]:
    """GitHub's anchors of a page's headings: lower case, punctuation dropped, spaces to -."""
    anchors = set()
    for heading in re.findall(r"^#{1,6} (.*)$", page.read_text(), flags=re.M):
        slug = re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")
        anchors.add(slug)
    return anchors


def _relative_links(page: Path) -> list[str]:
    text = re.sub(r"```.*?```", "", page.read_text(), flags=re.S)  # not links inside code
    return [t for t in LINK.findall(text) if not re.match(r"[a-z]+:", t)]


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_point_to_files_and_headings_that_exist(page):
    broken = []
    for target in _relative_links(page):
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and file.suffix == ".md" and anchor not in _anchors(file):
            broken.append(f"{target}: no such heading")
    assert not broken, f"{page.relative_to(REPO)}: {broken}"


def test_the_readme_links_every_docs_page():
    text = README.read_text()
    assert [p.name for p in PAGES[1:] if f"docs/{p.name}" not in text] == []


def _fact_classes(cls, seen: dict | None = None) -> dict[str, type]:
    """The dataclass and every dataclass its fields hold (in lists, dicts, optionals)."""
    import dataclasses
    import typing

    seen = {} if seen is None else seen
    seen[cls.__name__] = cls
    pending = list(typing.get_type_hints(cls).values())
    while pending:
        kind = pending.pop()
        pending.extend(typing.get_args(kind))
        if dataclasses.is_dataclass(kind) and kind.__name__ not in seen:
            _fact_classes(kind, seen)
    return seen


def test_every_status_fact_is_in_its_doc():
    """Each JSON key of `status --json` (a field of source/facts.py's dataclasses) is listed in
    docs/status.md, in the section named after its dataclass."""
    import dataclasses

    from source.facts import StatusFacts

    sections = _sections((REPO / "docs" / "status.md").read_text())
    missing = []
    for name, cls in sorted(_fact_classes(StatusFacts).items()):
        body = next((b for h, b in sections.items() if f"(`{name}`)" in h), None)
        if body is None:
            missing.append(f"no section for {name}")
            continue
        missing += [
            f"{name}.{f.name}"
            for f in dataclasses.fields(cls)
            if f.metadata.get("json", True) and f"`{f.name}`" not in body
        ]
    assert not missing, f"docs/status.md lacks: {missing}"
