"""The README tells the same story as the code: its help blocks are the real --help, its
lists of what --redact masks come from redact.py."""

from __future__ import annotations

import re
from pathlib import Path

import pytest
from click.testing import CliRunner

from hep2pcap.cli import cli
from hep2pcap.redact import MASKED, NOT_MASKED

README = Path(__file__).resolve().parents[1] / "README.md"
BLOCK = re.compile(r"<!-- help: (?P<cmd>[\w ]+) -->\n```text\n(?P<body>.*?)```", re.S)
REDACT = re.compile(r"<!-- redact: (?P<what>[\w-]+) -->(?P<body>.*?)<!-- end redact -->", re.S)


def _redact_list(what: str) -> str:
    # The README's lists of what --redact masks and does not mask, from redact.py.
    if what == "masked":
        return "\n" + "".join(f"* `{name}`: {text}\n" for name, text in MASKED.items())
    return "; ".join(NOT_MASKED) + ". "


def _help(cmd: str) -> str:
    result = CliRunner().invoke(
        cli, [*cmd.split(), "--help"], prog_name="hep2pcap", catch_exceptions=False
    )
    assert result.exit_code == 0
    return result.stdout


def _blocks() -> list[tuple[str, str]]:
    return [(m["cmd"], m["body"]) for m in BLOCK.finditer(README.read_text())]


def test_readme_has_help_blocks() -> None:
    assert [cmd for cmd, _ in _blocks()], "README lost its <!-- help: ... --> blocks"


@pytest.mark.parametrize(("cmd", "body"), _blocks())
def test_readme_help_block_is_current(cmd: str, body: str) -> None:
    assert _help(cmd) == body, f"README's help for '{cmd}' is stale: run `make docs`"


def test_readme_redact_lists_are_current() -> None:
    found = {m["what"]: m["body"] for m in REDACT.finditer(README.read_text())}
    assert set(found) == {"masked", "not-masked"}, "README lost its redact lists"
    for what, body in found.items():
        assert body == _redact_list(what), f"README's redact list '{what}' is stale: make docs"


def test_readme_shows_the_two_commands() -> None:
    text = README.read_text()
    assert "make run" in text
    assert "make test" in text
    ci = (README.parent / ".ci" / "run").read_text()
    assert "make test" in ci


def write_readme() -> None:
    """`make docs`: paste the current --help into every README help block."""
    text = README.read_text()
    text = BLOCK.sub(lambda m: f"<!-- help: {m['cmd']} -->\n```text\n{_help(m['cmd'])}```", text)
    text = REDACT.sub(
        lambda m: f"<!-- redact: {m['what']} -->{_redact_list(m['what'])}<!-- end redact -->", text
    )
    README.write_text(text)


if __name__ == "__main__":
    write_readme()
