"""Where a file goes in a store: the configured template, filled safely, then sanitised.

File and group names come from chat users, so every value is cleaned before it takes
its place in the template: a ``/`` or ``\\`` inside a value is replaced, so a file
named ``../../etc/passwd`` becomes the one segment ``.._.._etc_passwd`` and can never
climb out of the store's root. Only the template's own ``/`` (and the ``/`` of an
``occurred_at`` format such as ``%Y/%m``) separate folders. ``sanitise`` then makes
the joined path acceptable to the store: NFC, no control or bidi characters, no
``.``/``..`` or empty segments, Windows-reserved names avoided where the store may
sit on SMB, and each segment and the whole path within the store's byte limits,
cut without splitting a character and keeping the extension.

The template is a ``str.format`` string, but rendered by hand from a fixed table of
names: no attribute access, no indexing, no conversions, so a template cannot reach
anything but the listed values.
"""

from __future__ import annotations

import re
import string
import unicodedata
from collections.abc import Mapping
from datetime import UTC, datetime

from relay.errors import PermanentDeliveryError
from relay.events import FileRef, GroupEvent, Party

FIELDS = (
    "source",
    "group.id",
    "group.name",
    "sender.id",
    "sender.name",
    "event_id",
    "message_id",
    "occurred_at",
    "file.name",
    "file.stem",
    "file.ext",
    "index",
)
DEFAULT_DATE = "%Y-%m-%d"  # ``{occurred_at}`` without a format
MISSING = "_"  # a value the event does not have (no group, no message id)
EMPTY_NAME = "file"  # a file name that is empty once cleaned
MAX_WIDTH = 1024  # the largest width or precision a format may ask for
MAX_EXT_BYTES = 16  # a longer "extension" is part of the name, not kept when cutting

_WINDOWS_RESERVED = {"CON", "PRN", "AUX", "NUL"} | {
    f"{base}{n}" for base in ("COM", "LPT") for n in range(1, 10)
}
_WINDOWS_FORBIDDEN = re.compile(r'[<>:"|?*]')
_SEPARATORS = re.compile(r"[/\\]")
_DIGITS = re.compile(r"\d+")
# Invisible characters that change how a name reads: bidi embeddings, overrides and
# isolates (U+202E makes "exe.txt" read "txt.exe"), marks, the BOM, line separators.
_INVISIBLE = frozenset(
    "\u061c\u200e\u200f\u202a\u202b\u202c\u202d\u202e\u2066\u2067\u2068\u2069\ufeff\u2028\u2029"
)


def _dropped(char: str) -> bool:
    return char in _INVISIBLE or unicodedata.category(char) in ("Cc", "Cs")


def clean_text(value: str) -> str:
    """NFC, without control, surrogate and bidi characters."""
    value = unicodedata.normalize("NFC", value)
    return "".join(c for c in value if not _dropped(c))


# -- the template ------------------------------------------------------------------------


def _parts(template: str) -> list[tuple[str, str | None, str | None, str | None]]:
    try:
        return list(string.Formatter().parse(template))
    except ValueError as exc:
        raise ValueError(f"not a valid path template: {exc}") from None


def _check_field(name: str, spec: str, conversion: str | None) -> None:
    if name not in FIELDS:
        raise ValueError(f"unknown field {{{name}}} in the path; known: {', '.join(FIELDS)}")
    if conversion is not None:
        raise ValueError(f"{{{name}!{conversion}}}: conversions are not supported")
    if "{" in spec or "}" in spec:
        raise ValueError(f"{{{name}}}: nested fields in a format are not supported")
    if name != "occurred_at" and any(int(d) > MAX_WIDTH for d in _DIGITS.findall(spec)):
        raise ValueError(f"{{{name}:{spec}}}: widths above {MAX_WIDTH} are not supported")


def check_path_template(template: str) -> str:
    """The template if it renders; ``ValueError`` naming what is wrong (for config)."""
    if not template.strip():
        raise ValueError("the path template is empty")
    for _, name, spec, conversion in _parts(template):
        if name is not None:
            _check_field(name, spec or "", conversion)
    sample = GroupEvent(
        source="sample",
        group=Party(id="g1", name="Group"),
        sender=Party(id="u1", name="Ada"),
        message_id="m1",
    )
    try:
        rendered = render_path(
            template, event=sample, file=FileRef(name="a.txt", url="x"), index=0, source_id="s"
        )
    except PermanentDeliveryError as exc:
        raise ValueError(str(exc)) from None
    if not sanitise(rendered, max_segment=255, max_path=4096, windows_names=False):
        raise ValueError("the path template renders to an empty path")
    return template


def _values(
    event: GroupEvent, file: FileRef, index: int, source_id: str
) -> Mapping[str, str | int | datetime]:
    name = clean_text(file.name)
    stem, ext = split_ext(_SEPARATORS.sub("_", name))
    group, sender = event.group, event.sender
    return {
        "source": source_id,
        "group.id": group.id if group else MISSING,
        "group.name": (group.name or group.id) if group else MISSING,
        "sender.id": sender.id if sender else MISSING,
        "sender.name": (sender.name or sender.id) if sender else MISSING,
        "event_id": event.id,
        "message_id": event.message_id or MISSING,
        "occurred_at": event.occurred_at,
        "file.name": name,
        "file.stem": stem,
        "file.ext": ext.lstrip("."),
        "index": index,
    }


def _placeholder(name: str) -> str:
    if name == "file.ext":
        return ""
    return EMPTY_NAME if name.startswith("file.") else MISSING


def _format(name: str, value: str | int | datetime, spec: str) -> str:
    """One field as text; only an ``occurred_at`` format may produce folders (``/``)."""
    try:
        if isinstance(value, datetime):
            when = value if value.tzinfo else value.replace(tzinfo=UTC)
            return clean_text(when.strftime(spec or DEFAULT_DATE)).replace("\\", "_")
        text = format(value, spec)
    except (ValueError, TypeError) as exc:
        raise PermanentDeliveryError(f"path template: {{{name}:{spec}}}: {exc}") from None
    text = _SEPARATORS.sub("_", clean_text(text))
    if not _trim(text):  # blank, or only dots: would vanish, or mean a parent folder
        return _placeholder(name)
    return text


def render_path(
    template: str, *, event: GroupEvent, file: FileRef, index: int, source_id: str
) -> str:
    """The template filled with this file's values, each cleaned to stay one segment.

    Fields: ``source``, ``group.id``, ``group.name``, ``sender.id``, ``sender.name``,
    ``event_id``, ``message_id``, ``occurred_at`` (``{occurred_at:%Y/%m}``),
    ``file.name``, ``file.stem``, ``file.ext`` (without the dot), ``index``. A missing
    value (no group) renders as ``_``; an unknown field is a permanent error.
    """
    values = _values(event, file, index, source_id)
    out: list[str] = []
    try:
        parts = _parts(template)
        for literal, name, spec, conversion in parts:
            out.append(literal)
            if name is None:
                continue
            _check_field(name, spec or "", conversion)
            out.append(_format(name, values[name], spec or ""))
    except ValueError as exc:
        raise PermanentDeliveryError(f"path template: {exc}") from None
    return "".join(out)


# -- sanitising --------------------------------------------------------------------------


def split_ext(name: str) -> tuple[str, str]:
    """``("report", ".pdf")``; a leading dot (``.env``) or a long tail is no extension."""
    stem, dot, ext = name.rpartition(".")
    if not dot or not stem or not ext or len(ext.encode()) + 1 > MAX_EXT_BYTES or " " in ext:
        return name, ""
    return stem, "." + ext


def cut_bytes(text: str, limit: int) -> str:
    """``text`` within ``limit`` bytes of UTF-8, never splitting a character."""
    data = text.encode("utf-8")
    if len(data) <= limit:
        return text
    return data[: max(0, limit)].decode("utf-8", errors="ignore")


def _fit(segment: str, limit: int) -> str:
    """A segment within ``limit`` bytes, its extension kept when there is room for it."""
    if len(segment.encode()) <= limit:
        return segment
    stem, ext = split_ext(segment)
    room = limit - len(ext.encode())
    if room < 1:
        return _trim(cut_bytes(segment, limit)) or MISSING
    return (_trim(cut_bytes(stem, room)) or MISSING) + ext


def _trim(segment: str) -> str:
    """Without surrounding whitespace and trailing dots (Windows and SMB drop them, and
    a name ending in a dot cannot be opened there)."""
    return segment.strip().rstrip(". ")


def _reserved(segment: str) -> bool:
    return segment.split(".", 1)[0].strip().upper() in _WINDOWS_RESERVED


def _segment(segment: str, limit: int, windows_names: bool) -> str:
    """One cleaned segment within ``limit`` bytes, Windows-safe when asked."""
    if windows_names:
        segment = _WINDOWS_FORBIDDEN.sub("_", segment)
    fitted = _fit(segment, limit)
    if windows_names and _reserved(fitted):  # CON.txt, also one that cutting made
        fitted = "_" + _fit(segment, limit - 1)
    return fitted


def sanitise(path: str, *, max_segment: int, max_path: int, windows_names: bool) -> str:
    """A relative path the store accepts and that stays under its root.

    Segments are separated by ``/`` only (a ``\\`` left is replaced); empty, ``.`` and
    ``..`` segments are dropped; each segment is NFC, without control characters,
    trimmed of trailing dots and spaces, Windows-safe when ``windows_names``, and within
    ``max_segment`` bytes; the longest segments are cut further until the whole path is
    within ``max_path`` bytes. An empty result is ``file``.
    """
    segments: list[str] = []
    for raw in clean_text(path).replace("\\", "_").split("/"):
        segment = _trim(raw)
        if not segment or segment in (".", ".."):
            continue
        segments.append(_segment(segment, max_segment, windows_names))
    if not segments:
        segments = [EMPTY_NAME]
    return "/".join(_within(segments, max_path, windows_names))


def _within(segments: list[str], max_path: int, windows_names: bool) -> list[str]:
    """Cut the longest segments to one common length (the longest that fits), so short
    folder names stay whole; permanent if even one byte each cannot fit."""
    sizes = [len(s.encode()) for s in segments]
    room = max_path - (len(segments) - 1)
    if sum(sizes) <= room:
        return segments
    if room < len(segments):
        raise PermanentDeliveryError(
            f"the path has {len(segments)} segments; this store allows {max_path} bytes: "
            "use a shorter path template"
        )
    low, high = 1, max(sizes)  # the largest level whose cut sizes sum within room
    while low < high:
        level = (low + high + 1) // 2
        if sum(min(size, level) for size in sizes) <= room:
            low = level
        else:
            high = level - 1
    return [
        _segment(s, low, windows_names) if size > low else s
        for s, size in zip(segments, sizes, strict=True)
    ]


def numbered(path: str, n: int, *, max_segment: int | None = None) -> str:
    """``dir/name (n).ext``: the ``n``-th name tried when ``dir/name.ext`` is taken; the
    name is cut to keep the result within ``max_segment`` bytes when given."""
    folder, slash, name = path.rpartition("/")
    stem, ext = split_ext(name)
    suffix = f" ({n}){ext}"
    if max_segment is not None:
        stem = _trim(cut_bytes(stem, max_segment - len(suffix.encode()))) or MISSING
    return f"{folder}{slash}{stem}{suffix}"
