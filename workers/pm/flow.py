"""The one algorithm every project-management target runs.

A message is parsed with the chat command grammar (``relay.commands``). A ``task``
command (or, with ``trigger: any``, any message) creates one task; a follow-up verb
(``done``, ``reopen``, ``assign``, ``comment``) in a reply to a task's message, or with
an explicit key (``done OPS-12``), acts on that task. Ordinary chat does nothing.

Exactly one task per message: the delivery's ledger records the task the moment the
tool names it; any attempt after the first looks the task up (``PmClient.find``:
the hidden marker, the tool's own idempotency key) before creating, so a timeout after
the tool created it, a worker killed between create and record, or a lost ledger
still end with one task. Assignees the people map does not know, or the tool
refuses, never lose the task: it is created without them and a comment says who
could not be assigned and why.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import asdict, replace
from typing import Any, ClassVar
from zoneinfo import ZoneInfo

from relay.commands import Command, Verb, parse_command
from relay.commands.model import FOLLOW_UPS
from relay.config.models import TargetConfig
from relay.config.people import SOURCE_PLATFORMS
from relay.errors import ConfigError
from relay.events import Party
from relay.state.tasks import Echoes, Ledger, TaskLinks
from workers.net.addresses import check_url
from workers.net.outcomes import Chained
from workers.pm.options import PmOptions
from workers.pm.spec import (
    RELAY_LABEL,
    Assignee,
    AssigneeRefused,
    PmClient,
    TaskRef,
    TaskSpec,
    idempotency_uuid,
    marker_for,
)
from workers.targets.base import BaseTarget, DeliveryContext, DeliveryResult

DEFAULT_BODY = """\
{% if event.text %}{% for line in event.text.splitlines() %}> {{ line }}
{% endfor %}{% endif %}
— {{ event.sender.name or event.sender.id if event.sender else "someone" }}\
{% if event.group %} in {{ event.group.name or event.group.id }}{% endif %}, \
{{ event.occurred_at.strftime("%Y-%m-%d %H:%M UTC") }}
{% if event.link %}{{ event.link }}
{% endif %}{% if event.files %}
Files:
{% for f in event.files %}- {{ f.name }}{% if f.size %} ({{ f.size }} bytes){% endif %}
{% endfor %}{% endif %}"""

DEFAULT_CONFIRM = """\
{% set zh = command.language == "zh" %}\
{% if action == "created" %}{{ "已创建" if zh else "Created" }} {{ task.key }}\
{% if task.title %}: {{ task.title }}{% endif %}\
{% elif action == "closed" %}{{ task.key }} {{ "已关闭" if zh else "closed" }}\
{% elif action == "reopened" %}{{ task.key }} {{ "已重新打开" if zh else "reopened" }}\
{% elif action == "assigned" %}{{ task.key }} {{ "已指派" if zh else "assigned" }}\
{% elif action == "commented" %}{{ "已评论" if zh else "Commented on" }} {{ task.key }}\
{% else %}{{ task.key }}{% endif %}\
{% if task.url %} {{ task.url }}{% endif %}\
{% for p in problems %}
{{ "注意：" if zh else "Note: " }}{{ p }}{% endfor %}"""

ACTIONS = {
    Verb.DONE: "closed",
    Verb.REOPEN: "reopened",
    Verb.ASSIGN: "assigned",
    Verb.COMMENT: "commented",
}


def _task(value: Any) -> TaskRef | None:
    if not isinstance(value, dict) or not value.get("key") or not value.get("id"):
        return None
    extra = value.get("extra")
    return TaskRef(
        key=str(value["key"]),
        id=str(value["id"]),
        url=value.get("url"),
        extra=extra if isinstance(extra, dict) else {},
    )


class PmTarget(BaseTarget):
    """Base of every project-management target: subclasses give ``client``."""

    family: ClassVar[str] = "pm"
    Options: ClassVar[type[PmOptions]] = PmOptions
    title_limit: ClassVar[int] = 255  # characters the tool takes in a title
    key_pattern: ClassVar[str] = r"[A-Z][A-Z0-9_]+-\d+|#\d+"  # explicit references
    account_platform: ClassVar[str] = ""  # the people-map field holding accounts here
    assign_reports_each: ClassVar[bool] = False  # the tool's webhook: one event per assignee
    address_option: ClassVar[str] = "api_base"  # the option naming where the tool is

    def __init__(self, config: TargetConfig) -> None:
        """Options validated, and the tool's address checked against the SSRF guard (a
        loopback or private address only with ``allow_private``)."""
        super().__init__(config)
        options = config.options
        if not isinstance(options, self.Options):
            options = self.Options.model_validate(options or {})
        try:
            check_url(getattr(options, self.address_option), config.allow_private)
        except ValueError as exc:
            raise ConfigError([f"targets.{config.id}.{self.address_option}: {exc}"]) from None
        self.options = options

    def client(self, context: DeliveryContext) -> PmClient:
        raise NotImplementedError

    # -- the algorithm -----------------------------------------------------------------

    def deliver(self, context: DeliveryContext) -> DeliveryResult:
        if context.event.type.startswith("task."):  # a tool's report, never a command
            return DeliveryResult(excerpt="a task event, not a chat message: nothing to do")
        command = self.command(context)
        if command.verb in FOLLOW_UPS and self.options.follow_ups:
            return self.follow_up(context, command)
        if command.verb is Verb.TASK or (command.verb is None and self.options.trigger == "any"):
            return self.create(context, command)
        return DeliveryResult(excerpt="not a command for this target: nothing to do")

    def command(self, context: DeliveryContext) -> Command:
        event = context.event
        zone = ZoneInfo(self.options.timezone)
        today = event.occurred_at.astimezone(zone).date()
        # the people map's names, so "@张三" in a DingTalk text matches the mention whose
        # staff id the map knows as 张三 (DingTalk callbacks carry ids, not names)
        known = {m.source_id: m.name for m in context.mentions}
        mentions = [Party(id=p.id, name=known.get(p.id) or p.name) for p in event.mentions]
        return parse_command(
            event.text or "",
            mentions,
            today=today,
            bot_names=self.options.bot_names,
            reply=event.in_reply_to is not None,
        )

    def create(self, context: DeliveryContext, command: Command) -> DeliveryResult:
        ledger = Ledger(_redis(context), context.delivery_id, retention=context.retention)
        done = ledger.read()
        client = self.client(context)
        problems = list(command.ignored)
        assignees, unmapped = self.assignees(context, command)
        problems += [self.unmapped_note(name, command) for name in unmapped]
        spec = self.spec(context, command, assignees)
        task = _task(done.get("task"))
        if task is None and (context.attempt > 1 or done.get("state") == "creating"):
            task = client.find(spec)
        if task is None:
            ledger.record(state="creating", problems=problems)
            try:
                task = client.create(spec)
            except AssigneeRefused as refused:
                problems.append(self.refused_note(refused, command))
                ledger.record(problems=problems)  # a retry that finds the task still says so
                task = client.create(replace(spec, assignees=()))
            else:
                accounts = [a.account for a in spec.assignees if a.account]
                if accounts and self.assign_reports_each:  # GitHub tells each one apart
                    self.expect(context, task, "assigned", len(accounts))
        elif done.get("problems") is not None:
            problems = list(done["problems"])
        dropped = task.extra.get("unassigned")  # tools that drop assignees silently (GitLab)
        if dropped:
            why = task.extra.get("unassigned_reason") or "the tool dropped them"
            note = self.refused_note(AssigneeRefused(str(dropped).split(", "), str(why)), command)
            if note not in problems:
                problems.append(note)
        ledger.record(state="created", task=_public(task, spec.title), problems=problems)
        self.link(context, task, spec.title, created=True, language=command.language)
        if problems and not done.get("noted"):
            text = self.problems_text(problems, command)
            self.expect(context, task, "commented")
            client.comment(task, text, marker_for(context.delivery_id, "problems"))
            ledger.record(noted=True)
        return self.result(context, "created", task, spec.title, command, problems)

    def follow_up(self, context: DeliveryContext, command: Command) -> DeliveryResult:
        client = self.client(context)
        task = self.linked_task(context, command, client)
        if task is None:
            what = command.reference or "this thread"
            return DeliveryResult(excerpt=f"no task of this target found for {what}")
        ledger = Ledger(_redis(context), context.delivery_id, retention=context.retention)
        done = ledger.read()
        problems: list[str] = []
        verb = command.verb
        if verb is Verb.DONE:
            self.expect(context, task, "closed")
            client.close(task)
        elif verb is Verb.REOPEN:
            self.expect(context, task, "reopened")
            client.reopen(task)
        elif verb is Verb.ASSIGN:
            assignees, unmapped = self.assignees(context, command)
            problems += [self.unmapped_note(name, command) for name in unmapped]
            accounts = [a.account for a in assignees if a.account]
            if accounts:
                self.expect(context, task, "assigned", len(accounts))
                try:
                    client.assign(task, accounts)
                except AssigneeRefused as refused:
                    problems.append(self.refused_note(refused, command))
        note = self.follow_up_text(context, command)
        if note and not done.get("commented"):
            self.expect(context, task, "commented")
            client.comment(task, note, marker_for(context.delivery_id, "comment"))
            ledger.record(commented=True)
        if problems and not done.get("noted"):
            text = self.problems_text(problems, command)
            self.expect(context, task, "commented")
            client.comment(task, text, marker_for(context.delivery_id, "problems"))
            ledger.record(noted=True)
        action = ACTIONS.get(verb, "updated") if verb else "updated"
        title = str(task.extra.get("title", ""))
        self.link(context, task, title, created=False)
        return self.result(context, action, task, title, command, problems)

    # -- pieces ------------------------------------------------------------------------

    def linked_task(
        self, context: DeliveryContext, command: Command, client: PmClient
    ) -> TaskRef | None:
        """The task a follow-up means: an explicit key of this tool, else the task the
        thread's first message created here."""
        if command.reference:
            if not re.fullmatch(self.key_pattern, command.reference):
                return None
            return client.lookup(command.reference)
        event = context.event
        if not event.in_reply_to or context.state is None:
            return None
        links = TaskLinks(
            _redis(context), retention=context.retention, link_retention=context.link_retention
        )
        group = event.group.id if event.group else None
        found = links.of_message(event.source, group, event.in_reply_to).get(self.config.id)
        return _task(found)

    def assignees(
        self, context: DeliveryContext, command: Command
    ) -> tuple[list[Assignee], list[str]]:
        """The command's assignees with their accounts here, and the names of those
        the people map has no account for."""
        by_id = {m.source_id: m for m in context.mentions}
        same_platform = self.account_platform in SOURCE_PLATFORMS.get(context.source_kind or "", ())
        found: list[Assignee] = []
        unmapped: list[str] = list(command.unknown)
        for mention_id in command.assignees:
            mention = by_id.get(mention_id)
            name = mention.name if mention else mention_id
            account = mention.id_on(self.account_platform) if mention else None
            if account is None and same_platform:
                account = mention_id  # the source's ids are this tool's (Feishu open_id)
            if account:
                found.append(Assignee(name=name, account=account))
            else:
                unmapped.append(name)
        return found, unmapped

    def spec(
        self, context: DeliveryContext, command: Command, assignees: Sequence[Assignee]
    ) -> TaskSpec:
        extra: dict[str, Any] = {"command": command.as_dict()}
        title = command.title or _first_line(context.event.text or "") or "Task from chat"
        if self.options.title_template:
            title = context.render(self.options.title_template, **extra).strip() or title
        title = _cut(title, self.title_limit)
        body = context.render(DEFAULT_BODY, **extra)
        labels = tuple(dict.fromkeys([RELAY_LABEL, *self.options.labels, *command.labels]))
        return TaskSpec(
            title=title,
            body=body,
            marker=marker_for(context.delivery_id),
            idempotency_key=idempotency_uuid(context.delivery_id),
            labels=labels,
            due=command.due,
            priority=command.priority,
            assignees=tuple(assignees),
        )

    def link(
        self,
        context: DeliveryContext,
        task: TaskRef,
        title: str,
        *,
        created: bool,
        language: str | None = None,
    ) -> None:
        event = context.event
        thread = context.thread
        TaskLinks(
            _redis(context), retention=context.retention, link_retention=context.link_retention
        ).link(
            target_id=self.config.id,
            task=_public(task, title),
            event_id=event.id,
            source_id=event.source,
            group_id=event.group.id if event.group else None,
            message_id=event.message_id,
            created=created,
            thread={
                "task_key": task.key,
                "source_kind": thread.source_kind,
                "root": thread.root,
                "reply": thread.reply.model_dump(mode="json") if thread.reply else None,
                "language": language or "en",
            },
        )

    def expect(self, context: DeliveryContext, task: TaskRef, action: str, count: int = 1) -> None:
        """Count a change the relay is about to make, so the tool's report of it is
        known as an echo (two-way sync) and not posted back into the group. Tools that
        report one change per assignee count one per account."""
        updates = self.options.updates
        if updates is None:
            return
        echoes = Echoes(_redis(context), ttl=updates.echo_window)
        times = count if action == "assigned" and self.assign_reports_each else 1
        for _ in range(times):
            echoes.expect(self.config.id, task.key, action)

    def result(
        self,
        context: DeliveryContext,
        action: str,
        task: TaskRef,
        title: str,
        command: Command,
        problems: Sequence[str],
    ) -> DeliveryResult:
        chain: tuple[Chained, ...] = ()
        confirm = self.options.confirm
        wanted = action in (confirm.on if confirm else ()) or (
            bool(problems) and confirm is not None and "problems" in confirm.on
        )
        if confirm is not None and wanted:
            variables = {
                "action": action,
                "task": _public(task, title),
                "command": command.as_dict(),
                "problems": list(problems),
                "target": self.config.id,
            }
            chain = (Chained(confirm.target, variables, confirm.template or DEFAULT_CONFIRM),)
        where = f" {task.url}" if task.url else ""
        return DeliveryResult(status=200, excerpt=f"{action} {task.key}{where}", chain=chain)

    def follow_up_text(self, context: DeliveryContext, command: Command) -> str | None:
        """The comment a follow-up posts: the comment itself, or who closed/reopened the
        task from which group."""
        event = context.event
        who = (event.sender.name or event.sender.id) if event.sender else "someone"
        where = (event.group.name or event.group.id) if event.group else "chat"
        zh = command.language == "zh"
        if command.verb is Verb.COMMENT:
            text = (command.comment or "").strip()
            return f"{text}\n\n— {who} ({where})" if text else None
        if command.verb is Verb.DONE:
            return f"由 {who} 在「{where}」中关闭" if zh else f"Closed by {who} in {where}"
        if command.verb is Verb.REOPEN:
            return f"由 {who} 在「{where}」中重新打开" if zh else f"Reopened by {who} in {where}"
        return None

    def unmapped_note(self, name: str, command: Command) -> str:
        if command.language == "zh":
            return f"@{name} 未指派：people 映射中没有其 {self.account_platform} 账号"
        return f"@{name} not assigned: the people map has no {self.account_platform} account"

    def refused_note(self, refused: AssigneeRefused, command: Command) -> str:
        names = ", ".join(refused.refused)
        if command.language == "zh":
            return f"{names} 未指派：{self.kind} 拒绝（{refused.reason}）"
        return f"{names} not assigned: {self.kind} refused ({refused.reason})"

    def problems_text(self, problems: Sequence[str], command: Command) -> str:
        zh = command.language == "zh"
        head = "group-relay 未能处理：" if zh else "group-relay could not apply:"
        return "\n".join([head, *(f"- {p}" for p in problems)])


def _public(task: TaskRef, title: str) -> dict[str, Any]:
    """The task as links, records, templates and the API show it."""
    data = asdict(task)
    data["title"] = title
    data["extra"] = {**task.extra, "title": title}
    return data


def _first_line(text: str) -> str:
    for line in text.splitlines():
        if line.strip():
            return " ".join(line.split())
    return ""


def _cut(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1].rstrip() + "…"


def _redis(context: DeliveryContext) -> Any:
    if context.state is None:
        raise RuntimeError("project-management targets need the shared Redis")
    return context.state
