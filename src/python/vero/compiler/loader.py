"""Reading build.yaml: strict YAML, then BuildConfig, with messages that name the field and file.

Every problem becomes one `VeroError` listing each bad field as `path (line N): message`; an
unknown key suggests the closest valid one, and a key of the other mode says so.
"""

from __future__ import annotations

import difflib
import types
import typing
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails  # pants: no-infer-dep

from vero.compiler.config import MODELS, BuildConfig, ModeABuild, ModeBBuild
from vero.errors import VeroError
from vero.models import error_location, error_message

MAX_REPORTED_ERRORS = 12
FIX = "edit build.yaml (every field is described in docs/guide.md)"

Loc = tuple[int | str, ...]


@dataclass(frozen=True)
class LoadedConfig:
    """A validated BuildConfig and the file it came from (relative paths resolve against `base_dir`)."""

    config: BuildConfig
    path: Path
    lines: Mapping[str, int] = field(default_factory=dict)  # top-level key -> its line in the file

    def field_at(self, key: str) -> str:
        """`key (line N)` for a top-level field, for messages that send the user back to build.yaml."""
        line = self.lines.get(key)
        return f"{key} (line {line})" if line is not None else key

    @property
    def base_dir(self) -> Path:
        """The directory of build.yaml."""
        return self.path.parent

    def with_base_images(self, main: str | None, sidecar: str | None) -> LoadedConfig:
        """This config with repository-wide base images for the fields build.yaml leaves unset (a
        field build.yaml sets wins); the images pass the same check as in build.yaml."""
        defaults = {name: image for name, image in (("base_image_main", main), ("base_image_sidecar", sidecar))
                    if image is not None and name not in self.config.model_fields_set}
        if not defaults:
            return self
        try:
            config = type(self.config).model_validate({**self.config.model_dump(exclude_unset=True), **defaults})
        except ValidationError as exc:
            raise VeroError(f"invalid default base image: {error_message(exc.errors()[0])}",
                            where="--base-image-main/--base-image-sidecar",
                            fix="name a local Docker image such as vero/base:bookworm") from None
        return LoadedConfig(config=config, path=self.path, lines=self.lines)

    def resolve(self, value: str) -> Path:
        """An absolute path for a path written in build.yaml."""
        return (self.base_dir / value).resolve()


class _StrictLoader(yaml.SafeLoader):
    """SafeLoader that refuses duplicate keys instead of silently keeping the last one."""

    def construct_mapping(self, node: yaml.MappingNode, deep: bool = False) -> dict[Any, Any]:
        seen: set[Any] = set()
        for key_node, _ in node.value:
            key = self.construct_object(key_node, deep=True)
            if key in seen:
                raise yaml.constructor.ConstructorError(
                    None, None, f"duplicate key {key!r}", key_node.start_mark)
            seen.add(key)
        return super().construct_mapping(node, deep=deep)


def load_build_config(path: Path) -> LoadedConfig:
    """Parse and validate build.yaml; every failure is a VeroError naming the file and field."""
    path = Path(path).absolute()
    where = str(path)
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        raise VeroError("build config not found", where=where,
                        fix="pass -c with the path of build.yaml") from None
    except (OSError, UnicodeDecodeError) as exc:
        raise VeroError(f"cannot read build config: {exc}", where=where,
                        fix="pass a readable UTF-8 YAML file") from None
    node, raw = _parse_yaml(text, where)
    if not isinstance(raw, dict):
        raise VeroError(f"the top level must be a mapping of fields, got {type(raw).__name__}",
                        where=where, fix=FIX)
    bad = _find_unencodable(raw, ())
    if bad is not None:
        raise VeroError(f"{error_location(bad)}{_line(node, bad)}: contains a NUL character or a lone surrogate "
                        "escape, which no output format can carry", where=where, fix=FIX)
    model = _model_for_mode(raw, node, where)
    try:
        config = model.model_validate(raw)
    except ValidationError as exc:
        other = MODELS["B" if raw["mode"] == "A" else "A"]
        lines = [_describe(err, model, other, raw["mode"], node) for err in exc.errors()]
        shown = lines[:MAX_REPORTED_ERRORS]
        if len(lines) > len(shown):
            shown.append(f"... and {len(lines) - len(shown)} more")
        raise VeroError("invalid build config:\n  " + "\n  ".join(shown), where=where, fix=FIX) from None
    return LoadedConfig(config=config, path=path, lines=_top_level_lines(node))


def _top_level_lines(node: yaml.Node | None) -> dict[str, int]:
    if not isinstance(node, yaml.MappingNode):
        return {}
    return {key.value: key.start_mark.line + 1 for key, _ in node.value if isinstance(key, yaml.ScalarNode)}


def _parse_yaml(text: str, where: str) -> tuple[yaml.Node | None, Any]:
    loader = _StrictLoader(text)
    try:
        node = loader.get_single_node()
        data = loader.construct_document(node) if node is not None else None
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None) or getattr(exc, "context_mark", None)
        at = f" at line {mark.line + 1}, column {mark.column + 1}" if mark is not None else ""
        problem = getattr(exc, "problem", None) or str(exc)
        raise VeroError(f"malformed YAML{at}: {problem}", where=where, fix="fix the YAML syntax") from None
    finally:
        loader.dispose()
    return node, data


def _model_for_mode(raw: dict[Any, Any], node: yaml.Node | None,
                    where: str) -> type[ModeABuild] | type[ModeBBuild]:
    mode = raw.get("mode")
    if mode is None:
        raise VeroError("mode: missing; set `mode: A` (dataset + scorer) or `mode: B` (Harbor tasks)",
                        where=where, fix=FIX)
    if mode not in MODELS:
        raise VeroError(f"mode{_line(node, ('mode',))}: must be A or B, got {mode!r}", where=where, fix=FIX)
    return MODELS[mode]


def _describe(err: ErrorDetails, model: type[BaseModel], other: type[BaseModel], mode: str,
              node: yaml.Node | None) -> str:
    loc: Loc = tuple(err["loc"])
    head = f"{error_location(loc) or '(top level)'}{_line(node, loc)}"
    if err["type"] == "extra_forbidden":
        key = str(loc[-1])
        if len(loc) == 1 and key in other.model_fields:
            other_mode = "B" if mode == "A" else "A"
            return f"{head}: is a Mode {other_mode} field, but this file says mode: {mode}"
        fields = _fields_at(model, loc[:-1])
        close = difflib.get_close_matches(key, fields, n=1, cutoff=0.6)
        hint = f" (did you mean {close[0]!r}?)" if close else f" (valid keys: {', '.join(sorted(fields))})"
        return f"{head}: unknown key{hint}"
    return f"{head}: {error_message(err)}"


def _fields_at(model: type[BaseModel], loc: Loc) -> list[str]:
    """Field names of the model found by following `loc` from `model` (empty if not a model)."""
    current: Any = model
    for part in loc:
        current = _step(current, part)
        if current is None:
            return []
    return list(current.model_fields) if isinstance(current, type) and issubclass(current, BaseModel) else []


def _step(annotation: Any, part: int | str) -> Any:
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        field = annotation.model_fields.get(str(part))
        return _unwrap(field.annotation) if field is not None else None
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin is list and args:
        return _unwrap(args[0])
    if origin is dict and len(args) == 2:
        return _unwrap(args[1])
    return None


def _unwrap(annotation: Any) -> Any:
    """Drop `None` from an optional annotation."""
    if typing.get_origin(annotation) in (typing.Union, types.UnionType):
        options = [a for a in typing.get_args(annotation) if a is not type(None)]
        return options[0] if len(options) == 1 else annotation
    return annotation


def _line(node: yaml.Node | None, loc: Loc) -> str:
    """` (line N)` for the YAML node at `loc`, or for its closest existing parent."""
    best = node
    current = node
    for part in loc:
        current = _child(current, part)
        if current is None:
            break
        best = current
    return f" (line {best.start_mark.line + 1})" if best is not None and best is not node else ""


def _child(node: yaml.Node | None, part: int | str) -> yaml.Node | None:
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            if isinstance(key_node, yaml.ScalarNode) and key_node.value == str(part):
                return value_node  # type: ignore[no-any-return]
    if isinstance(node, yaml.SequenceNode) and isinstance(part, int) and 0 <= part < len(node.value):
        return node.value[part]  # type: ignore[no-any-return]
    return None


def _unencodable(text: str) -> bool:
    return "\x00" in text or any(0xD800 <= ord(ch) <= 0xDFFF for ch in text)


def _find_unencodable(value: Any, loc: Loc) -> Loc | None:
    """The location of the first string holding NUL or a lone surrogate (from a YAML escape)."""
    if isinstance(value, str):
        return loc if _unencodable(value) else None
    if isinstance(value, dict):
        for key, item in value.items():
            if isinstance(key, str) and _unencodable(key):
                return (*loc, key)
            found = _find_unencodable(item, (*loc, key))
            if found is not None:
                return found
    if isinstance(value, list):
        for index, item in enumerate(value):
            found = _find_unencodable(item, (*loc, index))
            if found is not None:
                return found
    return None
