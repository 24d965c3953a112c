"""``parcelscan`` help: every command a verb has is named where a user looks for it.

Issue 11 item 8: ``parcelscan data --help`` said "dataset tools: check, split, import, convert" and left
out ``stats``, so a user reading the help never learnt it existed. The one-line summary of a verb is
written by hand (``cli.VERBS``); this test reads the real parsers and fails when a command is added to a
verb without being named in its summary, in ``parcelscan --help`` and in ``parcelscan VERB --help``.
"""

from __future__ import annotations

import argparse
import ast
import subprocess
import sys

import pytest

from parcelscan.cli import build_parser, main


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, argparse.ArgumentParser]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            return dict(action.choices)
    return {}


VERB_PARSERS = _subcommands(build_parser()[0])
VERBS_WITH_COMMANDS = sorted(verb for verb, parser in VERB_PARSERS.items() if _subcommands(parser))


def test_the_verbs_with_commands_are_found():
    assert {"data", "review", "models"} <= set(VERB_PARSERS), sorted(VERB_PARSERS)
    assert {"data", "review", "models"} <= set(VERBS_WITH_COMMANDS)


def _summary(help_text: str, verb: str) -> str:
    """The line of ``parcelscan --help`` that describes ``verb`` (argparse may wrap it)."""
    lines = help_text.splitlines()
    start = next(i for i, line in enumerate(lines) if line.strip().startswith(verb + " "))
    summary = [lines[start].strip()[len(verb):]]
    for line in lines[start + 1:]:
        if not line.startswith(" " * 8) or not line.strip():
            break
        summary.append(line.strip())
    return " ".join(summary)


@pytest.mark.parametrize("verb", VERBS_WITH_COMMANDS)
def test_every_command_is_named_in_the_help(verb, capsys):
    commands = sorted(_subcommands(VERB_PARSERS[verb]))
    with pytest.raises(SystemExit) as stop:
        main(["--help"])
    assert stop.value.code == 0
    top = _summary(capsys.readouterr().out, verb)
    with pytest.raises(SystemExit) as stop:
        main([verb, "--help"])
    assert stop.value.code == 0
    own = capsys.readouterr().out
    description = own.split("\n\n")[1]  # usage, blank line, description
    for command in commands:
        assert command in top.replace(",", " ").split(), (verb, command, top)
        assert command in description.replace(",", " ").replace(":", " ").split(), (verb, command, description)


def test_data_help_lists_stats(capsys):
    with pytest.raises(SystemExit):
        main(["data", "--help"])
    out = capsys.readouterr().out
    assert "check, split, import, convert, merge, stats" in out
    assert "stats" in out.split("positional arguments:")[1]


def _verb_modules_loaded(*argv: str) -> list[str]:
    """Run the CLI in a fresh interpreter; the verb modules and torch modules it imported."""
    code = ("import sys\nfrom parcelscan.cli import VERBS, main\n"
            "try:\n    main(sys.argv[1:])\nexcept SystemExit:\n    pass\n"
            "names = {module for module, _ in VERBS.values()} | {'torch'}\n"
            "print(sorted(m for m in sys.modules if m in names))\n")
    result = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return ast.literal_eval(result.stdout.strip().splitlines()[-1])


def test_only_the_verb_on_the_command_line_is_imported():
    """The lazy per-verb dispatch: `parcelscan --help` imports no verb, `parcelscan data ...` only `data`
    (its module may import the dataset tools at its top without slowing or burdening the station)."""
    assert _verb_modules_loaded("--help") == []
    assert _verb_modules_loaded("data", "--help") == ["parcelscan.datasets.data_cli"]
    assert _verb_modules_loaded("inspect", "--help") == ["parcelscan.inference.inspect_cli"]
