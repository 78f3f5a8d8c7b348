"""Load ops/ YAML files into typed objects, with errors that point at file, line and key path.

Operators edit these files by hand under pressure; an error that says
``ops/blueprint.yml:42: domains.ledger.services.api.rto: not a duration`` is
fixed in seconds, a pydantic traceback is not. Every ops/ loader (blueprint,
backup sets, drill scenarios) goes through :func:`load_document` and
:func:`validate` so they all report mistakes the same way.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Annotated, Any, TypeVar

import yaml
from pydantic import BaseModel, BeforeValidator, ConfigDict, ValidationError

from continuity.durations import parse_duration
from continuity.errors import ConfigError

KeyPath = tuple[str | int, ...]
M = TypeVar("M", bound=BaseModel)


def format_path(path: Sequence[str | int]) -> str:
    out = ""
    for part in path:
        if isinstance(part, int):
            out += f"[{part}]"
        else:
            out += ("." if out else "") + str(part)
    return out or "(top level)"


@dataclass
class Document:
    """Parsed YAML plus where each key and item stood in the file."""

    file: str
    data: Any
    lines: dict[KeyPath, int] = field(default_factory=dict)

    def line_of(self, path: Sequence[str | int]) -> int | None:
        """Line of the deepest known prefix of ``path`` (a missing key points at its parent)."""
        p = tuple(path)
        while True:
            if p in self.lines:
                return self.lines[p]
            if not p:
                return None
            p = p[:-1]

    def error(self, path: Sequence[str | int], message: str) -> ConfigError:
        return ConfigError(self.file, self.line_of(path), format_path(path), message)


def _construct(node: yaml.Node, path: KeyPath, lines: dict[KeyPath, int], file: str) -> Any:
    lines.setdefault(path, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        out: dict[Any, Any] = {}
        for key_node, value_node in node.value:
            if key_node.tag == "tag:yaml.org,2002:merge":
                raise ConfigError(file, key_node.start_mark.line + 1, format_path(path),
                                  "YAML merge keys (<<) are not supported")
            key = _construct(key_node, path + ("<key>",), {}, file)
            if not isinstance(key, str | int | bool | float) or key is None:
                raise ConfigError(file, key_node.start_mark.line + 1, format_path(path),
                                  f"keys must be plain scalars, got {type(key).__name__}")
            key = str(key) if not isinstance(key, str) else key
            if key in out:
                raise ConfigError(file, key_node.start_mark.line + 1, format_path(path + (key,)),
                                  f"duplicate key {key!r}")
            lines[path + (key,)] = key_node.start_mark.line + 1
            out[key] = _construct(value_node, path + (key,), lines, file)
        return out
    if isinstance(node, yaml.SequenceNode):
        return [_construct(item, path + (i,), lines, file) for i, item in enumerate(node.value)]
    return _scalar(node)


_SCALAR_LOADER = yaml.SafeLoader("")


def _scalar(node: yaml.Node) -> Any:
    return _SCALAR_LOADER.construct_object(node, deep=True)


def parse_text(text: str, file: str) -> Document:
    """Parse YAML text; syntax errors become ConfigError with the line of the problem."""
    try:
        nodes = list(yaml.compose_all(text, Loader=yaml.SafeLoader))
    except yaml.MarkedYAMLError as exc:
        mark = exc.problem_mark or exc.context_mark
        line = mark.line + 1 if mark else None
        problem = exc.problem or exc.context or "invalid YAML"
        ctx = exc.context_mark
        if exc.problem and exc.context and ctx is not None and ctx.line + 1 != line:
            # an unclosed bracket or quote is found lines later: name where it was opened too
            problem += f" ({exc.context} on line {ctx.line + 1})"
        raise ConfigError(file, line, "", f"YAML syntax error: {problem}") from None
    except yaml.YAMLError as exc:
        raise ConfigError(file, None, "", f"YAML error: {exc}") from None
    if len(nodes) > 1:
        raise ConfigError(file, nodes[1].start_mark.line + 1, "", "expected one YAML document, found several")
    lines: dict[KeyPath, int] = {}
    data = _construct(nodes[0], (), lines, file) if nodes else None
    if data is None:
        data = {}
    return Document(file=file, data=data, lines=lines)


def load_document(path: str | Path) -> Document:
    p = Path(path)
    try:
        text = p.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(str(p), None, "", "file not found") from None
    except IsADirectoryError:
        raise ConfigError(str(p), None, "", "is a directory, expected a YAML file") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(str(p), None, "", f"not UTF-8 text ({exc.reason})") from None
    except OSError as exc:
        raise ConfigError(str(p), None, "", f"cannot read: {exc.strerror}") from None
    return parse_text(text, str(p))


def _describe(value: Any) -> str:
    if isinstance(value, dict):
        return "a mapping"
    if isinstance(value, list):
        return "a list"
    if value is None:
        return "nothing (null)"
    return repr(value)


_EXPECTED = {
    "int_type": "an integer", "int_parsing": "an integer", "int_from_float": "a whole number",
    "float_type": "a number", "float_parsing": "a number", "string_type": "a string",
    "bool_type": "true or false", "bool_parsing": "true or false", "list_type": "a list",
    "dict_type": "a mapping", "model_type": "a mapping", "model_attributes_type": "a mapping",
}
_BOUNDS = {"less_than_equal": ("at most", "le"), "less_than": ("less than", "lt"),
           "greater_than_equal": ("at least", "ge"), "greater_than": ("greater than", "gt")}


def _message(err: dict[str, Any]) -> str:
    """pydantic's wording rewritten for someone editing YAML: what was expected and what was found."""
    kind = err.get("type", "")
    ctx = err.get("ctx") or {}
    if kind == "extra_forbidden":
        return f"unknown key {str(err['loc'][-1])!r}"
    if kind == "missing":
        return f"required key {str(err['loc'][-1])!r} is missing"
    if kind in _EXPECTED:
        return f"expected {_EXPECTED[kind]}, got {_describe(err.get('input'))}"
    if kind in _BOUNDS and _BOUNDS[kind][1] in ctx:
        words, bound = _BOUNDS[kind]
        return f"must be {words} {ctx[bound]}, got {_describe(err.get('input'))}"
    if kind == "literal_error" and "expected" in ctx:
        return f"must be one of {ctx['expected']}, got {_describe(err.get('input'))}"
    msg = str(err.get("msg", "invalid value"))
    if msg.startswith("Value error, "):
        msg = msg[len("Value error, "):]
    return msg


def _tag_like(part: Any) -> bool:
    return isinstance(part, str) and ("[" in part or "(" in part or part[:1].isupper())


def _clean_loc(loc: Iterable[Any], data: Any = None) -> KeyPath:
    """The error location as a path through the document.

    pydantic inserts union and validator names ("function-after[...]", "int",
    "ProbeHttp") into locations. A part that names a key or index actually
    present in the data is always kept (so a user's key "Zone" survives);
    below a scalar everything is such a tag; elsewhere an absent part is kept
    (a missing required key) unless it looks like a type name.
    """
    out: list[str | int] = []
    cur = data
    for part in loc:
        if isinstance(cur, dict) and part in cur:
            cur = cur[part]
        elif isinstance(cur, list) and isinstance(part, int) and 0 <= part < len(cur):
            cur = cur[part]
        elif (cur is not None and not isinstance(cur, dict | list)) or _tag_like(part):
            continue
        else:
            cur = None
        out.append(part)
    return tuple(out)


def validate(doc: Document, model: type[M], data: Any | None = None) -> M:
    """Validate ``doc.data`` against ``model``; the first error (in file order) becomes a ConfigError."""
    payload = doc.data if data is None else data
    try:
        return model.model_validate(payload)
    except ValidationError as exc:
        errors = []
        for err in exc.errors():
            loc = _clean_loc(err["loc"], payload)
            if err.get("type") == "missing":
                where = doc.line_of(loc[:-1])
            else:
                where = doc.line_of(loc)
            errors.append((where or 0, loc, _message(err)))
        errors.sort(key=lambda e: e[0])
        line, loc, message = errors[0]
        raise ConfigError(doc.file, line or None, format_path(loc), message) from None


class Strict(BaseModel):
    """Base for every ops/ schema: unknown keys are mistakes, not extensions."""

    model_config = ConfigDict(extra="forbid", frozen=True, populate_by_name=True)


def _duration(value: Any) -> float:
    return parse_duration(value)


Duration = Annotated[float, BeforeValidator(_duration)]
"""A config field written as ``30s`` / ``5m`` and held as seconds."""


def _argv(value: Any) -> Any:
    if isinstance(value, str):
        raise ValueError("hooks are argv lists, never shell strings: write [\"prog\", \"arg\"]")
    return value


Argv = Annotated[list[str], BeforeValidator(_argv)]
"""A command as an argv list: shell strings are refused so nothing is ever shell-interpreted."""
