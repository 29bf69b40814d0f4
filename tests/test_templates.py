"""Message templates as docs/templates.md describes them: what a template sees, the
sandbox, strict undefined, HTML escaping only for email, and errors that name the line."""

from __future__ import annotations

import pytest

from relay.config.kinds import target_option_models
from relay.config.loader import parse_config
from relay.config.people import People, Person
from relay.errors import ConfigError, PermanentDeliveryError
from relay.events import FileRef, GroupEvent, Party
from relay.templates import TemplateError, check_template, compile_template, render
from tests.conftest import TEST_SECRET
from workers.targets.base import DeliveryContext

ADA = Person(name="Ada Lovelace", dingtalk="manager4521", slack="U024BE7LH", feishu="ou_7d8a")


def event(**fields: object) -> GroupEvent:
    values: dict[str, object] = {
        "source": "ding-ops",
        "type": "message.created",
        "group": Party(id="g1", name="Ops"),
        "sender": Party(id="u1", name="Ann"),
        "text": "deploy <done> & green",
        "mentions": [Party(id="manager4521", name="ada-ding"), Party(id="u9", name="Bob")],
        "files": [FileRef(name="log.txt", size=12, url="https://files.example.com/log.txt")],
    }
    values.update(fields)
    return GroupEvent.model_validate(values)


# -- what a template sees ------------------------------------------------------------------


def test_the_documented_example_renders_an_event_with_mentions() -> None:
    """The target template of docs/templates.md, with ``mentions`` resolved through
    ``people`` and ``at`` as a chat kind passes it."""
    source = (
        "**{{ event.group.name }}** · {{ event.sender.name }}\n"
        "{{ event.text }}\n"
        '{{ at | join(" ") }}\n'
    )
    found = event()
    mentions = People({"ada": ADA}).resolve(found, "dingtalk_robot")
    at = [f"<@{m.id_on('slack')}>" if m.id_on("slack") else f"@{m.name}" for m in mentions]
    text = render(source, event=found, mentions=mentions, at=at)
    assert text == "**Ops** · Ann\ndeploy <done> & green\n<@U024BE7LH> @Bob"


def test_mentions_carry_name_source_id_person_and_ids_per_platform() -> None:
    found = event()
    mentions = People({"ada": ADA}).resolve(found, "dingtalk_robot")
    source = (
        "{% for m in mentions %}"
        "{{ m.name }}|{{ m.source_id }}|{{ m.id_on('feishu') }}|{{ m.person.name if m.person }}\n"
        "{% endfor %}"
    )
    assert render(source, event=found, mentions=mentions) == (
        "Ada Lovelace|manager4521|ou_7d8a|Ada Lovelace\nBob|u9|None|"
    )


def test_the_route_example_lists_file_names() -> None:
    source = (
        "New file in {{ event.group.name }}: {{ event.files | map(attribute='name') | join(', ') }}"
    )
    files = [FileRef(name="a.pdf", url="https://x.example.com/a"), FileRef(name="b.png", ref="r")]
    assert render(source, event=event(files=files)) == "New file in Ops: a.pdf, b.png"


def test_truncate_text_keeps_n_characters_with_an_ellipsis() -> None:
    assert render("{{ 'abcdef' | truncate_text(4) }}") == "abc…"
    assert render("{{ 'abcd' | truncate_text(4) }}") == "abcd"
    assert render("{{ ('x' * 300) | truncate_text }}") == "x" * 199 + "…"


def test_blocks_leave_no_blank_lines_and_the_result_is_stripped() -> None:
    source = "\n{% if event.group %}\n  group: {{ event.group.id }}\n{% endif %}\n\n"
    assert render(source, event=event()) == "group: g1"


# -- escaping ------------------------------------------------------------------------------


def test_html_output_is_escaped_and_chat_output_is_not() -> None:
    found = event()
    assert render("{{ event.text }}", html=True, event=found) == "deploy &lt;done&gt; &amp; green"
    assert render("{{ event.text }}", event=found) == "deploy <done> & green"


# -- the sandbox ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "source",
    [
        "{{ event.__class__ }}",
        "{{ event.group.__class__.__mro__ }}",
        "{{ event.__init__.__globals__ }}",
        "{{ ().__class__.__bases__[0].__subclasses__() }}",
        "{{ cycler.__init__.__globals__.os }}",
        "{{ '{0.__class__.__init__.__globals__}'.format(event) }}",
        "{{ event.__pydantic_fields__ }}",
    ],
)
def test_the_sandbox_refuses_attribute_escapes(source: str) -> None:
    with pytest.raises(TemplateError, match=r"^template line 1: access to attribute '_.*unsafe"):
        render(source, event=event())


# -- missing fields and errors -------------------------------------------------------------


def test_a_missing_optional_field_fails_naming_the_line() -> None:
    """docs: ``{{ event.group.name }}`` for an event without a group fails, naming its line."""
    with pytest.raises(TemplateError) as caught:
        render("hello\n{{ event.group.name }}", event=event(group=None))
    assert str(caught.value) == "template line 2: 'None' has no attribute 'name'"


def test_a_guarded_optional_field_renders_empty() -> None:
    source = "[{{ event.group.name if event.group else '' }}]"
    assert render(source, event=event(group=None)) == "[]"


@pytest.mark.parametrize(
    "source, message",
    [
        ("{{ evnt.text }}", "template line 1: 'evnt' is undefined"),
        (
            "a\nb\n{{ event.sender.nmae }}",
            "template line 3: 'relay.events.Party object' has no attribute 'nmae'",
        ),
        ("{{ event.files[3] }}", "template line 1: list object has no element 3"),
        (
            "x\n{{ 1 // 0 }}",
            "template line 2: ZeroDivisionError: integer division or modulo by zero",
        ),
    ],
)
def test_a_rendering_error_names_the_line(source: str, message: str) -> None:
    """Strict undefined: a typo is an error, not an empty string."""
    with pytest.raises(TemplateError) as caught:
        render(source, event=event())
    assert str(caught.value) == message


def test_a_rendering_error_fails_the_delivery_permanently() -> None:
    """Retrying cannot fix a template: the delivery goes to the dead-letter queue."""
    context = DeliveryContext(
        delivery_id="dlv_1",
        attempt=1,
        event_json=event(group=None).to_json(),
        timeout=5,
        template="{{ event.sender.name }}\n{{ event.group.name }}",
    )
    with pytest.raises(PermanentDeliveryError, match="^template line 2: 'None' has no attribute"):
        context.render("unused default")


@pytest.mark.parametrize(
    "source, message",
    [
        ("{{ event.group.name }", "template line 1: unexpected '}'"),
        ("ok\n{% if %}", "template line 2: Expected an expression, got 'end of statement block'"),
        ("a\nb\n{% endfor %}", "template line 3: Encountered unknown tag 'endfor'."),
    ],
)
def test_check_template_names_the_line_of_a_syntax_error(source: str, message: str) -> None:
    with pytest.raises(TemplateError) as caught:
        check_template(source)
    assert str(caught.value) == message
    assert isinstance(caught.value, ValueError)  # what pydantic validators turn into a problem


def test_check_template_returns_a_good_template_unchanged() -> None:
    source = "{{ event.text | truncate_text(50) }}"
    assert check_template(source) is source
    assert compile_template(source) is compile_template(source)  # compiled once per text


def test_the_config_names_each_bad_template_by_its_path() -> None:
    """What ``relay check`` prints: the field's path, then the line."""
    data = {
        "sources": [{"id": "ops", "kind": "standard_webhooks", "secrets": [TEST_SECRET]}],
        "targets": [
            {"id": "s", "kind": "webhook", "url": "https://x.example.com", "template": "a\n{{ x }"}
        ],
        "routes": [{"source": "ops", "targets": ["s"], "template": "{% if %}"}],
    }
    with pytest.raises(ConfigError) as caught:
        parse_config(data, target_options=target_option_models())
    assert str(caught.value).splitlines() == [
        "targets[0].template: template line 2: unexpected '}'",
        "routes[0].template: template line 1: Expected an expression, got 'end of statement block'",
    ]
