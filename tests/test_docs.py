"""The documentation shows only commands, flags, links and tests that exist.

Every `edgelesion COMMAND --flag` and `python -m benchmarks.NAME --flag` in a code block of README.md,
CHANGELOG.md, docs/ or benchmarks/README.md is asked of the real argument parser, every relative link
must name a file of the repository, and every `tests/FILE.py::test_name` a test that is there.
"""

from __future__ import annotations

import argparse
import importlib
import re
import shlex
from pathlib import Path

import pytest

from edgelesion.cli import build_parser

REPO = Path(__file__).resolve().parent.parent
DOCS = sorted(
    [REPO / "README.md", REPO / "CHANGELOG.md", REPO / "benchmarks" / "README.md", *(REPO / "docs").glob("*.md")]
)
# pages another change adds to docs/; a link to one is not yet a broken link
PAGES_ADDED_ELSEWHERE = {"docs/sources.md"}

CODE_BLOCK = re.compile(r"```(?:bash|sh|shell)?\n(.*?)```", re.DOTALL)
INLINE_CODE = re.compile(r"`([^`\n]+)`")
LINK = re.compile(r"\]\(([^)\s]+)\)")
TEST_REFERENCE = re.compile(r"tests/(test_\w+\.py)(?:::(\w+))?")


def _docs() -> list[Path]:
    return [path for path in DOCS if path.is_file()]


def _commands(text: str) -> list[list[str]]:
    """Each `edgelesion ...` or `python -m benchmarks....` command of the text's code, as argument lists."""
    snippets = [line for block in CODE_BLOCK.findall(text) for line in block.splitlines()]
    snippets += INLINE_CODE.findall(text)
    commands = []
    for snippet in snippets:
        snippet = snippet.split("#", 1)[0].strip()
        for part in re.split(r"\s*(?:&&|;|\|)\s*", snippet):
            try:
                words = shlex.split(part)
            except ValueError:
                continue
            while words and ("=" in words[0] and not words[0].startswith("-") or words[0] in {"sudo", "then"}):
                words = words[1:]
            if not words:
                continue
            program = Path(words[0]).name
            # `edgelesion COMMAND --help` names no command; `edgelesion int8.tflite` is a file's name, not a command
            if program == "edgelesion" and len(words) > 1 and re.fullmatch(r"[a-z]+|--?[a-z-]+", words[1]):
                commands.append(words)
            elif (
                program.startswith("python") and words[1:3] and words[1] == "-m" and words[2].startswith("benchmarks.")
            ):
                commands.append(words[2:])
    return commands


def _flags(words: list[str]) -> list[str]:
    return [word.split("=", 1)[0] for word in words if word.startswith("--")]


def _benchmark_parser(module: str) -> argparse.ArgumentParser:
    """The parser a benchmark script builds in main(), caught before it parses anything."""
    captured: list[argparse.ArgumentParser] = []

    class Caught(Exception):
        pass

    original = argparse.ArgumentParser.parse_args

    def capture(self, *args, **kwargs):
        captured.append(self)
        raise Caught

    argparse.ArgumentParser.parse_args = capture
    try:
        importlib.import_module(module).main()
    except Caught:
        pass
    finally:
        argparse.ArgumentParser.parse_args = original
    assert captured, f"{module}.main() builds no argument parser"
    return captured[0]


def _option_strings(parser: argparse.ArgumentParser) -> set[str]:
    return {option for action in parser._actions for option in action.option_strings}


def _subcommand_parser(command: str) -> argparse.ArgumentParser | None:
    """The full parser of `edgelesion COMMAND`, or None if there is no such command."""
    parser = build_parser(command)
    sub = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction))
    return sub.choices.get(command)


def _shown_commands() -> list[tuple[str, list[str]]]:
    return [(path.relative_to(REPO).as_posix(), words) for path in _docs() for words in _commands(path.read_text())]


def test_the_docs_show_commands():
    shown = _shown_commands()
    assert any(words[0] == "edgelesion" for _, words in shown)
    assert any(words[0].startswith("benchmarks.") for _, words in shown)


def test_every_edgelesion_command_and_flag_shown_exists():
    missing = []
    for doc, words in _shown_commands():
        if words[0] != "edgelesion":
            continue
        command = words[1]
        if command.startswith("-"):
            missing += [f"{doc}: edgelesion {flag}" for flag in _flags(words) if flag not in {"--help", "--version"}]
            continue
        parser = _subcommand_parser(command)
        if parser is None:
            missing.append(f"{doc}: 'edgelesion {command}' is not a command")
            continue
        options = _option_strings(parser)
        missing += [f"{doc}: edgelesion {command} {flag}" for flag in _flags(words) if flag not in options]
    assert not missing, "shown but not in the CLI:\n" + "\n".join(missing)


def test_every_benchmark_and_flag_shown_exists():
    missing = []
    for doc, words in _shown_commands():
        if not words[0].startswith("benchmarks."):
            continue
        module = words[0]
        if not (REPO / (module.replace(".", "/") + ".py")).is_file():
            missing.append(f"{doc}: {module} is not a script in benchmarks/")
            continue
        options = _option_strings(_benchmark_parser(module))
        missing += [f"{doc}: {module} {flag}" for flag in _flags(words) if flag not in options]
    assert not missing, "shown but not in the benchmark scripts:\n" + "\n".join(missing)


@pytest.mark.parametrize("doc", _docs(), ids=lambda path: path.relative_to(REPO).as_posix())
def test_every_file_a_doc_links_to_exists(doc):
    broken = []
    for target in LINK.findall(doc.read_text()):
        if re.match(r"[a-z]+:", target) or target.startswith("#"):
            continue
        path = (doc.parent / target.split("#", 1)[0]).resolve()
        if path.relative_to(REPO).as_posix() in PAGES_ADDED_ELSEWHERE:
            continue
        if not path.exists():
            broken.append(target)
    assert not broken, f"{doc.name} links to files that do not exist: {broken}"


@pytest.mark.parametrize("doc", _docs(), ids=lambda path: path.relative_to(REPO).as_posix())
def test_every_test_a_doc_names_exists(doc):
    missing = []
    for file, name in TEST_REFERENCE.findall(doc.read_text()):
        path = REPO / "tests" / file
        if not path.is_file():
            missing.append(f"tests/{file}")
        elif name and not re.search(rf"^def {name}\(", path.read_text(), re.MULTILINE):
            missing.append(f"tests/{file}::{name}")
    assert not missing, f"{doc.name} names tests that do not exist: {missing}"


def test_every_benchmark_script_is_in_the_benchmarks_table():
    table = (REPO / "benchmarks" / "README.md").read_text()
    scripts = [path.stem for path in (REPO / "benchmarks").glob("*.py") if path.stem not in {"__init__", "common"}]
    absent = [name for name in scripts if f"benchmarks.{name}" not in table]
    assert not absent, f"benchmarks/README.md's table lacks {absent}"
