"""Shell completion scripts written from the parser itself, for shells without argcomplete."""

from __future__ import annotations

import argparse
import shlex


def _structure(parser: argparse.ArgumentParser) -> dict[str, dict[str, list[str]]]:
    """command -> option -> its choices (empty: free value or flag); '' -> the choices of the positional, if any."""
    tree: dict[str, dict[str, list[str]]] = {}
    for action in parser._actions:
        if isinstance(action, argparse._SubParsersAction):
            for name, sub in action.choices.items():
                options: dict[str, list[str]] = {}
                for item in sub._actions:
                    choices = [str(choice) for choice in item.choices or ()]
                    for flag in item.option_strings:
                        options[flag] = choices
                    if not item.option_strings and choices:
                        options[""] = choices
                tree[name] = options
    return tree


def script(parser: argparse.ArgumentParser, shell: str) -> str:
    tree = _structure(parser)
    cases = []
    for name, options in tree.items():
        flags = " ".join(sorted(flag for flag in options if flag))
        lines = [f"    {name})"]
        for flag, choices in options.items():
            if flag and choices:
                lines.append(
                    f"      if [[ $prev == {flag} ]]; then COMPREPLY=($(compgen -W {shlex.quote(' '.join(choices))} "
                    '-- "$cur")); return; fi'
                )
        positional = " ".join(options.get("", []))
        lines.append(
            f'      if [[ $cur == -* ]]; then COMPREPLY=($(compgen -W {shlex.quote(flags)} -- "$cur")); '
            + (
                f'else COMPREPLY=($(compgen -W {shlex.quote(positional)} -- "$cur")); fi'
                if positional
                else 'else COMPREPLY=($(compgen -f -- "$cur")); fi'
            )
        )
        lines.append("      ;;")
        cases.append("\n".join(lines))
    commands = " ".join(tree)
    body = f"""_an_lab() {{
  local cur=${{COMP_WORDS[COMP_CWORD]}} prev=${{COMP_WORDS[COMP_CWORD-1]}} command=${{COMP_WORDS[1]}}
  if (( COMP_CWORD == 1 )); then
    COMPREPLY=($(compgen -W {shlex.quote(commands + " --help --version")} -- "$cur")); return
  fi
  case $command in
{chr(10).join(cases)}
  esac
}}
complete -o default -F _an_lab an-lab"""
    if shell == "zsh":
        return "autoload -U +X bashcompinit && bashcompinit\n" + body
    return body
