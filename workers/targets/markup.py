"""Escapers that make event text read the same in every chat target's markup.

A template's literal text is the operator's markup; every value it outputs (the
event's text, names, file names) goes through the target's escaper
(``relay.templates.render(markup_escape=…)``), so ``*bold*``, ``_it_``, backticks,
``#`` and ``>`` at a line start, ``[label](url)`` links and ``<…>`` tags from a chat
message are shown as typed, never as formatting.

- Feishu card markdown: HTML character references (``&#42;``), as Feishu documents
  for showing a markup character literally.
- DingTalk and WeCom markdown: the same references. Neither documents an escape, but
  both render inline HTML (``<font>``), so a reference is decoded either by their
  markdown parser or by the HTML view it produces.
- Slack mrkdwn: ``&amp; &lt; &gt;`` as Slack documents; Slack has no escape for
  ``* _ ~ ``` and documents none, so each becomes the fallback text of a date token
  with an invalid format (``<!date^00000000^{_}|*>``), which Slack always shows as
  plain text; a ``&gt;`` at a line start gets a soft hyphen so it is no quote.

A value that is a URL and nothing else is left a URL (a template's ``({{ file.url }})``
must stay a working link); URLs inside text become explicit links whose label is the
URL itself, so they read the same and still open.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from urllib.parse import quote

from markupsafe import Markup

_URL = re.compile(r"https?://[^\s<>\"'`\u3000-\u303f\uff00-\uffef]+")
_TRAILING = ".,;:!?'\"*_~"
_LINE_MARK = re.compile(r"(?m)^([ \t]*)([-+>#=])")
_LINE_NUMBER = re.compile(r"(?m)^([ \t]*\d+)([.)])")
_EMOJI = re.compile(r":[a-z0-9_+'\-]+:")

MARKDOWN_CHARS = "&<>*_~`[]\\#|"
FEISHU_CARD_CHARS = MARKDOWN_CHARS + ":$"
SLACK_DATE = "<!date^00000000^{{_}}|{}>"
SOFT_HYPHEN = "\u00ad"


def _split_url(match: str) -> tuple[str, str]:
    """A URL found in text, and the punctuation after it that belongs to the text."""
    url = match
    while url and (url[-1] in _TRAILING or (url[-1] == ")" and url.count("(") < url.count(")"))):
        url = url[:-1]
    return url, match[len(url) :]


def _whole_url(text: str) -> bool:
    match = _URL.fullmatch(text.strip())
    return match is not None and _split_url(match.group(0))[1] == ""


def _pieces(text: str) -> list[tuple[bool, str]]:
    """``text`` as (is_url, piece) runs."""
    pieces: list[tuple[bool, str]] = []
    position = 0
    for match in _URL.finditer(text):
        url = _split_url(match.group(0))[0]
        if url:
            pieces.append((False, text[position : match.start()]))
            pieces.append((True, url))
            position = match.start() + len(url)
    pieces.append((False, text[position:]))
    return [p for p in pieces if p[1]]


def markdown_destination(url: str) -> str:
    """A URL safe between ``(`` and ``)``: no spaces, brackets or parentheses raw."""
    return quote(url, safe="/:?#[]@!$&'*+,;=%~-._")


def markdown_escaper(chars: str = MARKDOWN_CHARS) -> Callable[[str], str]:
    """An escaper for a markdown dialect whose markup characters are ``chars``."""
    table = {ord(c): f"&#{ord(c)};" for c in chars}

    def text_only(text: str) -> str:
        text = text.translate(table)
        text = _LINE_MARK.sub(lambda m: m.group(1) + f"&#{ord(m.group(2))};", text)
        return _LINE_NUMBER.sub(lambda m: m.group(1) + f"&#{ord(m.group(2))};", text)

    def escape(text: str) -> str:
        if _whole_url(text):
            return markdown_destination(text)
        return "".join(
            f"[{text_only(piece)}]({markdown_destination(piece)})" if is_url else text_only(piece)
            for is_url, piece in _pieces(text)
        )

    return escape


def markdown_link(escape: Callable[[str], str]) -> Callable[[str, str], Markup]:
    """The ``link(url, label)`` template helper of a markdown target."""

    def link(url: str, label: str) -> Markup:
        return Markup(f"[{escape(str(label))}]({markdown_destination(str(url))})")

    return link


def slack_entities(text: str) -> str:
    """Slack's three control characters, as Slack documents them."""
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


def slack_url(url: str) -> str:
    """A URL inside ``<…>``: its ``&`` escaped and ``|`` (the label separator) encoded."""
    return slack_entities(url).replace("|", "%7C")


def _slack_text(text: str) -> str:
    out: list[str] = []
    position = 0
    for match in _EMOJI.finditer(text):  # :white_check_mark: stays an emoji
        out.append(_slack_marks(text[position : match.start()]))
        out.append(match.group(0))
        position = match.end()
    out.append(_slack_marks(text[position:]))
    escaped = "".join(out)
    return re.sub(r"(?m)^([ \t]*)(&gt;)", lambda m: m.group(1) + SOFT_HYPHEN + m.group(2), escaped)


def _slack_marks(text: str) -> str:
    return re.sub(r"[*_~`]", lambda m: SLACK_DATE.format(m.group(0)), slack_entities(text))


def slack_escape(text: str) -> str:
    """Event text as Slack mrkdwn that shows exactly ``text``."""
    if _whole_url(text):
        return slack_url(text.strip())
    return "".join(
        f"<{slack_url(piece)}>" if is_url else _slack_text(piece) for is_url, piece in _pieces(text)
    )
