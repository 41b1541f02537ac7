"""Reading a pipeline: YAML with line numbers (keys given twice refused), merged over `defaults.yaml` (the one
place defaults live), `--set` overrides, validation by the schema (cvpipe/config.py) and the checks the schema
cannot express (transforms that build, timm names, weights ids, each head's fit to its neck). Every problem
becomes one line: `FILE:LINE: model.backbone.freeze: expected int 0..5, got "all"`.
"""

from __future__ import annotations

import copy
import json
import typing
from pathlib import Path
from typing import Any

import yaml
from annotated_types import Ge, Gt, Le, Lt
from pydantic import BaseModel, ValidationError

from cvpipe.config import DEFAULTS_FILE, PipelineConfig, models_in, set_key
from cvpipe.errors import ConfigError, WeightsError
from cvpipe.paths import bundled_hint, find_pipeline, resolve_input
from cvpipe.safe_yaml import check_yaml_size
from cvpipe.schema import head_settings, pipeline_schema
from cvpipe.suggest import did_you_mean

# ----------------------------------------------------------------------------- YAML with line numbers


def _node_lines(node: yaml.Node, path: tuple = (), out: dict | None = None) -> dict[tuple, int]:
    """Map every key path in a composed YAML tree to its 1-based line."""
    out = {} if out is None else out
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            sub = (*path, key_node.value)
            out[sub] = key_node.start_mark.line + 1
            _node_lines(value_node, sub, out)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            out[(*path, i)] = item.start_mark.line + 1
            _node_lines(item, (*path, i), out)
    return out


def read_yaml(path: Path) -> tuple[Any, dict[tuple, int]]:
    """Parse a YAML file with `safe_load`; return the data and a key-path → line map."""
    try:
        text = Path(path).read_text(encoding="utf-8")
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such pipeline file, nor a bundled pipeline of that name"
                          f"{bundled_hint(str(path))}") from None
    except IsADirectoryError:
        raise ConfigError(f"{path}: is a folder; name a pipeline YAML file (or a bundled pipeline: `cvpipe pipelines`)") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read: {e}") from None
    try:
        check_yaml_size(text, str(path))
        node = yaml.compose(text, Loader=yaml.SafeLoader)
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        mark = getattr(e, "problem_mark", None)
        where = f"{path}:{mark.line + 1}:{mark.column + 1}" if mark else str(path)
        problem = getattr(e, "problem", None) or str(e)
        raise ConfigError(f"{where}: malformed YAML: {problem}") from None
    duplicates = _duplicate_keys(node) if node is not None else []
    if duplicates:
        raise ConfigError(f"{path}: {len(duplicates)} key(s) given twice (YAML would keep only the last silently)",
                          [f"{path}:{line}: {key}: given again (first at line {first})" for key, first, line in duplicates])
    return data, (_node_lines(node) if node is not None else {})


def _duplicate_keys(node: yaml.Node, path: tuple = ()) -> list[tuple[str, int, int]]:
    """(dotted key, first line, repeated line) for every key a mapping repeats, at any depth."""
    found = []
    if isinstance(node, yaml.MappingNode):
        first: dict[Any, int] = {}
        for key_node, value_node in node.value:
            line = key_node.start_mark.line + 1
            if key_node.value in first:
                found.append((_dotted((*path, key_node.value)), first[key_node.value], line))
            first.setdefault(key_node.value, line)
            found += _duplicate_keys(value_node, (*path, key_node.value))
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            found += _duplicate_keys(item, (*path, i))
    return found


def deep_merge(base: dict, top: dict) -> dict:
    """`top` over `base`, recursing into mappings; lists and scalars are replaced whole."""
    merged = copy.deepcopy(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = deep_merge(merged[key], value)
        else:
            merged[key] = copy.deepcopy(value)
    return merged


def parse_override(item: str) -> tuple[tuple, Any]:
    """`model.head.score_thresh=0.3` → (('model','head','score_thresh'), 0.3); values parse as YAML."""
    key, sep, raw = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. --set train.epochs=3")
    path = tuple(int(p) if p.isdigit() else p for p in key.strip().split("."))
    try:
        if raw.strip():
            check_yaml_size(raw, f"--set {key.strip()}")
        value = yaml.safe_load(raw) if raw.strip() else None
    except yaml.YAMLError:
        value = raw
    return path, value


def apply_overrides(data: dict, overrides: list[str]) -> list[tuple]:
    """Apply `--set` items in place; returns the key paths they touched."""
    touched = []
    for item in overrides:
        path, value = parse_override(item)
        node = data
        for i, part in enumerate(path[:-1]):
            if isinstance(node, list) and isinstance(part, int) and part < len(node):
                node = node[part]
                continue
            if not isinstance(node, dict):
                raise ConfigError(f"--set {item}: {_dotted(path[: i + 1])} is not a mapping")
            node = node.setdefault(part, {})
        last = path[-1]
        if isinstance(node, list) and isinstance(last, int) and last < len(node):
            node[last] = value
        elif isinstance(node, dict):
            node[last] = value
        else:
            raise ConfigError(f"--set {item}: cannot set {_dotted(path)}")
        touched.append(path)
    return touched


# ----------------------------------------------------------------------------- error messages


def _dotted(loc: tuple) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def _strip_union_tags(loc: tuple) -> tuple:
    """pydantic puts the discriminator value into the location of a tagged union; users never wrote it."""
    heads = set(head_settings())
    return tuple(p for i, p in enumerate(loc) if not (i > 0 and loc[i - 1] == "head" and p in heads))


def _constraints(annotation: Any) -> list:
    """Ge/Le/... metadata inside container types such as list[list[Annotated[int, Field(gt=0)]]]."""
    found = []
    for arg in typing.get_args(annotation):
        found += list(arg.metadata) if hasattr(arg, "metadata") else _constraints(arg)
    return found


def _field_at(loc: tuple) -> tuple[list[type[BaseModel]], Any]:
    """Follow `loc` through the schema: (models owning the last key, FieldInfo of the last key or None)."""
    models: list[type[BaseModel]] = [pipeline_schema()]
    field = None
    for part in loc:
        if isinstance(part, int):
            continue
        owners = [m for m in models if part in m.model_fields]
        tagged = [m for m in models if "name" in m.model_fields and part in typing.get_args(m.model_fields["name"].annotation)]
        if not owners and tagged:  # a tagged-union step (model.head.<faster_rcnn>.anchor_sizes)
            models = tagged
            continue
        if not owners:
            return models, None
        field = owners[0].model_fields[part]
        models = models_in(field.annotation) or models
    return models, field


def _bounds(loc: tuple) -> str:
    _, field = _field_at(loc)
    if field is None:
        return ""
    metadata = list(field.metadata) + _constraints(field.annotation)
    lo = hi = None
    for m in metadata:
        if isinstance(m, Ge | Gt):
            lo = getattr(m, "ge", None) if isinstance(m, Ge) else f">{m.gt}"
        if isinstance(m, Le | Lt):
            hi = getattr(m, "le", None) if isinstance(m, Le) else f"<{m.lt}"
    if lo is not None and hi is not None:
        return f" {lo}..{hi}"
    if lo is not None:
        return f" >= {lo}" if not str(lo).startswith(">") else f" {lo}"
    if hi is not None:
        return f" <= {hi}" if not str(hi).startswith("<") else f" {hi}"
    return ""


_EXPECTED = {
    "int": "int", "float": "number", "bool": "true or false", "string": "a string", "list": "a list",
    "dict": "a mapping", "model": "a mapping",
}


def _message(err: dict) -> str:
    kind, loc, value = err["type"], err["loc"], err.get("input")
    got = json.dumps(value) if isinstance(value, str | int | float | bool) or value is None else type(value).__name__
    if kind == "extra_forbidden":
        models, _ = _field_at(loc[:-1])
        allowed = sorted({k for m in models for k in m.model_fields} - {loc[-1]})
        return f'unknown key "{loc[-1]}"' + did_you_mean(loc[-1], allowed)
    if kind == "missing":
        return "required key missing"
    if kind in ("literal_error", "union_tag_invalid"):
        expected = err.get("ctx", {}).get("expected") or err.get("ctx", {}).get("expected_tags", "")
        options = [o.strip().strip("'") for o in expected.replace(" or ", ",").split(",") if o.strip()]
        tag = err.get("ctx", {}).get("tag", value)
        return f"expected one of {' | '.join(options)}, got {json.dumps(tag)}" + did_you_mean(tag, options)
    base = kind.split("_")[0]
    if kind.startswith(("greater_than", "less_than")) or base in ("int", "float"):
        _, field = _field_at(loc)
        annotation = str(field.annotation) if field is not None else base
        of = "number" if "float" in annotation or base == "float" else "int"
        return f"expected {of}{_bounds(loc)}, got {got}"
    if base in _EXPECTED and kind.endswith(("_type", "_parsing")):
        return f"expected {_EXPECTED[base]}, got {got}"
    if kind == "value_error":
        return str(err.get("ctx", {}).get("error", err["msg"]))
    return f"{err['msg']}, got {got}"


# ----------------------------------------------------------------------------- loading


def _problem(source: str, lines: dict[tuple, int], loc: tuple, message: str, overridden: set = frozenset()) -> str:
    line = None
    for n in range(len(loc), 0, -1):  # the deepest key the user actually wrote
        if loc[:n] in lines:
            line = lines[loc[:n]]
            break
    where = f"{source} (--set)" if loc in overridden else (f"{source}:{line}" if line else source)
    if message.startswith(_dotted(loc) + ":") or not loc:
        return f"{where}: {message}"
    return f"{where}: {_dotted(loc)}: {message}"


def load_pipeline(path: str | Path, overrides: list[str] | None = None) -> PipelineConfig:
    """Read, merge over defaults, apply `--set` overrides, validate. Raises ConfigError listing every problem.
    `path` may also name a bundled pipeline (`coco_ssd_mobilenet_v2`)."""
    path = find_pipeline(path)
    defaults, _ = read_yaml(DEFAULTS_FILE)
    user, lines = read_yaml(path)
    if not user and not overrides:
        raise ConfigError(f"{path}: the file is empty; a pipeline needs at least name, task, data and model "
                          "(`cvpipe pipelines` lists bundled ones to start from)")
    user = user or {}
    if not isinstance(user, dict):
        raise ConfigError(f"{path}:1: a pipeline must be a YAML mapping (name:, task:, data:, model: ...)")
    overridden = set(apply_overrides(user, list(overrides or [])))
    merged = deep_merge(defaults, user)
    source = str(path)
    try:
        config = pipeline_schema().model_validate(merged)
    except ValidationError as e:
        problems = []
        for err in e.errors(include_url=False):
            loc = _strip_union_tags(tuple(err["loc"]))
            problems.append(_problem(source, lines, loc, _message(err), overridden))
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems) from None
    config._source, config._lines, config._overridden = source, lines, overridden
    _resolve_inputs(config, path)
    chosen, found = semantic_problems(config)
    problems = [_problem(source, lines, loc, msg, overridden) for loc, msg in found]
    if problems:
        raise ConfigError(f"{path}: {len(problems)} problem(s)", problems)
    for key, value in chosen.items():  # the task's values for the keys left to it, once everything fits
        set_key(config, key, value)
    return config


def _resolve_inputs(config: PipelineConfig, path: Path) -> None:
    """Relative input paths → absolute: a value from the file against the file's folder, a `--set` value against
    the current folder; either then against the data folder (paths.resolve_input)."""
    def resolve(loc: tuple, value: Path) -> Path:
        base = Path.cwd() if loc in config._overridden else path.resolve().parent
        resolved, looked_in = resolve_input(value, base)
        config._looked_in[loc] = looked_in
        return resolved

    if config.data.root is not None:
        config.data.root = resolve(("data", "root"), config.data.root)
    head = config.model.head
    for name, field in type(head).model_fields.items():  # a head's input files (fast_style's style_image)
        if field.annotation is Path:
            setattr(head, name, resolve(("model", "head", name), getattr(head, name)))


def data_problems(config: PipelineConfig, *, layout: bool = False) -> list[str]:
    """What stops a command that reads the dataset (train, eval, augment preview): FILE:LINE messages. With
    `layout` (validate), each split is also read as `data.format` says, so a format that does not match the
    files is named before training (the commands that read the dataset say so themselves)."""
    root = config.data.root
    if root is None:
        message = "not set: this pipeline has no dataset; set data.root to one (train, eval and augment need it)"
    elif not root.exists():
        looked_in = config._looked_in.get(("data", "root"), [root])
        where = f"{looked_in[0]} does not exist" if len(looked_in) == 1 else \
            f"neither {looked_in[0]} nor {looked_in[1]} exists"
        message = f"{where}; fetch a bundled dataset with `cvpipe data fetch NAME` (no NAME: the list) or fix the path"
    else:
        return _layout_problems(config) if layout else []
    return [_problem(config._source, config._lines, ("data", "root"), message, config._overridden)]


def _layout_problems(config: PipelineConfig) -> list[str]:
    """Each split that `data.format` cannot read (a COCO pipeline over a VOC folder), at data.format's line."""
    from cvpipe.data.formats import layout_problem

    problems = []
    for key in ("train", "val"):
        split = getattr(config.data, key)
        if split is None:
            continue
        message = layout_problem(config.data.root, config.data.format, split, config.data.classes)
        if message:
            problems.append(_problem(config._source, config._lines, ("data", "format"),
                                     f"{config.data.format}: cannot read data.{key} ({message})", config._overridden))
    return problems


def require_data(config: PipelineConfig) -> None:
    problems = data_problems(config)
    if problems:
        raise ConfigError(f"{config._source}: the dataset is needed here", problems)


def semantic_problems(config: PipelineConfig) -> tuple[dict[tuple, Any], list[tuple[tuple, str]]]:
    """(the task's values for the keys left to it (`Task.settle`), the checks the schema cannot express: the
    head's task and its fit to the neck, transforms that build, timm names and weights ids that exist). Whether
    the dataset exists is checked by the commands that read it (`data_problems`)."""
    import timm

    from cvpipe.data.augment import build_transform
    from cvpipe.models import zoo
    from cvpipe.models.heads.registry import head_spec, heads, task_problems
    from cvpipe.models.weights import WeightsCatalog
    from cvpipe.tasks import get_task

    spec = head_spec(config.model.head.name)
    problems = task_problems(spec.name, config.task)
    if problems:
        return {}, problems
    chosen, found = get_task(config.task).settle(config)
    problems += found + spec.neck_problems(config.model)
    if config.tta.enabled and config.tta.scales != [1.0] and not spec.tta_scales:
        scaled = sorted((name for name, other in heads().items() if other.tta_scales), reverse=True)
        problems.append((("tta", "scales"), f"the {spec.name} head runs at one input size; scales other than 1.0 "
                         f"need {' or '.join(scaled)} (use tta.scales: [1.0] with flips)"))
    backbone = config.model.backbone.name
    if spec.uses_backbone and not timm.is_model(backbone):
        problems.append((("model", "backbone", "name"),
                         f"unknown timm model {json.dumps(backbone)}{did_you_mean(backbone, timm.list_models())} "
                         "(`timm.list_models()` lists them)"))
    for split in ("train", "eval"):
        for i, entry in enumerate(getattr(config.augment, split)):
            try:
                build_transform(entry)
            except ValueError as e:
                problems.append((("augment", split, i), str(e)))
    for loc, weights_id in ((("model", "weights"), config.model.weights),
                            (("model", "backbone", "weights"), config.model.backbone.weights)):
        if weights_id is not None and zoo.is_reference(weights_id):  # named right? (no file is fetched here)
            try:
                if zoo.parse(weights_id).kind != "hf-hub":  # a hub repo's config would need the network
                    WeightsCatalog.load().get(weights_id)
            except WeightsError as e:
                problems.append((loc, str(e).removeprefix(f"weights {weights_id}: ")))
        elif weights_id is not None:
            catalog = WeightsCatalog.load()
            if weights_id not in catalog.entries:
                problems.append(
                    (loc, f"unknown weights id {json.dumps(weights_id)}{did_you_mean(weights_id, list(catalog.entries))} "
                     "(see `cvpipe weights list`)")
                )
    return chosen, problems
