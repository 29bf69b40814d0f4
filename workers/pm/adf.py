"""Markdown-ish text as an Atlassian Document Format (ADF) document.

Jira Cloud's REST v3 takes descriptions and comments only as ADF: a plain string is
refused with "Operation value must be an Atlassian Document". Task bodies are written
as light Markdown, so this reads the part of it people and templates actually use:

* blank lines separate paragraphs; a single newline is a line break;
* consecutive lines starting with ``- `` or ``* `` form a bullet list, and lines
  starting with ``>`` a quote (how task bodies quote the chat message);
* ``[label](https://…)`` and bare ``http(s)://`` URLs become links;
* ``**bold**`` becomes strong text and ```code``` inline code;
* ``[~accountid:<id>]`` (Jira's own mention syntax) becomes a mention node, which
  notifies the person.

ADF has no comments, so the delivery marker goes into a last paragraph of small grey
subscript text: visible if looked for, easy to overlook.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

Node = dict[str, Any]

MARKER_COLOR = "#97a0af"  # Atlassian's "subtlest" grey
_BULLET = re.compile(r"^\s*[-*]\s+(.*)$")
_QUOTE = re.compile(r"^\s*>\s?(.*)$")
_INLINE = re.compile(
    r"\[~accountid:(?P<mention>[^\]\s]+)\]"
    r"|\[(?P<label>[^\]\n]+)\]\((?P<href>https?://[^\s)]+)\)"
    r"|\*\*(?P<bold>[^*\n]+?)\*\*"
    r"|`(?P<code>[^`\n]+)`"
    r"|(?P<url>https?://[^\s<>\"]*[^\s<>\"'.,;:!?)\]])"
)


def document(text: str, marker: str | None = None) -> Node:
    """The ADF ``doc`` for ``text``, ending with ``marker`` in its own small paragraph."""
    content = blocks(text)
    if marker:
        content.append(marker_paragraph(marker))
    if not content:  # ADF allows an empty doc, but Jira shows nothing useful for it
        content.append({"type": "paragraph", "content": []})
    return {"type": "doc", "version": 1, "content": content}


def marker_paragraph(marker: str) -> Node:
    """``marker`` as small grey subscript text: ADF's closest thing to hidden."""
    marks = [
        {"type": "subsup", "attrs": {"type": "sub"}},
        {"type": "textColor", "attrs": {"color": MARKER_COLOR}},
    ]
    return {"type": "paragraph", "content": [{"type": "text", "text": marker, "marks": marks}]}


def blocks(text: str) -> list[Node]:
    """Paragraphs and bullet lists of ``text`` (line endings normalised)."""
    found: list[Node] = []
    for chunk in re.split(r"\n\s*\n", text.replace("\r\n", "\n").replace("\r", "\n")):
        lines = [line.rstrip() for line in chunk.split("\n")]
        while lines and not lines[0].strip():
            lines.pop(0)
        while lines and not lines[-1].strip():
            lines.pop()
        found.extend(_chunk(lines))
    return found


def _chunk(lines: list[str], quotes: bool = True) -> list[Node]:
    """One chunk's runs of plain lines, bullets and quoted lines, in order (ADF has no
    quote inside a quote: ``quotes`` is off within one)."""
    found: list[Node] = []
    run: list[str] = []
    run_kind = ""
    for line in lines:
        bullet, quote = _BULLET.match(line), _QUOTE.match(line)
        kind, text = ("bullet", bullet.group(1)) if bullet else ("plain", line)
        if quote and quotes and not bullet:
            kind, text = "quote", quote.group(1)
        if kind != run_kind and run:
            found.append(_BUILDERS[run_kind](run))
            run = []
        run_kind = kind
        run.append(text)
    if run:
        found.append(_BUILDERS[run_kind](run))
    return found


def _paragraph(lines: list[str]) -> Node:
    content: list[Node] = []
    for number, line in enumerate(lines):
        if number:
            content.append({"type": "hardBreak"})
        content.extend(inline(line))
    return {"type": "paragraph", "content": content}


def _bullet_list(items: list[str]) -> Node:
    return {
        "type": "bulletList",
        "content": [{"type": "listItem", "content": [_paragraph([item])]} for item in items],
    }


def _blockquote(lines: list[str]) -> Node:
    return {"type": "blockquote", "content": _chunk(lines, quotes=False) or [_paragraph([""])]}


_BUILDERS: dict[str, Callable[[list[str]], Node]] = {
    "plain": _paragraph,
    "bullet": _bullet_list,
    "quote": _blockquote,
}


def inline(line: str) -> list[Node]:
    """Text, link, strong, code and mention nodes of one line (never an empty text node,
    which Jira refuses)."""
    nodes: list[Node] = []
    position = 0
    for match in _INLINE.finditer(line):
        nodes.extend(_text(line[position : match.start()]))
        position = match.end()
        if match.group("mention"):
            nodes.append({"type": "mention", "attrs": {"id": match.group("mention")}})
        elif match.group("href"):
            nodes.extend(_text(match.group("label"), _link(match.group("href"))))
        elif match.group("bold"):
            nodes.extend(_text(match.group("bold"), {"type": "strong"}))
        elif match.group("code"):
            nodes.extend(_text(match.group("code"), {"type": "code"}))
        else:
            url = match.group("url")
            nodes.extend(_text(url, _link(url)))
    nodes.extend(_text(line[position:]))
    return nodes


def _link(href: str) -> Node:
    return {"type": "link", "attrs": {"href": href}}


def _text(text: str, mark: Node | None = None) -> list[Node]:
    if not text:
        return []
    node: Node = {"type": "text", "text": text}
    if mark is not None:
        node["marks"] = [mark]
    return [node]


def plain_text(node: Node) -> str:
    """The text of an ADF node, lines joined by newlines: what a reader sees, without
    marks (used to find a marker in a description and in tests)."""
    kind = node.get("type")
    if kind == "text":
        return str(node.get("text", ""))
    if kind == "hardBreak":
        return "\n"
    if kind == "mention":
        return f"[~accountid:{node.get('attrs', {}).get('id', '')}]"
    parts = [plain_text(child) for child in node.get("content", [])]
    separator = "\n" if kind in ("doc", "bulletList", "listItem", "blockquote") else ""
    return separator.join(parts)
