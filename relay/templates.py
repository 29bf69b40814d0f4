"""Message templates: sandboxed Jinja2 that renders a ``GroupEvent`` into a message.

Templates come from the config, so they run sandboxed (no attribute tricks reach
Python internals) with strict undefined (a typo is an error, not an empty string).
HTML output (email) autoescapes; chat formats do not, since their markup is not HTML.
A syntax error is a config error caught by ``relay check``; an error while rendering
names the template line and fails the delivery permanently.
"""

from __future__ import annotations

import types
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError
from jinja2 import TemplateError as JinjaError
from jinja2.sandbox import SandboxedEnvironment

TEMPLATE_FILE = "<template>"


class TemplateError(ValueError):
    """A template does not compile or does not render; the message names the line."""


def _environment(html: bool) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=html,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["truncate_text"] = lambda text, n=200: (
        text if len(text) <= n else text[: max(0, n - 1)] + "…"
    )
    return env


_ENVIRONMENTS = {False: _environment(False), True: _environment(True)}


@lru_cache(maxsize=512)
def compile_template(source: str, *, html: bool = False) -> Template:
    """Compile once per distinct text; ``TemplateError`` naming the line if it is invalid."""
    try:
        return _ENVIRONMENTS[html].from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template line {exc.lineno}: {exc.message}") from None


def _template_line(tb: types.TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TEMPLATE_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(source: str, *, html: bool = False, **context: Any) -> str:
    """Render ``source`` with ``context``; ``TemplateError`` naming the failing line."""
    template = compile_template(source, html=html)
    try:
        return template.render(**context).strip()
    except JinjaError as exc:
        line = _template_line(exc.__traceback__)
        where = f"template line {line}" if line else "template"
        raise TemplateError(f"{where}: {exc}") from None
    except (TypeError, ValueError, ArithmeticError, LookupError, AttributeError) as exc:
        line = _template_line(exc.__traceback__)
        where = f"template line {line}" if line else "template"
        raise TemplateError(f"{where}: {type(exc).__name__}: {exc}") from None


def check_template(source: str) -> str:
    """Validator for config fields: the text if it compiles, else ``ValueError``."""
    compile_template(source)
    compile_template(source, html=True)
    return source
