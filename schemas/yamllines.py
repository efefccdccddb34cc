"""The line of a YAML document where a key path is written, from PyYAML's composed node tree.

The YAML twin of :mod:`schemas.tomllines`, for error messages: a pydantic error location (keys
and list indexes) is followed through the nodes; a part that is not in the document (a union's
tag such as ``sentiment_rolling``) is skipped, and the deepest node reached gives the line.
"""

from __future__ import annotations

import yaml


def node_at(node: yaml.Node | None, loc: tuple[int | str, ...]) -> yaml.Node | None:
    """The deepest YAML node reached by following a pydantic error location."""
    best = node
    for part in loc:
        if node is None:
            break
        child: yaml.Node | None = None
        if isinstance(node, yaml.MappingNode):
            for key, value in node.value:
                if isinstance(key, yaml.ScalarNode) and key.value == str(part):
                    child = value
                    break
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int):
            if 0 <= part < len(node.value):
                child = node.value[part]
        if child is None:
            continue  # a union tag such as 'sentiment_rolling' is not in the document
        node = best = child
    return best


def node_line(node: yaml.Node | None) -> int | None:
    """1-based line where ``node`` starts (None without a node)."""
    return node.start_mark.line + 1 if node is not None else None


def yaml_line(root: yaml.Node | None, loc: tuple[int | str, ...]) -> int | None:
    """The line of the value at ``loc`` (or of its deepest written parent)."""
    return node_line(node_at(root, loc)) if root is not None else None
