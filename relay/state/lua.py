"""Several Redis scripts in one round trip.

A delivery ends with two scripts: the breaker's record (``relay.state.gate``) and the
store's finish. They touch different keys and neither needs the other's answer, so
they travel in one pipeline (no MULTI: each script is atomic on its own). redis-py's
own pipelining of ``Script`` objects asks ``SCRIPT EXISTS`` first on every execute, a
second round trip; here a script the server has forgotten (a restart, ``SCRIPT
FLUSH``) answers ``NOSCRIPT``, did nothing, and is simply run again on its own.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

import redis
from redis.commands.core import Script
from redis.exceptions import NoScriptError


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
