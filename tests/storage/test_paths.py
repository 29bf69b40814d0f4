"""Store paths: templates filled safely, hostile names made harmless, limits kept in bytes."""

from __future__ import annotations

import os
from datetime import UTC, datetime

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.errors import PermanentDeliveryError
from relay.events import FileRef, GroupEvent, Party
from workers.storage.options import DEFAULT_PATH
from workers.storage.paths import check_path_template, numbered, render_path, sanitise

WHEN = datetime(2026, 3, 7, 9, 5, 1, tzinfo=UTC)
LOCAL = {"max_segment": 255, "max_path": 4096, "windows_names": True}
S3 = {"max_segment": 1024, "max_path": 1024, "windows_names": False}


def event(**changes: object) -> GroupEvent:
    fields: dict[str, object] = {
        "id": "evt_0001",
        "source": "tg",
        "type": "file.shared",
        "occurred_at": WHEN,
        "group": Party(id="-1001", name="Ops Room"),
        "sender": Party(id="42", name="Ada"),
        "message_id": "77",
    }
    fields.update(changes)
    return GroupEvent.model_validate(fields)


def path_for(name: str, template: str = DEFAULT_PATH, **limits: object) -> str:
    rendered = render_path(
        template, event=event(), file=FileRef(name=name, url="https://x/y"), index=0, source_id="tg"
    )
    return sanitise(rendered, **{**LOCAL, **limits})  # type: ignore[arg-type]


def test_every_field_renders() -> None:
    template = (
        "{source}/{group.id}/{group.name}/{sender.id}/{sender.name}/{event_id}/{message_id}/"
        "{occurred_at:%Y/%m/%d}/{index:03d}-{file.stem}.{file.ext}/{file.name}/{occurred_at}"
    )
    rendered = render_path(
        template,
        event=event(),
        file=FileRef(name="report.final.pdf", url="https://x/y"),
        index=2,
        source_id="telegram-ops",
    )
    assert rendered == (
        "telegram-ops/-1001/Ops Room/42/Ada/evt_0001/77/2026/03/07/"
        "002-report.final.pdf/report.final.pdf/2026-03-07"
    )


def test_the_default_template() -> None:
    assert path_for("a.txt") == "tg/-1001/2026/03/a.txt"


def test_missing_values_keep_their_place() -> None:
    rendered = render_path(
        "{group.name}/{sender.name}/{message_id}/{file.name}",
        event=event(group=None, sender=Party(id="42"), message_id=None),
        file=FileRef(name="a.txt", url="https://x/y"),
        index=0,
        source_id="s",
    )
    assert rendered == "_/42/_/a.txt"


@pytest.mark.parametrize(
    ("name", "expected"),
    [
        ("../../etc/passwd", ".._.._etc_passwd"),
        ("/abs", "_abs"),
        ("a\\..\\b", "a_.._b"),
        ("..", "file"),
        (".", "file"),
        ("", "file"),
        ("   ", "file"),
        ("\u00a0\u3000", "file"),  # Unicode spaces are trimmed like ASCII ones
        ("CON.txt", "_CON.txt"),
        ("aux", "_aux"),
        ("lpt9.tar.gz", "_lpt9.tar.gz"),
        ("CONSOLE.txt", "CONSOLE.txt"),
        ("name.", "name"),
        ("name. . ", "name"),
        ("tab\there\x00nul\x1besc\x7f.txt", "tabherenulesc.txt"),
        ("invoice\u202efdp.exe", "invoicefdp.exe"),
        ('what?<is>:"this"|*.txt', "what__is___this___.txt"),
        ("cafe\u0301.txt", "caf\u00e9.txt"),
        (".env", ".env"),
    ],
)
def test_hostile_file_names_become_one_harmless_segment(name: str, expected: str) -> None:
    path = path_for(name)
    assert path == f"tg/-1001/2026/03/{expected}"


def test_a_group_name_cannot_add_folders() -> None:
    rendered = render_path(
        "{group.name}/{file.name}",
        event=event(group=Party(id="g", name="../../../root/.ssh")),
        file=FileRef(name="id_rsa", url="https://x/y"),
        index=0,
        source_id="s",
    )
    assert sanitise(rendered, **LOCAL) == ".._.._.._root_.ssh/id_rsa"  # type: ignore[arg-type]


def test_windows_rules_only_where_asked() -> None:
    assert path_for("CON.txt", **S3).endswith("/CON.txt")
    assert path_for("a:b?.txt", **S3).endswith("/a:b?.txt")


def test_a_long_cjk_name_is_cut_in_bytes_keeping_its_extension() -> None:
    name = "报" * 300 + ".pdf"
    segment = path_for(name).rsplit("/", 1)[1]
    data = segment.encode("utf-8")
    assert len(data) <= 255
    assert segment.endswith(".pdf")
    assert segment == "报" * 83 + ".pdf"  # 83 × 3 bytes + 4: the most that fits
    data.decode("utf-8")  # no character split


def test_a_cut_never_leaves_a_reserved_name() -> None:
    assert sanitise("CON" + "x" * 300, max_segment=3, max_path=100, windows_names=True) == "_CO"


def test_the_whole_path_is_cut_at_its_longest_segments() -> None:
    path = "a" * 100 + "/" + "b" * 10 + "/" + "c" * 100 + ".txt"
    cut = sanitise(path, max_segment=255, max_path=120, windows_names=False)
    assert len(cut.encode()) <= 120
    first, second, last = cut.split("/")
    assert second == "b" * 10  # short folders stay whole
    assert first == "a" * 54 and last == "c" * 50 + ".txt"


def test_a_path_that_cannot_fit_is_permanent() -> None:
    with pytest.raises(PermanentDeliveryError, match="use a shorter path template"):
        sanitise("/".join(["abc"] * 50), max_segment=255, max_path=90, windows_names=False)


def test_separators_dots_and_empties() -> None:
    assert sanitise("//a/./b/../c//", **LOCAL) == "a/b/c"  # type: ignore[arg-type]
    assert sanitise("a\\b/c", **LOCAL) == "a_b/c"  # type: ignore[arg-type]
    assert sanitise("../..", **LOCAL) == "file"  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{source}/{nope}", "unknown field {nope}"),
        ("{file.__class__}", "unknown field {file.__class__}"),
        ("{file.name[0]}", "unknown field {file.name[0]}"),
        ("{file.name!r}", "conversions are not supported"),
        ("{file.name:{index}}", "nested fields"),
        ("{file.name:>99999}", "widths above 1024"),
        ("{index:%Y}", "{index:%Y}"),
        ("{source", "not a valid path template"),
        ("   ", "empty"),
        ("{", "not a valid path template"),
    ],
)
def test_check_path_template_names_the_problem(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem.replace("{", r"\{").replace("[", r"\[")):
        check_path_template(template)


def test_rendering_an_unknown_field_is_permanent() -> None:
    with pytest.raises(PermanentDeliveryError, match=r"unknown field \{group.topic\}"):
        render_path(
            "{group.topic}/{file.name}",
            event=event(),
            file=FileRef(name="a", url="https://x/y"),
            index=0,
            source_id="s",
        )


def test_a_good_template_passes_the_check() -> None:
    template = "{source}/{occurred_at:%Y/%m}/{index:02d}-{file.name}"
    assert check_path_template(template) == template


def test_numbered_names() -> None:
    assert numbered("a/b/report.pdf", 2) == "a/b/report (2).pdf"
    assert numbered("report", 3) == "report (3)"
    assert numbered(".env", 2) == ".env (2)"
    long = "x/" + "报" * 85 + ".pdf"
    cut = numbered(long, 12, max_segment=255)
    assert len(cut.split("/")[1].encode()) <= 255 and cut.endswith(" (12).pdf")


hostile_text = st.lists(
    st.sampled_from(
        list('./\\ab :*?"<>|~\x00\x1f\u202e\u00e9\u0301中\u2028') + ["..", "CON", "../"]
    ),
    max_size=40,
).map("".join)


@settings(max_examples=400, deadline=None)
@given(path=st.one_of(hostile_text, st.text(max_size=80)), windows=st.booleans())
def test_a_sanitised_path_stays_under_its_root(path: str, windows: bool) -> None:
    root = "/srv/store"
    safe = sanitise(path, max_segment=40, max_path=200, windows_names=windows)
    segments = safe.split("/")
    assert safe and not safe.startswith("/")
    assert all(s not in ("", ".", "..") for s in segments)
    assert "\\" not in safe and "\x00" not in safe
    assert all(len(s.encode()) <= 40 for s in segments) and len(safe.encode()) <= 200
    joined = os.path.normpath(os.path.join(root, safe))
    assert joined.startswith(root + "/")


@settings(max_examples=200, deadline=None)
@given(name=st.one_of(hostile_text, st.text(max_size=80)))
def test_any_file_name_is_one_segment(name: str) -> None:
    rendered = render_path(
        "{source}/{file.name}",
        event=event(),
        file=FileRef(name=name, url="https://x/y"),
        index=0,
        source_id="s",
    )
    safe = sanitise(rendered, **LOCAL)  # type: ignore[arg-type]
    assert safe.split("/")[0] == "s" and len(safe.split("/")) == 2
