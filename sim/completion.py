"""Shell completion for ``migsim``, written from the command line's own ``argparse`` parser, so a
new subcommand or option completes without anyone editing a script.

``migsim completion bash`` prints a bash function (``_migsim``) and its ``complete`` line;
``migsim completion zsh`` prints the same function behind zsh's ``bashcompinit``. They complete
the subcommands, each subcommand's options, the values of options and arguments that have
``choices`` (``--match``, ``bash|zsh``), and file names elsewhere.

argparse has no public way to list a parser's options; this module reads its ``_actions`` (the
standard library's, stable since Python 3.2).
"""

from __future__ import annotations

import argparse
from dataclasses import dataclass, field

SHELLS: tuple[str, ...] = ("bash", "zsh")
FUNCTION = "_migsim"


@dataclass
class Command:
    """What completes after one subcommand: its options, the choices of options that take
    them, and the choices of its first positional argument (if it has any)."""

    options: list[str] = field(default_factory=list)
    option_choices: dict[str, list[str]] = field(default_factory=dict)
    positional_choices: list[str] = field(default_factory=list)


def _read(parser: argparse.ArgumentParser) -> Command:
    command = Command()
    for action in parser._actions:  # noqa: SLF001 (argparse has no public accessor)
        if action.option_strings:
            command.options += [o for o in action.option_strings if o.startswith("--")]
            command.options += [o for o in action.option_strings if not o.startswith("--")]
            if action.choices is not None:
                for option in action.option_strings:
                    command.option_choices[option] = [str(c) for c in action.choices]
        elif action.choices is not None and not isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            command.positional_choices = [str(c) for c in action.choices]
    return command


def commands(parser: argparse.ArgumentParser) -> tuple[Command, dict[str, Command]]:
    """The top-level options and, per subcommand name, what completes after it."""
    top = _read(parser)
    subs: dict[str, Command] = {}
    for action in parser._actions:  # noqa: SLF001
        if isinstance(action, argparse._SubParsersAction):  # noqa: SLF001
            for name, sub in action.choices.items():
                subs[name] = _read(sub)
    return top, subs


def _words(items: list[str]) -> str:
    return " ".join(dict.fromkeys(items))


def bash_script(parser: argparse.ArgumentParser, prog: str = "migsim") -> str:
    """A bash completion script for ``prog`` (``source <(migsim completion bash)``)."""
    top, subs = commands(parser)
    cases = []
    values = []
    for name, cmd in subs.items():
        positional = (f'; choices="{_words(cmd.positional_choices)}"'
                      if cmd.positional_choices else "")
        cases.append(f'        {name}) opts="{_words(cmd.options)}"{positional} ;;')
        for option, choices in cmd.option_choices.items():
            values.append(f'        {name}:{option}) COMPREPLY=($(compgen -W "{_words(choices)}"'
                          f' -- "$cur")); return ;;')
    lines = [
        f"# {prog} completion for bash, generated from its argparse parser "
        f"({prog} completion bash)",
        f"{FUNCTION}() {{",
        '    local cur="${COMP_WORDS[COMP_CWORD]}" prev="${COMP_WORDS[COMP_CWORD-1]}"',
        '    local cmd="" opts="" choices="" i',
        "    for ((i = 1; i < COMP_CWORD; i++)); do",
        '        case "${COMP_WORDS[i]}" in -*) ;; *) cmd="${COMP_WORDS[i]}"; break ;; esac',
        "    done",
        '    if [[ -z "$cmd" ]]; then',
        f'        COMPREPLY=($(compgen -W "{_words(list(subs))} {_words(top.options)}"'
        ' -- "$cur"))',
        "        return",
        "    fi",
        '    case "$cmd:$prev" in',
        *values,
        "    esac",
        '    case "$cmd" in',
        *cases,
        "    esac",
        '    if [[ "$cur" == -* ]]; then',
        '        COMPREPLY=($(compgen -W "$opts" -- "$cur"))',
        '    elif [[ -n "$choices" ]]; then',
        '        COMPREPLY=($(compgen -W "$choices" -- "$cur"))',
        "    else",
        '        COMPREPLY=($(compgen -f -- "$cur"))',
        "    fi",
        "}",
        f"complete -o filenames -F {FUNCTION} {prog}",
    ]
    return "\n".join(lines) + "\n"


def zsh_script(parser: argparse.ArgumentParser, prog: str = "migsim") -> str:
    """The bash script behind zsh's ``bashcompinit`` (``source <(migsim completion zsh)``)."""
    return ("# zsh: the bash completion through bashcompinit\n"
            "autoload -U +X bashcompinit && bashcompinit\n" + bash_script(parser, prog))


def script(shell: str, parser: argparse.ArgumentParser, prog: str = "migsim") -> str:
    if shell == "zsh":
        return zsh_script(parser, prog)
    return bash_script(parser, prog)
