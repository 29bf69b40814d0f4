"""Message templates: sandboxed Jinja2 that renders a ``GroupEvent`` into a message.

Templates come from the config, so they run sandboxed (no attribute tricks reach
Python internals) with strict undefined (a typo is an error, not an empty string).
HTML output (email) autoescapes. A chat format passes its own escaper
(``markup_escape``): every ``{{ … }}`` value is escaped for the platform's markup
unless it is ``Markup`` (``|safe``, or a helper such as ``link``), while the
template's literal text keeps its markup, so a chat message can neither format nor
forge anything and reads the same in every target.
A syntax error is a config error caught by ``relay check``; an error while rendering
names the template line and fails the delivery permanently.
"""

from __future__ import annotations

import types
from collections.abc import Callable
from functools import lru_cache
from typing import Any

from jinja2 import StrictUndefined, Template, TemplateSyntaxError, pass_context
from jinja2 import TemplateError as JinjaError
from jinja2.runtime import Context
from jinja2.sandbox import SandboxedEnvironment
from markupsafe import Markup

TEMPLATE_FILE = "<template>"
ESCAPE_NAME = "_relay_markup_escape"  # the context entry holding a chat format's escaper


class TemplateError(ValueError):
    """A template does not compile or does not render; the message names the line."""


@pass_context
def _escape_output(context: Context, value: Any) -> Any:
    """Jinja's ``finalize``: each expression's value through the format's escaper;
    ``Markup`` is already markup and passes as it is."""
    escape = context.get(ESCAPE_NAME)
    if escape is None or isinstance(value, Markup):
        return value
    return Markup(escape(str(value)))


def _environment(html: bool, markup: bool = False) -> SandboxedEnvironment:
    env = SandboxedEnvironment(
        undefined=StrictUndefined,
        autoescape=html,
        finalize=_escape_output if markup else None,
        trim_blocks=True,
        lstrip_blocks=True,
        keep_trailing_newline=False,
    )
    env.filters["truncate_text"] = lambda text, n=200: (
        text if len(text) <= n else text[: max(0, n - 1)] + "…"
    )
    return env


_ENVIRONMENTS = {
    (False, False): _environment(False),
    (True, False): _environment(True),
    (False, True): _environment(False, markup=True),
}


@lru_cache(maxsize=512)
def compile_template(source: str, *, html: bool = False, markup: bool = False) -> Template:
    """Compile once per distinct text; ``TemplateError`` naming the line if it is invalid."""
    try:
        return _ENVIRONMENTS[(html, markup and not html)].from_string(source)
    except TemplateSyntaxError as exc:
        raise TemplateError(f"template line {exc.lineno}: {exc.message}") from None


def _template_line(tb: types.TracebackType | None) -> int | None:
    line = None
    while tb is not None:
        if tb.tb_frame.f_code.co_filename == TEMPLATE_FILE:
            line = tb.tb_lineno
        tb = tb.tb_next
    return line


def render(
    source: str,
    *,
    html: bool = False,
    markup_escape: Callable[[str], str] | None = None,
    **context: Any,
) -> str:
    """Render ``source`` with ``context``; ``TemplateError`` naming the failing line.

    ``markup_escape`` escapes every value the template outputs for a chat format's
    markup (the event's text, names, file names), never the template's own text."""
    template = compile_template(source, html=html, markup=markup_escape is not None)
    if markup_escape is not None:
        context[ESCAPE_NAME] = markup_escape
    try:
        return str(template.render(**context)).strip()
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
    compile_template(source, markup=True)
    return source
