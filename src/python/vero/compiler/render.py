"""The Jinja2 environment that renders the compiled task's text files.

Output is only accepted when it went through a format filter of `vero.compiler.escaping`: the
environment's `finalize` refuses anything else, so a template cannot print a raw user value.
"""

from __future__ import annotations

import functools
from typing import Any

import jinja2

from vero.compiler.escaping import FILTERS, Escaped
from vero.errors import VeroError


class UnescapedValueError(jinja2.TemplateError):
    """A template printed a value without a format filter."""


def _only_escaped(value: Any) -> Any:
    if not isinstance(value, Escaped):
        raise UnescapedValueError(
            f"template printed {value!r} without a format filter (toml, yaml, compose, sh, md, ...)")
    return value


@functools.lru_cache(maxsize=1)
def environment() -> jinja2.Environment:
    """The shared environment: strict undefined, no autoescape (filters do it), escaped output only."""
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("vero.compiler", "templates"),
        undefined=jinja2.StrictUndefined,
        autoescape=False,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        finalize=_only_escaped,
    )
    env.filters.update(FILTERS)
    return env


def render(template: str, **context: Any) -> str:
    """Render `template` (a name under templates/) with `context`."""
    try:
        return environment().get_template(template).render(**context)
    except (jinja2.TemplateError, ValueError, TypeError) as exc:
        # Values were validated before rendering, so this is a bug in a template or a new field.
        raise VeroError(f"cannot render {template}: {exc}", where="vero.compiler.render",
                        fix="report this as a vero bug with your build.yaml") from exc
