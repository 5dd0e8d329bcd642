"""Where each key of a sweep file sits: a location (keys and list indices from the top) and its line, read from the
YAML node tree, so that a mistake names its line."""

from __future__ import annotations

import yaml

# A location in the sweep file: keys and list indices from the top, e.g. ("axes", "model.an.k", 1).
Loc = tuple[str | int, ...]


def show_loc(loc: Loc) -> str:
    text = ""
    for part in loc:
        text += f"[{part}]" if isinstance(part, int) else (f".{part}" if text else str(part))
    return text or "(top level)"


def line_index(root: yaml.Node | None) -> tuple[dict[Loc, int], list[tuple[Loc, int, int]]]:
    """Line of every key and list item, from the YAML node tree (composed once by an_lab.yamlio), and repeated keys."""
    lines: dict[Loc, int] = {}
    repeats: list[tuple[Loc, int, int]] = []
    seen: set[int] = set()  # aliases share nodes: visit each once (and never loop)
    stack: list[tuple[yaml.Node, Loc]] = [(root, ())] if root is not None else []
    while stack:
        node, loc = stack.pop()
        if id(node) in seen or len(loc) > 32:
            continue
        seen.add(id(node))
        if isinstance(node, yaml.MappingNode):
            first: dict[str, int] = {}
            for key_node, value_node in node.value:
                if not isinstance(key_node, yaml.ScalarNode) or key_node.value == "<<":
                    continue
                key, number = key_node.value, key_node.start_mark.line + 1
                if key in first:
                    repeats.append(((*loc, key), first[key], number))
                first.setdefault(key, number)
                lines.setdefault((*loc, key), number)
                stack.append((value_node, (*loc, key)))
        elif isinstance(node, yaml.SequenceNode):
            for index, item in enumerate(node.value):
                lines.setdefault((*loc, index), item.start_mark.line + 1)
                stack.append((item, (*loc, index)))
    return lines, repeats
