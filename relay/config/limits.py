"""Whether one delivery attempt to each target fits in the task time limit.

Celery kills a task at ``RELAY_TASK_TIME_LIMIT``; an attempt cut off there is recorded
as "the worker stopped during this attempt" and retried until the delivery is
dead-lettered, even when the target answered. So a target whose timeout lets one
attempt run past the limit is a config error, found by ``relay check`` and at worker
start rather than by the dead-letter queue.

One request may wait its timeout twice: for the connection, then for the answer (an
HTTP target through urllib3; an SMTP session connects and then waits on each reply,
which a live server sends at once and a gone one fails at the first). So a target's
timeout, or ``RELAY_HTTP_TIMEOUT`` for targets without one, must be under half the
limit, as ``Settings`` already requires of the default. A kind whose attempt makes
several requests in a row, with a bound known from its options, declares how often
it may wait as ``timeout_waits`` on its adapter (an int, or a method taking the
target's config). Targets that send in steps and remember each step sent (``telegram``
with files, ``apprise``) need not: an attempt cut off between steps loses no step
already sent, and the retry goes on from there.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from relay.config.models import RelayConfig, TargetConfig

HTTP_WAITS = 2  # connect, then the answer (urllib3 applies the timeout to each)


def timeout_waits(target: TargetConfig, adapter: Any = None) -> int:
    """How many times one attempt to ``target`` may wait its whole timeout."""
    declared = getattr(adapter, "timeout_waits", None)
    if callable(declared):
        declared = declared(target)
    if isinstance(declared, int) and not isinstance(declared, bool) and declared > 0:
        return declared
    return HTTP_WAITS


def attempt_problems(
    config: RelayConfig,
    adapters: Mapping[str, Any],
    *,
    task_time_limit: float,
    default_timeout: float,
) -> list[str]:
    """One problem per target whose single attempt may outlast ``task_time_limit``,
    named by its path in the file (``targets[2].timeout``)."""
    problems = []
    for index, (target_id, target) in enumerate(config.targets.items()):
        waits = timeout_waits(target, adapters.get(target_id))
        timeout = target.timeout if target.timeout is not None else default_timeout
        if waits * timeout < task_time_limit:
            continue
        if target.timeout is not None:
            where, what = f"targets[{index}].timeout", f"{timeout:g}s"
        else:
            where, what = f"targets[{index}]", f"the default RELAY_HTTP_TIMEOUT={timeout:g}s"
        problems.append(
            f"{where}: {what} is too long for the task time limit "
            f"RELAY_TASK_TIME_LIMIT={task_time_limit:g}s: one attempt to {target_id!r} "
            f"({target.kind}) may wait {waits} × {timeout:g}s = {waits * timeout:g}s, and an "
            f"attempt cut off at the limit is never delivered; lower the timeout below "
            f"{task_time_limit / waits:g}s or raise the limit"
        )
    return problems
