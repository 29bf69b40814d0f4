"""The chat command grammar, read as a group writes it: the issue's own examples, every
verb and option in English and Chinese, typos that must not cost the task, ordinary
chat that must never act, and any text at all without raising."""

from __future__ import annotations

from datetime import date

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from relay.commands import Command, Verb, parse_command
from relay.events import Party

TODAY = date(2026, 12, 6)  # a Sunday
ZHANG = Party(id="u_zs", name="张三")
BOB = Party(id="U1", name="bob")


def parse(text: str, *mentions: Party, reply: bool = False, bots: tuple[str, ...] = ()) -> Command:
    return parse_command(text, mentions, today=TODAY, bot_names=bots, reply=reply)


# -- the examples -------------------------------------------------------------


def test_the_english_example_parses_exactly() -> None:
    command = parse("@bot task Fix the login timeout @张三 due:2026-12-10 #bug p1", ZHANG)
    assert command == Command(
        verb=Verb.TASK,
        title="Fix the login timeout",
        assignees=("u_zs",),
        due=date(2026, 12, 10),
        labels=("bug",),
        priority="p1",
        language="en",
    )


def test_the_chinese_example_parses_exactly() -> None:
    command = parse("@bot 任务 修复登录超时 @张三 截止:12-10", ZHANG)
    assert command == Command(
        verb=Verb.TASK,
        title="修复登录超时",
        assignees=("u_zs",),
        due=date(2026, 12, 10),
        language="zh",
    )


@pytest.mark.parametrize(
    ("text", "verb", "reference", "language"),
    [
        ("done OPS-123", Verb.DONE, "OPS-123", "en"),
        ("完成 #12", Verb.DONE, "#12", "zh"),
        ("完成#12", Verb.DONE, "#12", "zh"),
        ("close ops-7", Verb.DONE, "OPS-7", "en"),
        ("fixed #3", Verb.DONE, "#3", "en"),
        ("已完成 ENG-42", Verb.DONE, "ENG-42", "zh"),
        ("关闭 #9", Verb.DONE, "#9", "zh"),
        ("reopen OPS-1", Verb.REOPEN, "OPS-1", "en"),
        ("重新打开 #5", Verb.REOPEN, "#5", "zh"),
        # a DingTalk to-do's id and a Feishu task's guid, where chats have no replies
        ("完成 1f3aE9c04b7d2a6e", Verb.DONE, "1f3aE9c04b7d2a6e", "zh"),
        (
            "done 0B6E8D2C-1F3A-4C5D-9E7F-2A4B6C8D0E1F",
            Verb.DONE,
            "0b6e8d2c-1f3a-4c5d-9e7f-2a4b6c8d0e1f",
            "en",
        ),  # fmt: skip
    ],
)
def test_follow_ups_take_an_explicit_key_right_after_the_word(
    text: str, verb: Verb, reference: str, language: str
) -> None:
    command = parse(text)
    assert (command.verb, command.reference, command.language) == (verb, reference, language)


@pytest.mark.parametrize("text", ["done everythingfortoday", "done for today", "完成了"])
def test_a_long_word_without_digits_is_chat_not_a_key(text: str) -> None:
    assert parse(text).verb is None


def test_reopen_in_a_thread_needs_no_key() -> None:
    assert parse("reopen", reply=True) == Command(verb=Verb.REOPEN)
    assert parse("重开", reply=True) == Command(verb=Verb.REOPEN, language="zh")


def test_assign_names_the_mentioned_people() -> None:
    assert parse("assign @bob", BOB, reply=True) == Command(verb=Verb.ASSIGN, assignees=("U1",))
    assert parse("指派 @张三", ZHANG, reply=True) == Command(
        verb=Verb.ASSIGN, assignees=("u_zs",), language="zh"
    )
    both = parse("分配 @张三 @bob @nobody", ZHANG, BOB, reply=True)
    assert both.assignees == ("u_zs", "U1")
    assert both.unknown == ("nobody",)


def test_a_hash_number_inside_a_comment_is_text_not_a_label() -> None:
    command = parse("comment the fix is in #45", reply=True)
    assert command == Command(verb=Verb.COMMENT, comment="the fix is in #45")
    assert command.labels == ()


def test_a_comment_keeps_its_lines_and_its_mentions() -> None:
    command = parse("评论：已修复\n见 @张三 的提交 #bug", ZHANG, reply=True)
    assert command.verb is Verb.COMMENT
    assert command.comment == "已修复\n见 @张三 的提交 #bug"
    assert command.language == "zh"
    assert command.assignees == ()


def test_a_comment_with_a_key_acts_on_that_task() -> None:
    command = parse("comment OPS-9 deployed to staging")
    assert (command.verb, command.reference, command.comment) == (
        Verb.COMMENT,
        "OPS-9",
        "deployed to staging",
    )


# -- ordinary chat never acts ---------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "I am done for today",
        "we should close the window",
        "tasks are piling up",
        "task-force meeting at 3",
        "task.py is broken",
        "done?",
        "完成了吗？",
        "任务已完成",
        "任务？",
        "hello @bot task Fix it",
        "",
        "   ",
        "@bot",
        "@bot Fix the login timeout due:12-10 #bug",
    ],
)
def test_ordinary_chat_has_no_verb(text: str) -> None:
    assert parse(text, reply=True).verb is None


def test_a_follow_up_outside_a_thread_without_a_key_is_chat_unless_bare() -> None:
    assert parse("done for today").verb is None
    assert parse("done for today", reply=True).verb is Verb.DONE
    assert parse("done").verb is Verb.DONE
    assert parse("Done!").verb is Verb.DONE
    assert parse("assign @bob", BOB).verb is Verb.ASSIGN
    assert parse("assign @bob to the review", BOB).verb is None
    assert parse("comment the fix is in #45").verb is None


def test_no_verb_reads_the_language_of_the_text() -> None:
    assert parse("今天的会议改到下午三点").language == "zh"
    assert parse("the meeting moved to 3pm").language == "en"


# -- the command word -----------------------------------------------------------------


@pytest.mark.parametrize(
    "text",
    [
        "task Fix it",
        "TASK Fix it",
        "Task: Fix it",
        "/task Fix it",
        "/task@relay_bot Fix it",
        "todo Fix it",
        "issue Fix it",
        "@bot task Fix it",
        "@bot, task Fix it",
        "@RelayBot task Fix it",
        "@Relay Bot task Fix it",
        "<@UBOT> task Fix it",
        "@_user_1 task Fix it",
        "\u3000@bot\u3000task\u3000Fix it",
        "\n  task   Fix    it  \n",
    ],
)
def test_the_verb_comes_first_after_the_bot_mentions(text: str) -> None:
    command = parse(text, bots=("Relay Bot", "RelayBot"))
    assert (command.verb, command.title) == (Verb.TASK, "Fix it")


@pytest.mark.parametrize(
    "text", ["任务 修复登录", "任务：修复登录", "待办 修复登录", "/任务 修复登录"]
)
def test_chinese_task_words(text: str) -> None:
    command = parse(text)
    assert (command.verb, command.title, command.language) == (Verb.TASK, "修复登录", "zh")


def test_the_language_follows_the_command_word() -> None:
    assert parse("task 修复登录").language == "en"
    assert parse("任务 fix login").language == "zh"


# -- due dates ------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "due"),
    [
        ("due:2026-12-10", date(2026, 12, 10)),
        ("due:2027/1/5", date(2027, 1, 5)),
        ("due:12-10", date(2026, 12, 10)),
        ("due:12/10", date(2026, 12, 10)),
        ("due:12-06", date(2026, 12, 6)),  # today is "on or after today"
        ("due:12-01", date(2027, 12, 1)),  # passed this year: next year
        ("due:1-15", date(2027, 1, 15)),
        ("due:02-29", date(2028, 2, 29)),  # the next leap day
        ("due:3d", date(2026, 12, 9)),
        ("due:2w", date(2026, 12, 20)),
        ("due:0d", date(2026, 12, 6)),
        ("due:today", date(2026, 12, 6)),
        ("due:tomorrow", date(2026, 12, 7)),
        ("DUE:Tomorrow", date(2026, 12, 7)),
        ("due:fri", date(2026, 12, 11)),
        ("due:friday", date(2026, 12, 11)),
        ("due:mon", date(2026, 12, 7)),
        ("due:sun", date(2026, 12, 6)),  # today is a Sunday
        ("due: 12-10", date(2026, 12, 10)),
        ("due:fri,", date(2026, 12, 11)),
        ("截止:12-10", date(2026, 12, 10)),
        ("截止：12-10", date(2026, 12, 10)),
        ("截止:明天", date(2026, 12, 7)),
        ("截止:后天", date(2026, 12, 8)),
        ("截止:今天", date(2026, 12, 6)),
        ("截止:周五", date(2026, 12, 11)),
        ("截止:星期五", date(2026, 12, 11)),
        ("截止:周日", date(2026, 12, 6)),
        ("截止:下周一", date(2026, 12, 7)),
        ("截止:下周五", date(2026, 12, 11)),
        ("截止:3天", date(2026, 12, 9)),
        ("截止:2周", date(2026, 12, 20)),
        ("截止:12月10日", date(2026, 12, 10)),
        ("截止:2027年1月5日", date(2027, 1, 5)),
        ("截止日期:12-10", date(2026, 12, 10)),
    ],
)
def test_due_dates_count_from_today(option: str, due: date) -> None:
    command = parse(f"task Ship it {option} #ops")
    assert (command.due, command.title, command.labels, command.ignored) == (
        due,
        "Ship it",
        ("ops",),
        (),
    )


def test_weekdays_count_from_a_weekday_too() -> None:
    wednesday = date(2026, 12, 9)
    command = parse_command("task x due:mon", today=wednesday)
    assert command.due == date(2026, 12, 14)
    assert parse_command("任务 x 截止:下周一", today=wednesday).due == date(2026, 12, 14)
    assert parse_command("任务 x 截止:周三", today=wednesday).due == wednesday


@pytest.mark.parametrize(
    ("text", "note"),
    [
        ("task Ship it due:02-30", "due:02-30 is not a date; no due date set"),
        ("task Ship it due:2026-13-01", "due:2026-13-01 is not a date; no due date set"),
        ("task Ship it due:someday", "due:someday is not a date; no due date set"),
        ("task Ship it due:12-10-2026", "due:12-10-2026 is not a date; no due date set"),
        ("task Ship it due:", "due: is not a date; no due date set"),
        ("任务 Ship it 截止:02-30", "截止:02-30 不是有效日期，未设置截止时间"),
        ("任务 Ship it 截止：下个月", "截止：下个月 不是有效日期，未设置截止时间"),
    ],
)
def test_a_date_that_does_not_exist_is_noted_and_the_task_still_made(text: str, note: str) -> None:
    command = parse(text)
    assert command.verb is Verb.TASK
    assert command.title == "Ship it"
    assert command.due is None
    assert command.ignored == (note,)


def test_a_second_due_date_is_noted_and_the_first_kept() -> None:
    command = parse("task x due:2w due:tomorrow")
    assert command.due == date(2026, 12, 20)
    assert command.ignored == ("due:tomorrow: a due date is already set; ignored",)


# -- priority and labels --------------------------------------------------------------


@pytest.mark.parametrize(
    ("option", "priority"),
    [
        ("p1", "p1"),
        ("P2", "p2"),
        ("p3", "p3"),
        ("p4", "p4"),
        ("priority:urgent", "p1"),
        ("priority:high", "p2"),
        ("Priority:Medium", "p3"),
        ("priority:low", "p4"),
        ("priority:p3", "p3"),
        ("优先级:紧急", "p1"),
        ("优先级：高", "p2"),
        ("优先级:中", "p3"),
        ("优先级:低", "p4"),
    ],
)
def test_priorities(option: str, priority: str) -> None:
    command = parse(f"task Ship it {option}")
    assert (command.priority, command.title, command.ignored) == (priority, "Ship it", ())


def test_an_unknown_priority_is_noted_in_the_commands_language() -> None:
    english = parse("task Ship it priority:extreme")
    assert (english.priority, english.title) == (None, "Ship it")
    assert english.ignored == (
        "priority:extreme is not a priority (p1-p4, urgent, high, medium, low); no priority set",
    )
    chinese = parse("任务 上线 优先级:超高")
    assert (chinese.priority, chinese.title) == (None, "上线")
    assert chinese.ignored == (
        "优先级:超高 不是有效优先级（可用 紧急、高、中、低 或 p1-p4），未设置优先级",
    )


def test_p5_and_words_containing_p1_are_title_text() -> None:
    command = parse("task upgrade p5 to mp1 and p1x")
    assert command.priority is None
    assert command.title == "upgrade p5 to mp1 and p1x"


def test_labels_in_ascii_and_chinese_and_what_is_not_a_label() -> None:
    command = parse(
        "task Fix #bug #后端 #front-end #a_b C# see #12 https://x.example/a#frag ＃全角"
    )
    assert command.labels == ("bug", "后端", "front-end", "a_b", "全角")
    assert command.title == "Fix C# see #12 https://x.example/a#frag"


# -- the title ------------------------------------------------------------------------


def test_the_title_is_the_first_line_with_whitespace_collapsed() -> None:
    command = parse("@bot task   Fix\u3000the   login  \nsecond line #later due:3d")
    assert command.title == "Fix the login"
    assert command.labels == ("later",)  # options are read on every line
    assert command.due == date(2026, 12, 9)


def test_the_title_may_start_on_the_next_line() -> None:
    assert parse("@bot task\n\nFix the login").title == "Fix the login"


def test_an_empty_title_is_noted() -> None:
    assert parse("task @bob #bug p2", BOB).ignored == ("no title",)
    assert parse("任务 截止:明天").ignored == ("没有标题",)
    assert parse("task").title == ""


def test_removed_parts_keep_words_apart_and_leave_no_stray_separators() -> None:
    assert parse("task Fix login, due:fri").title == "Fix login"
    assert parse("任务：修复登录超时 截止：明天 优先级：紧急 #后端").title == "修复登录超时"
    assert parse("task Fix<@U1>login", BOB).title == "Fix login"
    assert parse("task ask ops@bob.example", BOB).title == "ask ops@bob.example"


# -- mentions -------------------------------------------------------------------------


def test_slack_mentions_in_markup_and_as_plain_text() -> None:
    bot = Party(id="UBOT")
    markup = parse("<@UBOT> task Review <@U1|bob> due:fri", bot, BOB)
    assert (markup.verb, markup.title, markup.assignees) == (Verb.TASK, "Review", ("U1",))
    plain = parse("@UBOT task Review @bob", bot, BOB)  # as the Slack intake writes it
    assert (plain.title, plain.assignees) == ("Review", ("U1",))
    by_id = parse("task Review <@U1>", BOB)
    assert by_id.assignees == ("U1",)
    stranger = parse("task Review <@U9|carol>", BOB)
    assert (stranger.assignees, stranger.unknown) == ((), ("carol",))


def test_feishu_placeholders_and_telegram_handles() -> None:
    feishu = parse(
        "@_user_1 task Review @_user_2",
        Party(id="@_user_1", name="RelayBot"),
        Party(id="@_user_2"),
    )
    assert (feishu.title, feishu.assignees) == ("Review", ("@_user_2",))
    telegram = parse("task Review @Alice @relay_bot", Party(id="@alice"), Party(id="@relay_bot"))
    assert (telegram.title, telegram.assignees, telegram.unknown) == (
        "Review",
        ("@alice",),
        (),
    )


def test_the_bot_is_never_an_assignee() -> None:
    robot = Party(id="ou_bot", name="RelayBot")
    command = parse("@RelayBot task Review @RelayBot @张三", robot, ZHANG, bots=("RelayBot",))
    assert command.assignees == ("u_zs",)
    assert parse("task Review @bot @机器人").unknown == ()


def test_mentions_glued_to_chinese_text_match_the_longest_name() -> None:
    zhang_sanfeng = Party(id="u_zsf", name="张三丰")
    command = parse("任务 修复@张三丰截止:12-10", ZHANG, zhang_sanfeng)
    assert (command.title, command.assignees, command.due) == (
        "修复",
        ("u_zsf",),
        date(2026, 12, 10),
    )
    unknown = parse("任务 修复 @王五截止:12-10")
    assert (unknown.unknown, unknown.due) == (("王五",), date(2026, 12, 10))


def test_emails_broadcasts_and_unknown_names() -> None:
    command = parse("task Mail a@b.com and ＠张三 @all @bobby, @ghost.", ZHANG, BOB)
    assert command.title == "Mail a@b.com and"
    assert command.assignees == ("u_zs",)
    assert command.unknown == ("bobby", "ghost")


def test_a_name_is_matched_by_id_too_and_assignees_are_not_repeated() -> None:
    command = parse("task Pair @U1 @bob @BOB", BOB)
    assert command.assignees == ("U1",)


def test_people_addressed_before_the_verb_are_not_assignees() -> None:
    command = parse("@bot @张三 task Review", ZHANG)
    assert (command.verb, command.assignees) == (Verb.TASK, ())


def test_assign_without_anyone_is_noted() -> None:
    assert parse("assign", reply=True).ignored == ("assign names nobody: write assign @name",)
    assert parse("指派", reply=True).ignored == ("指派未指定人员：请写 指派 @姓名",)


def test_assign_with_a_key_works_outside_a_thread() -> None:
    command = parse("assign OPS-3 @bob please", BOB)
    assert (command.verb, command.reference, command.assignees) == (
        Verb.ASSIGN,
        "OPS-3",
        ("U1",),
    )


def test_an_empty_comment_is_noted() -> None:
    assert parse("comment", reply=True).ignored == ("comment has no text",)
    assert parse("评论 #7").ignored == ("评论没有内容",)


# -- robustness -----------------------------------------------------------------------


def test_very_long_text_is_read() -> None:
    body = "word @张三 #tag due:3d a@b.com 🎉 " * 20_000
    command = parse("task " + body + "@" * 50_000 + "#" * 50_000, ZHANG)
    assert command.verb is Verb.TASK
    assert command.assignees == ("u_zs",)
    assert command.labels == ("tag",)
    assert command.due == date(2026, 12, 9)
    assert len(command.ignored) == 19_999  # every later due: is noted, none fatal


def test_huge_numbers_and_far_dates_are_not_dates() -> None:
    command = parse_command("task x due:99999w", today=date(9999, 12, 1))
    assert (command.due, command.title) == (None, "x")
    assert command.ignored == ("due:99999w is not a date; no due date set",)


names = st.text(min_size=1, max_size=12)
parties = st.builds(Party, id=names, name=st.none() | names)


@settings(max_examples=400, deadline=None)
@given(
    text=st.text(max_size=300),
    mentions=st.lists(parties, max_size=4),
    bots=st.lists(st.text(max_size=8), max_size=2),
    reply=st.booleans(),
    today=st.dates(),
)
def test_any_text_parses_without_raising(
    text: str, mentions: list[Party], bots: list[str], reply: bool, today: date
) -> None:
    command = parse_command(text, mentions, today=today, bot_names=bots, reply=reply)
    assert "\n" not in command.title
    assert set(command.assignees) <= {m.id for m in mentions}
    assert command.language in ("en", "zh")
    assert parse_command("hello " + text, mentions, today=today, reply=reply).verb is None


_grammar_words = st.sampled_from(
    [
        "task",
        "任务",
        "done",
        "完成",
        "@bot",
        "@张三",
        "due:",
        "截止：",
        "12-10",
        "#",
        "p1",
        "优先级:",
        "高",
        "<@U1|bob>",
        "\u3000",
        " ",
        "\n",
        "@",
        "fri",
        "周五",
        "OPS-1",
        "#12",
    ]
)


@settings(max_examples=400, deadline=None)
@given(words=st.lists(_grammar_words, max_size=12), reply=st.booleans())
def test_any_mix_of_grammar_words_parses_without_raising(words: list[str], reply: bool) -> None:
    command = parse_command("".join(words), [ZHANG, BOB], today=TODAY, reply=reply)
    assert "\n" not in command.title
    assert set(command.assignees) <= {"u_zs", "U1"}
