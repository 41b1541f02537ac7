"""YAML from files a user or a dataset supplies, loaded with `safe_load` and bounded first: no construction of
arbitrary objects, and no nesting, alias or expansion that takes unbounded time or memory (billion laughs, a
self-referencing alias, 3,000 levels of nesting)."""

from __future__ import annotations

from typing import Any

import yaml

from cvpipe.errors import ConfigError

MAX_DEPTH = 64  # nested mappings and lists; a pipeline needs under 10
MAX_ALIASES = 256  # `*name` references
MAX_NODES = 100_000  # values once aliases are expanded; a pipeline has a few hundred


def check_yaml_size(text: str, where: str) -> None:
    """Refuse YAML that would take unbounded time or memory to load or walk, before anything builds it: nesting
    deeper than MAX_DEPTH (the composer recurses), more than MAX_ALIASES aliases, an alias inside its own anchor,
    or more than MAX_NODES values once aliases are expanded (nine levels of nine aliases make 9⁹). Reads the
    event stream, which is linear in the text whatever its aliases."""
    size: dict[str, int] = {}  # anchor → its expanded value count
    open_: list[tuple[str | None, int]] = []  # collections being read: (anchor, values so far)
    depth = aliases = total = 0

    def add(count: int) -> None:
        nonlocal total
        if open_:
            anchor, n = open_[-1]
            open_[-1] = (anchor, n + count)
        else:
            total += count

    def refuse(what: str) -> ConfigError:
        return ConfigError(f"{where}: {what}; a pipeline YAML needs nothing of the kind (is this the right file?)")

    for event in yaml.parse(text, Loader=yaml.SafeLoader):
        if isinstance(event, (yaml.MappingStartEvent, yaml.SequenceStartEvent)):
            depth += 1
            if depth > MAX_DEPTH:
                raise refuse(f"nested more than {MAX_DEPTH} levels deep (line {event.start_mark.line + 1})")
            open_.append((event.anchor, 1))
        elif isinstance(event, (yaml.MappingEndEvent, yaml.SequenceEndEvent)):
            depth -= 1
            anchor, n = open_.pop()
            if anchor is not None:
                size[anchor] = n
            add(n)
        elif isinstance(event, yaml.ScalarEvent):
            if event.anchor is not None:
                size[event.anchor] = 1
            add(1)
        elif isinstance(event, yaml.AliasEvent):
            aliases += 1
            if aliases > MAX_ALIASES:
                raise refuse(f"more than {MAX_ALIASES} aliases (*name)")
            if event.anchor not in size:  # its anchor is still open: the value would contain itself
                if any(anchor == event.anchor for anchor, _ in open_):
                    raise refuse(f"the alias *{event.anchor} at line {event.start_mark.line + 1} refers to a value "
                                 "that contains it")
                return  # an undefined alias: the composer reports it with its line
            add(size[event.anchor])
        if total + sum(n for _, n in open_) > MAX_NODES:
            raise refuse(f"more than {MAX_NODES:,} values once its aliases are expanded")


def load_yaml(text: str, where: str) -> Any:
    """`yaml.safe_load(text)` after `check_yaml_size`; a malformed or unbounded document raises ConfigError
    naming `where` (and the line)."""
    try:
        check_yaml_size(text, where)
        return yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        line = f":{mark.line + 1}" if mark else ""
        raise ConfigError(f"{where}{line}: malformed YAML: {getattr(e, 'problem', None) or e}") from None
