"""The chat command grammar: ``@bot task Fix login @ada due:12-10 #bug p1`` and its
Chinese twin, and the follow-ups (``done``, ``reopen``, ``assign @x``, ``comment …``)."""

from relay.commands.grammar import parse_command
from relay.commands.model import Command, Verb

__all__ = ["Command", "Verb", "parse_command"]
