"""The CLI and pipeline-schema references as Markdown, generated from the argparse parser and the pydantic schema
(with the comments of defaults.yaml), so that they are never written by hand a second time.

`python -m cvpipe.reference docs/reference` writes `cli.md` and `config.md` there; tests/test_reference.py checks
that the committed files are current and name every flag and key.
"""

from __future__ import annotations

import argparse
import functools
import inspect
import re
import sys
import types
import typing
from pathlib import Path

import yaml
from pydantic import BaseModel

from cvpipe.config import DEFAULTS_FILE
from cvpipe.schema import head_settings, pipeline_schema


def _subcommands(parser: argparse.ArgumentParser, prefix: str = "cvpipe") -> list[tuple[str, argparse.ArgumentParser, str]]:
    """(command line, parser, help) of every command that runs something, depth first."""
    found = []
    for action in parser._actions:  # argparse has no public walk over sub-commands
        if isinstance(action, argparse._SubParsersAction):
            helps = {choice.dest: choice.help for choice in action._choices_actions}
            for name, sub in action.choices.items():
                line = f"{prefix} {name}"
                nested = _subcommands(sub, line)
                found += nested or [(line, sub, helps.get(name) or "")]
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def cli_reference() -> str:
    from cvpipe.cli import build_parser

    lines = ["# CLI reference", "", "Generated from cvpipe's argparse parser (`python -m cvpipe.reference`).", ""]
    for line, parser, help_text in _subcommands(build_parser()):
        lines += [f"## `{line}`", "", _cell(help_text), "", "| argument | default | what it does |", "| --- | --- | --- |"]
        for action in parser._actions:
            if isinstance(action, argparse._HelpAction):
                continue
            names = ", ".join(action.option_strings) or action.dest
            shown = "" if action.default in (None, False, argparse.SUPPRESS, []) else f"`{action.default}`"
            lines.append(f"| `{names}` | {_cell(shown)} | {_cell(action.help or '')} |")
        lines.append("")
    return "\n".join(lines)


def _default_comments() -> dict[str, str]:
    """`section.key` → the comment beside it in defaults.yaml, with the comment lines aligned under it."""
    comments: dict[str, str] = {}
    stack: list[tuple[int, str]] = []
    last, column = None, None
    for raw in DEFAULTS_FILE.read_text().splitlines():
        match = re.match(r"^(\s*)([A-Za-z_]\w*):\s*([^#]*?)\s*(?:#\s?(.*))?$", raw)
        if match:
            indent, key, comment = len(match[1]), match[2], match[4]
            while stack and stack[-1][0] >= indent:
                stack.pop()
            stack.append((indent, key))
            last = ".".join(k for _, k in stack)
            column = raw.index("#") if comment else None
            if comment:
                comments[last] = comment.strip()
        elif column is not None and raw.strip().startswith("#") and raw.index("#") == column:
            comments[last] += " " + raw.strip().lstrip("#").strip()
        else:
            column = None
    return comments


def _field_comments(model: type[BaseModel]) -> dict[str, str]:
    """field → the comment beside it, or on the lines just above it, in the source of the model and its bases
    (the head settings' descriptions live in config.py, beside the fields)."""
    comments: dict[str, str] = {}
    for cls in reversed([c for c in model.__mro__ if issubclass(c, BaseModel) and c is not BaseModel]):
        above: list[str] = []
        for raw in inspect.getsource(cls).splitlines()[1:]:
            line = raw.strip()
            if line.startswith("#"):
                above.append(line.lstrip("#").strip())
                continue
            match = re.match(r"^(\w+):[^#]*(?:#\s*(.*))?$", line)
            if match and (above or match[2]):
                comments[match[1]] = " ".join([*above, match[2] or ""]).strip()
            above = []
    for name, info in model.model_fields.items():  # nested sections (the proposals of the R-CNNs)
        for nested in _models_of(info.annotation):
            comments |= {f"{name}.{key}": said for key, said in _field_comments(nested).items()}
    return comments


def _type_name(annotation) -> str:
    """A field's type as a reader writes it: `int`, `list[str]`, `'sgd' | 'adamw'`, `float | null`."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if origin is typing.Annotated:
        return _type_name(args[0])
    if origin is typing.Literal:
        return " | ".join(repr(a) for a in args)
    if origin in (typing.Union, types.UnionType):
        return " | ".join(_type_name(a) for a in args)
    if origin is not None:
        return f"{getattr(origin, '__name__', str(origin))}[{', '.join(_type_name(a) for a in args)}]"
    if annotation is type(None):
        return "null"
    return getattr(annotation, "__name__", str(annotation))


def _models_of(annotation) -> list[type[BaseModel]]:
    """The pydantic models an annotation holds (a section, or each head of the head union)."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return [annotation]
    return [m for arg in typing.get_args(annotation) for m in _models_of(arg)]


def _head_name(settings: type[BaseModel]) -> str:
    """The `name` a head's settings class answers to (its `Literal`)."""
    return typing.get_args(settings.model_fields["name"].annotation)[0]


def config_keys(model: type[BaseModel] | None = None, prefix: str = "") -> list[tuple[str, str, str, str]]:
    """(key path, type, default, head) of every setting; a head's settings carry the head's name."""
    model = model or pipeline_schema()
    rows = []
    for name, info in model.model_fields.items():
        path = f"{prefix}{name}"
        nested = _models_of(info.annotation)
        if len(nested) > 1:  # the head union: each head's own settings
            for head in nested:
                rows += [(p, t, d, _head_name(head)) for p, t, d, _ in config_keys(head, f"{path}.")
                         if p != f"{path}.name"]
            rows.append((f"{path}.name", " | ".join(_head_name(m) for m in nested), "", ""))
        elif nested:
            rows += config_keys(nested[0], f"{path}.")
        else:
            default = _file_default(path) if info.is_required() else repr(info.default)
            rows.append((path, _type_name(info.annotation), default, ""))
    return rows


@functools.cache
def _defaults() -> dict:
    return yaml.safe_load(DEFAULTS_FILE.read_text())


def _file_default(path: str) -> str:
    """A required key's default from defaults.yaml (where every pipeline default lives), or "" where it has none."""
    node = _defaults()
    for part in path.split("."):
        if not isinstance(node, dict) or part not in node:
            return ""
        node = node[part]
    return repr(node)


def config_reference() -> str:
    """Every key, section by section. Each head's table sits between snippet markers (`--8<-- [start:HEAD]`), so
    the head's page in the docs site includes it from here instead of repeating it."""
    comments = _default_comments()
    heads = head_settings()
    lines = ["# Pipeline YAML reference", "",
             "Generated from the pydantic schema (`cvpipe/config.py` and each head's settings in its module, with the comments beside their fields) and the "
             "comments of `cvpipe/defaults.yaml` (`python -m cvpipe.reference`). Defaults are the schema's or "
             "defaults.yaml's; a key shown without one must be given.", ""]
    section, head_comments = None, {}
    for path, kind, default, head in config_keys():
        top = head or path.split(".")[0]
        if top != section:
            if section in heads:
                lines += ["", f"<!-- --8<-- [end:{section}] -->"]
            section = top
            if head:
                intro = " ".join((heads[head].__doc__ or "").split())
                lines += ["", f"## `model.head`, `name: {head}`", "", f"<!-- --8<-- [start:{head}] -->", "",
                          _cell(intro)]
                head_comments = _field_comments(heads[head])
            else:
                lines += ["", f"## `{top}`"]
            lines += ["", "| key | type | default | what it is |", "| --- | --- | --- | --- |"]
        shown = f"`{_cell(default)}`" if default else ""
        said = head_comments.get(path.removeprefix("model.head."), "") if head else comments.get(path, "")
        lines.append(f"| `{path}` | {_cell(kind)} | {shown} | {_cell(said)} |")
    if section in heads:
        lines += ["", f"<!-- --8<-- [end:{section}] -->"]
    return "\n".join(lines) + "\n"


def documents() -> dict[str, str]:
    """File name → Markdown, as `write` writes them."""
    return {name: text if text.endswith("\n") else text + "\n"
            for name, text in (("cli.md", cli_reference()), ("config.md", config_reference()))}


def write(folder: Path) -> list[Path]:
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, text in documents().items():
        (folder / name).write_text(text)
        written.append(folder / name)
    return written


if __name__ == "__main__":
    for path in write(Path(sys.argv[1] if len(sys.argv) > 1 else "docs/reference")):
        print(path)
