"""Models at a boundary (configs, HTTP bodies, files on disk) and the one way their validation
errors are told: `describe` for a message, `parse_model`/`load_model_file` for a VeroError."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Literal, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from pydantic_core import ErrorDetails  # pants: no-infer-dep

from vero.errors import VeroError

M = TypeVar("M", bound=BaseModel)
# A file the user or the task's author wrote is `invalid`; one vero wrote itself and that changed
# under it (a disk error, a hand edit) is `corrupt`.
Problem = Literal["invalid", "corrupt"]


class StrictModel(BaseModel):
    """Unknown keys are errors and values are never coerced ("1" is not an int, 1 not a bool).

    Paths are plain `str` fields: loaders resolve them against the file they came from.
    """

    model_config = ConfigDict(extra="forbid", strict=True)


def error_location(loc: Sequence[int | str]) -> str:
    """A field path as the user writes it: `budgets[0].split` (empty for the top level)."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out


def error_message(error: ErrorDetails) -> str:
    """Pydantic's message of one error, without the `Value error, ` of our own validators."""
    if error["type"] == "missing":
        return "required field is missing"
    return error["msg"].removeprefix("Value error, ")


def describe(exc: ValidationError, under: str = "") -> str:
    """`<field path>: <message>` of the first error, and how many more there are.

    `under` names the section the validated data came from (`harbor` for `harbor.n_attempts`).
    """
    errors = exc.errors()
    if not errors:  # a validator that raised without details
        return f"{under or '(top level)'}: {exc}"
    first = errors[0]
    location = error_location((under, *first["loc"]) if under else first["loc"]) or "(top level)"
    more = f" (and {len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{location}: {error_message(first)}{more}"


def parse_model(raw: bytes | str, model: type[M], *, what: str, where: str, fix: str,
                problem: Problem = "invalid") -> M:
    """`raw` JSON validated as `model`; a failure is one VeroError `<problem> <what> at <field>: ...`."""
    try:
        return model.model_validate_json(raw)
    except ValidationError as exc:
        raise VeroError(f"{problem} {what} at {describe(exc)}", where=where, fix=fix) from None


def load_model_file(path: Path, model: type[M], what: str, fix: str, *, problem: Problem = "invalid") -> M:
    """The JSON file at `path` validated as `model`; an unreadable or invalid file is one VeroError."""
    try:
        raw = Path(path).read_bytes()
    except OSError as exc:
        raise VeroError(f"cannot read {what}: {exc.strerror or exc}", where=str(path), fix=fix) from None
    return parse_model(raw, model, what=what, where=str(path), fix=fix, problem=problem)
