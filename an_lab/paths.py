"""One rule for the paths a user writes, the same in every command (the owner of that rule).

- A path written in a sweep file or a run config (`output_dir`, `data.root`, a `model.backbone_init` folder or file)
  is relative to the folder of that file, as in docker-compose or Snakemake files: `an-lab status ../s1.yaml` from a
  subfolder reads the same runs as `an-lab status s1.yaml` beside it.
- A path given on the command line (`--set data.root=...`, the arguments) is relative to the working directory.
- `~` and `$VARIABLE` / `${VARIABLE}` are expanded; a variable that is not set is an error, never a folder named
  `$HOME`.
- The result is absolute and normalised (`a/./b/` and `a/b` are one path); symbolic links are kept as written here
  (a run's identity resolves them: an_lab.identity). Every config a run records holds these absolute paths.
"""

from __future__ import annotations

import os
import re
from pathlib import Path

from an_lab.errors import UsageError

# The keys of a run config that hold paths (nested key tuples), anchored by `anchor_tree`.
PATH_KEYS = (("output_dir",), ("data", "root"))
_VARIABLE = re.compile(r"\$(\w+|\{[^}]*\})")


def expand(text: str, where: str) -> str:
    """`~` and environment variables expanded; an unset variable is a UsageError naming `where`."""
    expanded = os.path.expanduser(text)
    for match in _VARIABLE.finditer(expanded):
        name = match.group(1).strip("{}")
        if name not in os.environ:
            raise UsageError(
                f"{where}: {text!r} names the environment variable ${name}, which is not set; set it, or write "
                "the path out"
            )
    return os.path.expandvars(expanded)


def anchor(text: str, folder: Path | str, where: str) -> str:
    """The path `text` as an absolute, normalised path: `~` and variables expanded, a relative one read from
    `folder` (the folder of the file that wrote it, or the working directory for the command line)."""
    expanded = expand(text, where)
    return os.path.normpath(os.path.join(os.path.abspath(folder), expanded))


def anchor_tree(tree: dict, folder: Path | str, where: str) -> dict:
    """A copy of a run-config tree with its path keys (PATH_KEYS) that are set anchored at `folder`."""
    out = dict(tree)
    for path in PATH_KEYS:
        node, parents = out, path[:-1]
        for part in parents:
            child = node.get(part)
            if not isinstance(child, dict):
                break
            node[part] = node = dict(child)
        else:
            value = node.get(path[-1])
            if isinstance(value, str) and value.strip():
                node[path[-1]] = anchor(value, folder, f"{where}: {'.'.join(path)}")
    return out


def is_path_key(dotted: str) -> bool:
    """Whether a dotted run-config key (`data.root`, `output_dir`) holds a path."""
    return tuple(dotted.split(".")) in PATH_KEYS
