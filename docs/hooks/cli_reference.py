"""MkDocs hook: the command-line reference (``cli.md``), generated from the argparse parsers of ``vaekit.cli``.

The page is written at every build from ``vaekit.cli.build_parser()``: one section per sub-command with its
description, its usage line and a table of its arguments (flags, value names and help as ``--help`` shows them),
so that it cannot drift from the command. Plugins are not loaded: the page documents vaekit's own components.
"""

from __future__ import annotations

import argparse
import html
import re
from typing import Any

from mkdocs.structure.files import File, Files

PAGE = "cli.md"
WIDTH = 88  # usage lines are wrapped at this many characters

_MARKDOWN = re.compile(r"([\\`*_\[\]<>|#])")


def text(value: str) -> str:
    """Plain text safe inside Markdown (and in a table cell): no emphasis, links, HTML or cell breaks."""
    return _MARKDOWN.sub(r"\\\1", html.unescape(value))


def _formatter(parser: argparse.ArgumentParser) -> argparse.HelpFormatter:
    return parser.formatter_class(prog=parser.prog, width=WIDTH, max_help_position=40)


def _usage(parser: argparse.ArgumentParser) -> str:
    formatter = _formatter(parser)
    formatter.add_usage(parser.usage, parser._actions, parser._mutually_exclusive_groups)
    return formatter.format_help().strip()


def _flags(action: argparse.Action, formatter: argparse.HelpFormatter) -> str:
    if not action.option_strings:
        return f"`{formatter._metavar_formatter(action, action.dest)(1)[0]}`"
    if action.nargs == 0:
        return ", ".join(f"`{flag}`" for flag in action.option_strings)
    metavar = formatter._format_args(action, action.dest.upper())
    return ", ".join(f"`{flag} {metavar}`" for flag in action.option_strings)


def _arguments(parser: argparse.ArgumentParser) -> list[str]:
    formatter = _formatter(parser)
    lines: list[str] = []
    for group in parser._action_groups:
        actions = [a for a in group._group_actions if a.help is not argparse.SUPPRESS
                   and not isinstance(a, (argparse._HelpAction, argparse._SubParsersAction))]
        if not actions:
            continue
        lines += ["", f"**{text(group.title or 'arguments')}**", "", "| argument | meaning |", "|---|---|"]
        for action in actions:
            help_text = formatter._expand_help(action) if action.help else ""
            if action.choices and not isinstance(action.choices, dict):
                help_text += f" (one of: {', '.join(map(str, action.choices))})"
            lines.append(f"| {_flags(action, formatter)} | {text(' '.join(help_text.split()))} |")
    return lines


def _description(parser: argparse.ArgumentParser) -> list[str]:
    paragraphs = re.split(r"\n\s*\n", (parser.description or "").strip())
    return [text(" ".join(p.split())) + "\n" for p in paragraphs if p.strip()]


def _subcommands(parser: argparse.ArgumentParser) -> dict[str, tuple[argparse.ArgumentParser, str]]:
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help or "" for choice in action._choices_actions}
            return {name: (sub, helps.get(name, "")) for name, sub in action.choices.items()}
    return {}


def render() -> str:
    """The page, in Markdown."""
    from vaekit.cli import build_parser

    parser = build_parser()
    commands = _subcommands(parser)
    lines = ["# Command line", "",
             "The `vaekit` command and its sub-commands, as `vaekit COMMAND --help` shows them (this page is generated "
             "from the same parsers). Every command answers bad input with one line saying what to fix and exit "
             "status 2; `--json` makes a command print one JSON object as the last line of its output.", "",
             "```text", _usage(parser), "```", "", "| command | what it does |", "|---|---|"]
    lines += [f"| [`vaekit {name}`](#vaekit-{name}) | {text(help_)} |" for name, (_, help_) in commands.items()]
    for name, (sub, _) in commands.items():
        lines += ["", f"## vaekit {name} {{#vaekit-{name}}}", "", *_description(sub), "```text", _usage(sub), "```"]
        lines += _arguments(sub)
    return "\n".join(lines) + "\n"


def on_files(files: Files, config: Any) -> Files:
    files.append(File.generated(config, PAGE, content=render()))
    return files
