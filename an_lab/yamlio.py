"""Reading the YAML files users write (run configs, sweep files): bounded, safe, parsed once.

- Only regular files are read (a FIFO would block forever, /dev/zero would fill the memory), at most MAX_FILE_BYTES.
- Safe loading: tags such as !!python/object are errors, never code. libyaml's C parser is used where installed.
- The file is composed into a node tree once; aliases are expanded only after counting what they expand to (a
  "billion laughs" file is refused), and the same tree gives the line of every key for error messages.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

import yaml

from an_lab.errors import UsageError

MAX_FILE_BYTES = 4 * 1024 * 1024  # a hand-written sweep of 10,000 listed cells is about 1 MB
MAX_VALUES = 100_000  # values in the file once YAML aliases are expanded (a "billion laughs" file has 10**9)
_LOADER = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


def read_text(path: Path, what: str = "file") -> str:
    """The text of a regular file of at most MAX_FILE_BYTES, or a UsageError that names the file."""
    try:
        info = os.stat(path)
    except OSError as error:
        raise UsageError(f"{path}: cannot read the {what} ({error.strerror})") from None
    if not stat.S_ISREG(info.st_mode):
        kind = "a folder" if stat.S_ISDIR(info.st_mode) else "not a regular file (a device, pipe or socket)"
        raise UsageError(f"{path}: the {what} is {kind}; give a YAML file")
    if info.st_size > MAX_FILE_BYTES:
        raise UsageError(f"{path}: the {what} has {info.st_size:,} bytes, more than the {MAX_FILE_BYTES:,} read")
    try:
        with open(path, "rb") as handle:
            data = handle.read(MAX_FILE_BYTES + 1)
    except OSError as error:
        raise UsageError(f"{path}: cannot read the {what} ({error.strerror})") from None
    if len(data) > MAX_FILE_BYTES:
        raise UsageError(f"{path}: the {what} grew past the {MAX_FILE_BYTES:,} bytes read")
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as error:
        raise UsageError(f"{path}: the {what} is not UTF-8 text (byte {error.start})") from None


def expanded_size(node: yaml.Node, sizes: dict[int, int], path: set[int]) -> int:
    """Values in the node once aliases are expanded (shared nodes counted once each time they are used)."""
    if id(node) in sizes:
        return sizes[id(node)]
    if id(node) in path:
        raise ValueError("a YAML alias refers to a collection that contains it")
    path.add(id(node))
    children: list[yaml.Node] = []
    if isinstance(node, yaml.MappingNode):
        children = [value for _, value in node.value]
    elif isinstance(node, yaml.SequenceNode):
        children = list(node.value)
    size = 1
    for child in children:
        size += expanded_size(child, sizes, path)
        if size > MAX_VALUES:
            break
    path.discard(id(node))
    sizes[id(node)] = size
    return size


def parse(text: str, source: str) -> tuple[object, yaml.Node | None]:
    """(data, root node) of YAML text, parsed once; UsageError naming the source and line on any problem."""
    loader = _LOADER(text)
    try:
        root = loader.get_single_node()
        if root is None:
            return None, None
        if expanded_size(root, {}, set()) > MAX_VALUES:
            raise ValueError(f"the YAML expands to more than {MAX_VALUES:,} values through its aliases")
        return loader.construct_document(root), root
    except yaml.YAMLError as error:
        mark = getattr(error, "problem_mark", None)
        where = f" at line {mark.line + 1}, column {mark.column + 1}" if mark else ""
        raise UsageError(f"{source}: not valid YAML{where}: {getattr(error, 'problem', None) or error}") from None
    except (ValueError, RecursionError) as error:
        reason = str(error) if isinstance(error, ValueError) else "the YAML nests too deeply"
        raise UsageError(f"{source}: {reason}; write the values out") from None
    finally:
        loader.dispose()


def load_mapping(path: Path, what: str = "file") -> tuple[dict, yaml.Node | None]:
    """A YAML file whose top level is a mapping (empty file: {}), with its node tree."""
    data, root = parse(read_text(path, what), str(path))
    if data is None:
        return {}, root
    if not isinstance(data, dict):
        raise UsageError(f"{path}: the top level must be a mapping of keys, not a {type(data).__name__}")
    return data, root
