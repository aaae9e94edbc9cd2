"""YAML to plain Python objects, remembering the line of every value by its path.

``yaml.safe_load`` forgets where things came from; composing the node graph with the safe
loader and constructing the objects ourselves keeps each node's mark, so a validation error
at ``routes[2].outage[0]`` can name its line. Mapping entries are recorded at their key's line
(where a reader looks for ``incident:``), sequence items at the item's own line.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import yaml

#: a path into the document: mapping keys and sequence indexes
Loc = tuple[str | int, ...]


@dataclass(frozen=True)
class SourceProblem:
    line: int | None
    loc: Loc
    message: str


class YamlSyntaxError(ValueError):
    """The text is not valid YAML."""

    def __init__(self, message: str, line: int | None) -> None:
        super().__init__(message)
        self.line = line


@dataclass
class YamlDocument:
    data: Any
    lines: dict[Loc, int] = field(default_factory=dict)
    problems: list[SourceProblem] = field(default_factory=list)

    def line_of(self, loc: Loc) -> int | None:
        """The line of ``loc``, or of its nearest recorded ancestor (a missing key's parent)."""
        for end in range(len(loc), -1, -1):
            line = self.lines.get(loc[:end])
            if line is not None:
                return line
        return None

    def path_of(self, loc: tuple[int | str, ...]) -> Loc:
        """A validation error's location as a path into this document, without union tags."""
        out: list[str | int] = []
        node = self.data
        tagged = (
            None  # the node whose union tag was skipped: only once (a check of type smtp has an smtp: key)
        )
        for index, part in enumerate(loc):
            if isinstance(node, dict) and node.get("type") == part and tagged is not node:
                tagged = node
                continue
            found, child = _child(node, part)
            if found:
                node = child
            elif not (isinstance(node, dict) and index == len(loc) - 1 and part != "[key]"):
                continue
            out.append(part)
        return tuple(out)


def _child(node: Any, part: str | int) -> tuple[bool, Any]:
    if isinstance(node, dict) and part in node:
        return True, node[part]
    if isinstance(node, list) and isinstance(part, int) and 0 <= part < len(node):
        return True, node[part]
    return False, None


def format_path(loc: Loc) -> str:
    """``("routes", 2, "outage", 0)`` to ``routes[2].outage[0]``."""
    return "".join(f"[{part}]" if isinstance(part, int) else f".{part}" for part in loc).removeprefix(".")


def load_yaml(text: str, *, string_hook: Callable[[str], str] | None = None) -> YamlDocument:
    """Parse one YAML document; ``string_hook`` rewrites every string value (not keys).

    A ``ValueError`` from the hook becomes a problem at that value's path; the value stays as
    written so validation can go on and report everything else too.
    """
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.MarkedYAMLError as exc:
        raise YamlSyntaxError(_describe(exc), _line(exc)) from None
    except yaml.YAMLError as exc:
        raise YamlSyntaxError(str(exc), None) from None
    builder = _Builder(string_hook)
    if node is None:
        return YamlDocument(data=None)
    builder.doc.lines[()] = node.start_mark.line + 1
    builder.doc.data = builder.build(node, ())
    return builder.doc


def _line(exc: yaml.MarkedYAMLError) -> int | None:
    mark = exc.problem_mark or exc.context_mark
    return None if mark is None else mark.line + 1


def _describe(exc: yaml.MarkedYAMLError) -> str:
    parts = [p for p in (exc.context, exc.problem) if p]
    return "YAML syntax error: " + ", ".join(parts) if parts else "YAML syntax error"


class _Builder:
    def __init__(self, string_hook: Callable[[str], str] | None) -> None:
        self._hook = string_hook
        self._constructor = yaml.SafeLoader("")
        self.doc = YamlDocument(data=None)
        self._active: set[int] = set()

    def build(self, node: yaml.Node, loc: Loc) -> Any:
        if id(node) in self._active:
            self._problem(node, loc, "recursive YAML alias")
            return None
        self._active.add(id(node))
        try:
            if isinstance(node, yaml.MappingNode):
                return self._mapping(node, loc)
            if isinstance(node, yaml.SequenceNode):
                return [self._item(child, (*loc, i)) for i, child in enumerate(node.value)]
            return self._scalar(node, loc)
        finally:
            self._active.discard(id(node))

    def _item(self, node: yaml.Node, loc: Loc) -> Any:
        self.doc.lines[loc] = node.start_mark.line + 1
        return self.build(node, loc)

    def _mapping(self, node: yaml.MappingNode, loc: Loc) -> dict[Any, Any]:
        # resolves ``<<: *anchor`` merge keys the way safe_load does: the merged pairs come first,
        # so a key written here overrides a merged one (that is what merging is for); only a key
        # written twice here is a duplicate
        own = {id(k) for k, _ in node.value if k.tag != "tag:yaml.org,2002:merge"}
        self._constructor.flatten_mapping(node)
        result: dict[Any, Any] = {}
        written: set[str] = set()
        for key_node, value_node in node.value:
            key = self._constructor.construct_object(key_node, deep=True)
            if not isinstance(key, str | int | float | bool) and key is not None:
                self._problem(key_node, loc, "mapping keys must be plain scalars")
                continue
            child = (*loc, str(key))
            if id(key_node) in own:
                if str(key) in written:
                    self._problem(key_node, child, f"duplicate key {key!r}")
                written.add(str(key))
            self.doc.lines[child] = key_node.start_mark.line + 1
            result[str(key)] = self.build(value_node, child)
        return result

    def _scalar(self, node: yaml.Node, loc: Loc) -> Any:
        value = self._constructor.construct_object(node, deep=True)
        if not isinstance(value, str) or self._hook is None:
            return value
        try:
            return self._hook(value)
        except ValueError as exc:
            self._problem(node, loc, str(exc))
            return value

    def _problem(self, node: yaml.Node, loc: Loc, message: str) -> None:
        self.doc.problems.append(SourceProblem(node.start_mark.line + 1, loc, message))
