"""The chat command grammar: what a message in a group asks of a project-management
target, in English or Chinese.

``@bot task Fix the login timeout @ada due:12-10 #bug p1`` and
``@机器人 任务 修复登录超时 @张三 截止:12-10`` make a task; ``done OPS-12``,
``完成 #12``, ``reopen``, ``assign @bob`` and ``comment …`` act on one. The command
word must come first (after the mentions that address the bot), so ordinary chat never
acts, and a follow-up needs a reply or an explicit key. Whatever cannot be read (a
date that does not exist, an unknown priority) is reported in ``Command.ignored``
instead of failing, so a typo never costs the task. Pure: no I/O and no clock
(``today`` is given), so every worker reads a message the same way.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import date, timedelta

from relay.commands.model import Command, Verb
from relay.events import Party

# Full-width forms people type on Chinese keyboards, read as their ASCII twins. One
# character for one, so positions in the normalised text are positions in the original.
_HALF_WIDTH = str.maketrans({"＠": "@", "＃": "#", "：": ":", "／": "/", "＜": "<", "＞": ">"})

_VERBS: dict[str, tuple[Verb, str]] = {
    "task": (Verb.TASK, "en"),
    "todo": (Verb.TASK, "en"),
    "issue": (Verb.TASK, "en"),
    "任务": (Verb.TASK, "zh"),
    "待办": (Verb.TASK, "zh"),
    "done": (Verb.DONE, "en"),
    "close": (Verb.DONE, "en"),
    "closed": (Verb.DONE, "en"),
    "fixed": (Verb.DONE, "en"),
    "完成": (Verb.DONE, "zh"),
    "已完成": (Verb.DONE, "zh"),
    "关闭": (Verb.DONE, "zh"),
    "reopen": (Verb.REOPEN, "en"),
    "重开": (Verb.REOPEN, "zh"),
    "重新打开": (Verb.REOPEN, "zh"),
    "assign": (Verb.ASSIGN, "en"),
    "指派": (Verb.ASSIGN, "zh"),
    "分配": (Verb.ASSIGN, "zh"),
    "comment": (Verb.COMMENT, "en"),
    "评论": (Verb.COMMENT, "zh"),
    "备注": (Verb.COMMENT, "zh"),
}
_VERB = re.compile(
    "/?(" + "|".join(sorted(map(re.escape, _VERBS), key=len, reverse=True)) + ")",
    re.IGNORECASE,
)
# What may follow a command word: a space, a separator, the end, or a glued @mention,
# #reference or label. Not a letter ("tasks", "任务已完成") and not "?" ("done?").
_AFTER_VERB = frozenset(":,;.!、，。；！@#<")

_ASCII_WORD = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789_")
# A character before "@" that makes it part of an address or a path, not a mention.
_NOT_BEFORE_MENTION = _ASCII_WORD | frozenset(".+-%/=")
_SEPARATORS = ":,;、，；：|｜-–—"  # trimmed from both ends of a title
_ORPHANS = ",;.、，；。"  # punctuation left alone once what it followed is read out
_TRAILING_PUNCTUATION = ".,;!?。，；！？、)）]】」』\"'"
_BROADCAST = ("all", "here", "channel", "everyone", "所有人", "全体成员")
_DEFAULT_BOT_NAMES = ("bot", "机器人")

# The things a task command reads out of its text; everything else is the title.
_TASK_PART = re.compile(
    r"(?P<at><?@)"
    r"|(?P<label>(?<![A-Za-z0-9_&/])#(?P<label_name>[\w\-]{1,100})(?![\w\-]))"
    r"|(?P<due>(?:(?<![A-Za-z0-9_])(?i:due)|截止(?:日期|时间)?)[ \t\u3000]*:[ \t\u3000]*)"
    r"|(?P<priority>(?:(?<![A-Za-z0-9_])(?i:priority|prio)|优先级)[ \t\u3000]*:[ \t\u3000]*)"
    r"|(?P<level>(?<![A-Za-z0-9_])[pP](?P<level_digit>[1-4])(?![A-Za-z0-9_]))"
)
_MENTION_OR_SLACK = re.compile(r"<?@")
_SLACK_MENTION = re.compile(r"<@([A-Za-z0-9]{1,64})(?:\|([^<>|\n]{0,256}))?>")
_UNKNOWN_NAME = re.compile(r"[\w.\-]{1,128}")
_GLUED_OPTION = re.compile(r"截止|优先级")
# A task's key after a verb: #12, OPS-12, a Feishu task guid, or an opaque id of 16 to
# 64 letters and digits with at least one digit (a DingTalk to-do's id).
_REFERENCE = re.compile(
    r"#(\d{1,12})(?![\w\-])"
    r"|([0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})(?![\w\-])"
    r"|([A-Za-z][A-Za-z0-9_]{1,63}-\d{1,12})(?![\w\-])"
    r"|((?=[A-Za-z_]*\d)[A-Za-z0-9_]{16,64})(?![\w\-])"
)
_TELEGRAM_ADDRESS = re.compile(r"@([A-Za-z0-9_]{1,64})")

_WEEKDAYS = {
    **dict.fromkeys(("monday", "mon"), 0),
    **dict.fromkeys(("tuesday", "tues", "tue"), 1),
    **dict.fromkeys(("wednesday", "wed"), 2),
    **dict.fromkeys(("thursday", "thurs", "thur", "thu"), 3),
    **dict.fromkeys(("friday", "fri"), 4),
    **dict.fromkeys(("saturday", "sat"), 5),
    **dict.fromkeys(("sunday", "sun"), 6),
}
_CHINESE_WEEKDAYS = {"一": 0, "二": 1, "三": 2, "四": 3, "五": 4, "六": 5, "日": 6, "天": 6}
_DAYS_FROM_TODAY = {"today": 0, "tomorrow": 1, "今天": 0, "明天": 1, "后天": 2, "大后天": 3}
_WEEK_UNITS = frozenset({"w", "week", "weeks", "周", "星期", "个星期"})
_DATE = re.compile(
    r"(?P<y>\d{4})(?P<sep>[-/.])(?P<m>\d{1,2})(?P=sep)(?P<d>\d{1,2})"
    r"|(?P<zy>\d{4})年(?P<zm>\d{1,2})月(?P<zd>\d{1,2})[日号]?"
    r"|(?P<mm>\d{1,2})[-/](?P<md>\d{1,2})"
    r"|(?P<zmm>\d{1,2})月(?P<zmd>\d{1,2})[日号]?"
    r"|\+?(?P<n>\d{1,5})[ ]?(?P<unit>days|day|d|weeks|week|w|天|个星期|星期|周)"
    r"|(?P<word>tomorrow|today|大后天|后天|明天|今天)"
    r"|(?:下周|下星期|下礼拜)(?P<next_wd>[一二三四五六日天])"
    r"|(?:周|星期|礼拜)(?P<zwd>[一二三四五六日天])"
    r"|(?P<wd>" + "|".join(sorted(_WEEKDAYS, key=len, reverse=True)) + ")",
    re.IGNORECASE,
)
_PRIORITIES = {
    "urgent": "p1",
    "high": "p2",
    "medium": "p3",
    "low": "p4",
    "紧急": "p1",
    "高": "p2",
    "中": "p3",
    "低": "p4",
    **{f"p{n}": f"p{n}" for n in range(1, 5)},
    **{str(n): f"p{n}" for n in range(1, 5)},
}
_PRIORITY = re.compile(r"urgent|high|medium|low|p[1-4]|[1-4]|紧急|高|中|低", re.IGNORECASE)

_NOTES = {
    "not_a_date": (
        "{option} is not a date; no due date set",
        "{option} 不是有效日期，未设置截止时间",
    ),
    "second_due": (
        "{option}: a due date is already set; ignored",
        "{option}：已设置截止时间，忽略",
    ),
    "not_a_priority": (
        "{option} is not a priority (p1-p4, urgent, high, medium, low); no priority set",
        "{option} 不是有效优先级（可用 紧急、高、中、低 或 p1-p4），未设置优先级",
    ),
    "second_priority": (
        "{option}: a priority is already set; ignored",
        "{option}：已设置优先级，忽略",
    ),
    "no_title": ("no title", "没有标题"),
    "no_assignee": ("assign names nobody: write assign @name", "指派未指定人员：请写 指派 @姓名"),
    "no_comment": ("comment has no text", "评论没有内容"),
}


def parse_command(
    text: str,
    mentions: Sequence[Party] = (),
    *,
    today: date,
    bot_names: Sequence[str] = (),
    reply: bool = False,
) -> Command:
    """Read ``text`` as a chat command. ``mentions`` are the event's mentioned parties
    (their ids become assignees), ``today`` is the date in the target's time zone
    (relative dates count from it), ``bot_names`` are the bot's names (skipped where
    they are written) and ``reply`` says the message answers another one, which is what
    a follow-up without an explicit key acts on. Never raises on any text."""
    normal = text.translate(_HALF_WIDTH)
    people = _Mentions(mentions, bot_names)
    start = _skip_address(normal, people)
    verb, language, end = _verb_at(normal, start, people)
    if verb is None:
        return Command(verb=None, language=_language_of(text))
    notes = _Notes(zh=language == "zh")
    if verb is Verb.TASK:
        return _task(text, normal, end, people, today, notes)
    return _follow_up(verb, text, normal, end, people, reply, notes)


# -- mentions -------------------------------------------------------------------------


@dataclass(frozen=True)
class _Mention:
    """One ``@name`` read at ``start:end``: a person of the event (``party``), the bot,
    everyone (``@all``), or a name that matches no mention (``unknown``)."""

    start: int
    end: int
    party: str | None = None
    bot: bool = False
    unknown: str | None = None


@dataclass
class _Mentions:
    """The names a message can @-mention: each mention's name and id, and the bot's."""

    parties: Sequence[Party]
    bot_names: Sequence[str]
    by_first: dict[str, list[tuple[str, str | None]]] = field(default_factory=dict)
    by_id: dict[str, str] = field(default_factory=dict)
    bots: set[str] = field(default_factory=set)  # casefolded names and ids of the bot
    bot_parties: set[str] = field(default_factory=set)  # mentions that are the bot
    addressed: set[str] = field(default_factory=set)  # parties the message opened with

    def __post_init__(self) -> None:
        self.bots = {name.lstrip("@").casefold() for name in self.bot_names if name.strip("@")}
        self.bots.update(_DEFAULT_BOT_NAMES)
        names: list[tuple[str, str | None]] = []
        for party in self.parties:
            self.by_id.setdefault(party.id, party.id)
            if self._names_bot(party):
                self.bot_parties.add(party.id)
            for key in (party.name, party.id, party.id[1:] if party.id[:1] == "@" else None):
                if key:
                    names.append((key, party.id))
        names += [(name.lstrip("@"), None) for name in self.bot_names if name.strip("@")]
        names.sort(key=lambda item: len(item[0]), reverse=True)  # longest name wins
        for key, party_id in names:
            self.by_first.setdefault(key[0].casefold(), []).append((key.casefold(), party_id))

    def _names_bot(self, party: Party) -> bool:
        """A mention of the bot: one of its names, or a Telegram handle ending in "bot"
        (Telegram keeps those for bots)."""
        handle = party.id.casefold()
        if handle.lstrip("@") in self.bots or (party.name or "").casefold() in self.bots:
            return True
        return handle.startswith("@") and handle.endswith("bot")

    def is_bot(self, party_id: str) -> bool:
        return party_id in self.addressed or party_id in self.bot_parties

    def at(self, normal: str, pos: int) -> _Mention | None:
        """The mention starting at ``pos`` (an ``@`` or Slack's ``<@``), if it is one."""
        if normal.startswith("<@", pos):
            return self._slack(normal, pos)
        if pos > 0 and normal[pos - 1] in _NOT_BEFORE_MENTION:
            return None  # a@b.com, https://host/@user
        return self._named(normal, pos + 1, pos)

    def _slack(self, normal: str, pos: int) -> _Mention | None:
        """``<@U123>`` or ``<@U123|bob>``, as Slack writes them."""
        match = _SLACK_MENTION.match(normal, pos)
        if match is None:
            return None
        user_id, label = match.group(1), match.group(2)
        party = self.by_id.get(user_id)
        if party is None and label:
            named = self._named(label, 0, 0)
            party = named.party if named and named.end == len(label) else None
        if party is None and {user_id.casefold(), (label or "").casefold()} & self.bots:
            return _Mention(pos, match.end(), bot=True)
        if party is None:
            return _Mention(pos, match.end(), unknown=label or user_id)
        return _Mention(pos, match.end(), party=party, bot=self.is_bot(party))

    def _named(self, normal: str, name_start: int, pos: int) -> _Mention | None:
        """``@name``: the longest known name written there, else ``@all``, else the word
        that follows as an unknown name."""
        if name_start >= len(normal):
            return None
        for key, party_id in self.by_first.get(normal[name_start].casefold(), ()):
            end = name_start + len(key)
            if normal[name_start:end].casefold() != key or _splits_word(normal, end):
                continue
            if party_id is None:
                return _Mention(pos, end, bot=True)
            return _Mention(pos, end, party=party_id, bot=self.is_bot(party_id))
        word = _UNKNOWN_NAME.match(normal, name_start)
        if word is None:
            return None
        name = word.group(0)
        glued = _GLUED_OPTION.search(name, 1)  # @王五截止:12-10
        if glued is not None and normal.startswith(":", name_start + glued.end()):
            name = name[: glued.start()]
        name = name.rstrip(".-")
        if not name:
            return None
        end = name_start + len(name)
        if name.casefold() in _BROADCAST:
            return _Mention(pos, end)
        if name.casefold() in self.bots:
            return _Mention(pos, end, bot=True)
        return _Mention(pos, end, unknown=name)


def _splits_word(text: str, end: int) -> bool:
    """True when a name matched up to ``end`` would cut an ASCII word in two
    (``@bob`` in ``@bobby``); CJK names may be glued to what follows (``@张三截止``)."""
    return 0 < end < len(text) and text[end - 1] in _ASCII_WORD and text[end] in _ASCII_WORD


def _skip_address(normal: str, people: _Mentions) -> int:
    """Past the mentions a message opens with (``@bot``, ``<@U1>``, ``@_user_1``):
    they say who is addressed; the command word comes after them."""
    pos = _skip_space(normal, 0)
    while pos < len(normal) and normal.startswith(("@", "<@"), pos):
        mention = people.at(normal, pos)
        if mention is None:
            break
        if mention.party is not None:
            people.addressed.add(mention.party)
        pos = _skip_space(normal, mention.end, also=":,，")
    return pos


def _skip_space(text: str, pos: int, also: str = "") -> int:
    while pos < len(text) and (text[pos].isspace() or text[pos] in also):
        pos += 1
    return pos


# -- the command word -----------------------------------------------------------------


def _verb_at(normal: str, pos: int, people: _Mentions) -> tuple[Verb | None, str, int]:
    """The command word at ``pos`` (``task``, ``/task``, ``/task@relay_bot``, ``任务``),
    its language and where it ends; ``None`` when the message starts otherwise."""
    match = _VERB.match(normal, pos)
    if match is None:
        return None, "en", pos
    found = _VERBS.get(match.group(1).casefold())
    if found is None:  # a look-alike letter that case-folds elsewhere
        return None, "en", pos
    verb, language = found
    end = match.end()
    if match.group(0).startswith("/") and (address := _TELEGRAM_ADDRESS.match(normal, end)):
        name = address.group(1).casefold()
        if name in people.bots or name.endswith("bot"):  # Telegram: /task@relay_bot
            end = address.end()
    if end < len(normal) and not (normal[end].isspace() or normal[end] in _AFTER_VERB):
        return None, "en", pos
    if normal.startswith("<", end) and not normal.startswith("<@", end):
        return None, "en", pos
    if normal.startswith(".", end) and _runs_on(normal, end):  # "task.py is broken"
        return None, "en", pos
    return verb, language, end


def _language_of(text: str) -> str:
    """ "zh" when most of the letters are Chinese."""
    chinese = latin = 0
    for char in text:
        if "\u4e00" <= char <= "\u9fff" or "\u3400" <= char <= "\u4dbf":
            chinese += 1
        elif char.isascii() and char.isalpha():
            latin += 1
    return "zh" if chinese > latin else "en"


# -- notes ----------------------------------------------------------------------------


@dataclass
class _Notes:
    """What could not be read, in the language of the command."""

    zh: bool
    lines: list[str] = field(default_factory=list)

    def add(self, what: str, option: str = "") -> None:
        english, chinese = _NOTES[what]
        self.lines.append((chinese if self.zh else english).format(option=option))

    @property
    def language(self) -> str:
        return "zh" if self.zh else "en"


# -- task -----------------------------------------------------------------------------


@dataclass
class _TaskParts:
    """What a task command has read so far."""

    title: list[str] = field(default_factory=list)
    assignees: list[str] = field(default_factory=list)
    unknown: list[str] = field(default_factory=list)
    labels: list[str] = field(default_factory=list)
    due: date | None = None
    due_given: bool = False
    priority: str | None = None
    priority_given: bool = False

    def remove(self, text: str, start: int, end: int) -> None:
        """Leave ``text[start:end]`` out of the title, keeping ASCII words apart."""
        before = text[start - 1] if start > 0 else " "
        after = text[end] if end < len(text) else " "
        if before in _ASCII_WORD and after in _ASCII_WORD:
            self.title.append(" ")


def _task(
    text: str, normal: str, pos: int, people: _Mentions, today: date, notes: _Notes
) -> Command:
    parts = _TaskParts()
    while True:
        match = _TASK_PART.search(normal, pos)
        if match is None:
            parts.title.append(text[pos:])
            break
        parts.title.append(text[pos : match.start()])
        end = _task_part(match, text, normal, people, today, parts, notes)
        if end is None:  # not what it looked like: keep it as title text
            end = match.end()
            parts.title.append(text[match.start() : end])
        else:
            parts.remove(text, match.start(), end)
        pos = end
    title = _first_line("".join(parts.title))
    if not title:
        notes.add("no_title")
    return Command(
        verb=Verb.TASK,
        title=title,
        assignees=tuple(dict.fromkeys(parts.assignees)),
        unknown=tuple(dict.fromkeys(parts.unknown)),
        due=parts.due,
        labels=tuple(dict.fromkeys(parts.labels)),
        priority=parts.priority,
        ignored=tuple(notes.lines),
        language=notes.language,
    )


def _task_part(
    match: re.Match[str],
    text: str,
    normal: str,
    people: _Mentions,
    today: date,
    parts: _TaskParts,
    notes: _Notes,
) -> int | None:
    """Read one mention, label or option; where it ends, or None to keep it as text."""
    kind = match.lastgroup
    if kind == "at":
        mention = people.at(normal, match.start())
        if mention is None:
            return None
        if mention.party is not None and not mention.bot:
            parts.assignees.append(mention.party)
        elif mention.unknown is not None:
            parts.unknown.append(mention.unknown)
        return mention.end
    if kind == "label":
        name = match.group("label_name").strip("-")
        if not name or name.isdigit():  # "#12" is an issue number, not a label
            return None
        parts.labels.append(name)
        return match.end()
    if kind == "level":
        _set_priority(parts, f"p{match.group('level_digit')}", match.group(0), notes)
        return match.end()
    if kind == "due":
        return _read_due(match, text, normal, today, parts, notes)
    return _read_priority(match, text, normal, parts, notes)


def _read_due(
    match: re.Match[str], text: str, normal: str, today: date, parts: _TaskParts, notes: _Notes
) -> int:
    value = _DATE.match(normal, match.end())
    end = value.end() if value is not None else match.end()
    due = _date_of(value, today) if value is not None and not _runs_on(normal, end) else None
    if due is None:
        end = _token_end(normal, match.end())
    option = text[match.start() : end].strip()
    if parts.due_given:
        notes.add("second_due", option)
    elif due is None:
        notes.add("not_a_date", option)
    else:
        parts.due = due
    parts.due_given = parts.due_given or due is not None
    return end


def _read_priority(
    match: re.Match[str], text: str, normal: str, parts: _TaskParts, notes: _Notes
) -> int:
    value = _PRIORITY.match(normal, match.end())
    level = _PRIORITIES.get(value.group(0).casefold()) if value is not None else None
    if value is None or level is None or _runs_on(normal, value.end()):
        end = _token_end(normal, match.end())
        notes.add("not_a_priority", text[match.start() : end].strip())
        return end
    option = text[match.start() : value.end()].strip()
    _set_priority(parts, level, option, notes)
    return value.end()


def _set_priority(parts: _TaskParts, level: str, option: str, notes: _Notes) -> None:
    if parts.priority_given:
        notes.add("second_priority", option)
        return
    parts.priority, parts.priority_given = level, True


def _runs_on(normal: str, end: int) -> bool:
    """True when a value read up to ``end`` is only the start of a longer token
    (``12-10-2026``, ``3days2``, ``highest``), which is then not read at all."""
    if end >= len(normal):
        return False
    char = normal[end]
    if char in _ASCII_WORD or char in "-/:":
        return True
    return char == "." and end + 1 < len(normal) and normal[end + 1] in _ASCII_WORD


def _token_end(normal: str, pos: int) -> int:
    """The end of the word at ``pos``, without the punctuation that closes a sentence."""
    end = pos
    while end < len(normal) and not normal[end].isspace():
        end += 1
    while end > pos and normal[end - 1] in _TRAILING_PUNCTUATION:
        end -= 1
    return end


# -- dates ----------------------------------------------------------------------------


def _date_of(value: re.Match[str], today: date) -> date | None:
    """The date a due value names, or None when there is no such date."""
    group = value.group
    if group("y"):
        return _exact(int(group("y")), int(group("m")), int(group("d")))
    if group("zy"):
        return _exact(int(group("zy")), int(group("zm")), int(group("zd")))
    if group("mm"):
        return _next_month_day(today, int(group("mm")), int(group("md")))
    if group("zmm"):
        return _next_month_day(today, int(group("zmm")), int(group("zmd")))
    if group("n"):
        weeks = group("unit").casefold() in _WEEK_UNITS
        return _plus_days(today, int(group("n")) * (7 if weeks else 1))
    if group("word"):
        days = _DAYS_FROM_TODAY.get(group("word").casefold())
        return None if days is None else _plus_days(today, days)
    if group("next_wd"):
        return _plus_days(today, 7 - today.weekday() + _CHINESE_WEEKDAYS[group("next_wd")])
    if group("zwd"):
        weekday: int | None = _CHINESE_WEEKDAYS[group("zwd")]
    else:
        weekday = _WEEKDAYS.get(group("wd").casefold())
    return None if weekday is None else _plus_days(today, (weekday - today.weekday()) % 7)


def _exact(year: int, month: int, day: int) -> date | None:
    try:
        return date(year, month, day)
    except ValueError:
        return None


def _next_month_day(today: date, month: int, day: int) -> date | None:
    """The next ``month``-``day`` on or after ``today`` (02-29 waits for a leap year)."""
    for year in range(today.year, today.year + 9):
        found = _exact(year, month, day)
        if found is not None and found >= today:
            return found
    return None


def _plus_days(today: date, days: int) -> date | None:
    try:
        return today + timedelta(days=days)
    except OverflowError:
        return None


# -- follow-ups -----------------------------------------------------------------------


def _follow_up(
    verb: Verb,
    text: str,
    normal: str,
    pos: int,
    people: _Mentions,
    reply: bool,
    notes: _Notes,
) -> Command:
    """``done``, ``reopen``, ``assign @x``, ``comment …``: on the task of the thread
    (``reply``) or of an explicit key right after the word (``OPS-12``, ``#12``).
    Without either, only the bare command counts: "done for today" is chat."""
    pos = _skip_space(normal, pos, also=":,，")
    reference = None
    if found := _REFERENCE.match(normal, pos):
        number, guid, key, opaque = found.groups()
        if number:
            reference = f"#{number}"
        elif key:
            reference = key.upper()
        else:
            reference = guid.lower() if guid else opaque
        pos = _skip_space(normal, found.end(), also=":,，")
    anchored = reply or reference is not None
    rest = text[pos:]
    if verb is Verb.COMMENT:
        if not anchored:
            return Command(verb=None, language=_language_of(text))
        comment = rest.strip()
        if not comment:
            notes.add("no_comment")
        return _answer(verb, reference, notes, comment=comment or None)
    if verb is Verb.ASSIGN:
        return _assign(normal, pos, people, anchored, reference, notes, text)
    if not anchored and _has_words(rest):
        return Command(verb=None, language=_language_of(text))
    return _answer(verb, reference, notes)


def _assign(
    normal: str,
    pos: int,
    people: _Mentions,
    anchored: bool,
    reference: str | None,
    notes: _Notes,
    text: str,
) -> Command:
    assignees: list[str] = []
    unknown: list[str] = []
    leftover: list[str] = []
    while match := _MENTION_OR_SLACK.search(normal, pos):
        mention = people.at(normal, match.start())
        leftover.append(normal[pos : match.start()])
        if mention is None:
            leftover.append(match.group(0))
            pos = match.end()
            continue
        if mention.party is not None and not mention.bot:
            assignees.append(mention.party)
        elif mention.unknown is not None:
            unknown.append(mention.unknown)
        pos = mention.end
    leftover.append(normal[pos:])
    if not anchored and _has_words("".join(leftover)):
        return Command(verb=None, language=_language_of(text))
    if not assignees and not unknown:
        notes.add("no_assignee")
    return _answer(
        Verb.ASSIGN,
        reference,
        notes,
        assignees=tuple(dict.fromkeys(assignees)),
        unknown=tuple(dict.fromkeys(unknown)),
    )


def _answer(
    verb: Verb,
    reference: str | None,
    notes: _Notes,
    *,
    comment: str | None = None,
    assignees: tuple[str, ...] = (),
    unknown: tuple[str, ...] = (),
) -> Command:
    return Command(
        verb=verb,
        reference=reference,
        comment=comment,
        assignees=assignees,
        unknown=unknown,
        ignored=tuple(notes.lines),
        language=notes.language,
    )


def _has_words(text: str) -> bool:
    return any(char.isalnum() for char in text)


def _first_line(text: str) -> str:
    """The first line with words, its whitespace collapsed, stray punctuation dropped."""
    for line in text.splitlines():
        words = [word for word in line.split() if word.strip(_ORPHANS)]
        cleaned = " ".join(words).strip(_SEPARATORS + " ")
        if cleaned:
            return cleaned
    return ""
