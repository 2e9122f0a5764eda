"""`agiqa --help` pages read like a well-kept CLI's, and `agiqa --version` works."""

from __future__ import annotations

import re
from importlib import metadata

import pytest
from typer.main import get_command
from typer.testing import CliRunner

import agiqa
from agiqa.cli import app

runner = CliRunner()


def command_paths() -> list[list[str]]:
    """Every command and group of the CLI, as argument lists (``[]`` is the top level)."""
    root = get_command(app)
    found: list[list[str]] = []

    def walk(command, path: list[str]) -> None:
        found.append(path)
        for name, child in getattr(command, "commands", {}).items():
            walk(child, [*path, name])

    walk(root, [])
    return found


def help_page(path: list[str], columns: int) -> str:
    result = runner.invoke(app, [*path, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def option_names(path: list[str]) -> list[str]:
    command = get_command(app)
    for name in path:
        command = command.commands[name]
    return [o for p in command.params for o in (*p.opts, *p.secondary_opts) if o.startswith("-")]


def test_version() -> None:
    result = runner.invoke(app, ["--version"])
    assert result.exit_code == 0
    assert result.output == f"agiqa {metadata.version('agiqa')}\n"
    assert agiqa.__version__ == metadata.version("agiqa")


@pytest.mark.parametrize("columns", [80, 120])
def test_every_help_page_shows_whole_option_names_and_no_markup(columns: int) -> None:
    paths = command_paths()
    assert ["score"] in paths and ["datasets", "check"] in paths
    for path in paths:
        page = help_page(path, columns)
        where = " ".join(["agiqa", *path])
        assert "``" not in page, where  # reST backticks of a docstring
        assert "<bool>" not in page, where  # a flag takes no value
        assert "…" not in page, where  # nothing cut to fit
        assert all(len(line) <= columns for line in page.splitlines()), where
        for name in option_names(path):
            assert re.search(rf"(?<![\w-]){re.escape(name)}(?![\w-])", page), (where, name)


def test_docstring_paragraphs_are_reflowed_not_broken_where_the_source_breaks() -> None:
    # The docstring breaks its line after "random weights,": the page must not.
    page = help_page(["models", "list"], 200)
    assert "with random weights, so the sizes show" in page
    page = help_page([], 200)
    assert "The agiqa command: the steps the workflow's rules run, for use by hand." in page
