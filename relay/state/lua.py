"""The relay's Redis scripts: loaded from ``.lua`` files, run alone or several in one trip.

Each script is a file under ``lua/`` beside this module (``relay/state/lua/*.lua``), so it
is read, diffed and linted (``luacheck``) as Lua rather than as a Python string. Code
shared by several scripts lives in ``lua/lib/`` and is pulled in by a directive line
``--!include lib/<name>.lua``, which the loader replaces with that file's text (each file
at most once per script): Redis runs one self-contained text per script, and the shared
code stays written once.

A delivery ends with two scripts: the breaker's record (``relay.state.gate``) and the
store's finish. They touch different keys and neither needs the other's answer, so
they travel in one pipeline (no MULTI: each script is atomic on its own). redis-py's
own pipelining of ``Script`` objects asks ``SCRIPT EXISTS`` first on every execute, a
second round trip; here a script the server has forgotten (a restart, ``SCRIPT
FLUSH``) answers ``NOSCRIPT``, did nothing, and is simply run again on its own.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError

INCLUDE = "--!include "
SCRIPTS_PACKAGE = "relay.state"  # scripts live in its ``lua/`` folder


@functools.cache
def script_text(name: str, package: str = SCRIPTS_PACKAGE) -> str:
    """The text of ``lua/<name>`` in ``package``, its ``--!include`` lines replaced by the
    files they name (paths relative to that ``lua/`` folder; each file inlined once)."""
    return _expand(name, package, set())


def _expand(name: str, package: str, seen: set[str]) -> str:
    seen.add(name)
    text = files(package).joinpath("lua", *name.split("/")).read_text(encoding="utf-8")
    out: list[str] = []
    for line in text.splitlines(keepends=True):
        if line.startswith(INCLUDE):
            included = line[len(INCLUDE) :].strip()
            if included not in seen:
                out.append(_expand(included, package, seen))
        else:
            out.append(line)
    return "".join(out)


def load_script(client: redis.Redis, name: str, package: str = SCRIPTS_PACKAGE) -> Script:
    """``lua/<name>`` of ``package`` registered with ``client`` (sent once, then by SHA)."""
    return client.register_script(script_text(name, package))


@dataclass(frozen=True)
class ScriptCall:
    """One script with its keys and arguments, ready to run now or with others."""

    script: Script
    keys: list[str]
    args: list[Any]

    def run(self) -> Any:
        return self.script(keys=self.keys, args=self.args)


def run_together(client: redis.Redis, calls: Sequence[ScriptCall]) -> list[Any]:
    """Each call's result, in order; the first error (other than ``NOSCRIPT``) is raised."""
    if not calls:
        return []
    if len(calls) == 1:
        return [calls[0].run()]
    pipe = client.pipeline(transaction=False)
    for call in calls:
        pipe.evalsha(call.script.sha, len(call.keys), *call.keys, *call.args)
    results = pipe.execute(raise_on_error=False)
    out: list[Any] = []
    for call, result in zip(calls, results, strict=True):
        if isinstance(result, NoScriptError):
            result = call.run()  # loads the script, then runs it
        elif isinstance(result, Exception):
            raise result
        out.append(result)
    return out
