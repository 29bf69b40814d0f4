"""The relay's Celery app settings with one task that does nothing (``bench/floor.py``).

Same broker transport, late acks, prefetch 1 and queues as ``workers.celery_app``, but
none of the relay's tasks: what is left is what Celery and kombu cost per message.
"""

from __future__ import annotations

from relay.cli.common import load_settings
from workers.celery_app import make_celery

app = make_celery(load_settings())
app.conf.include = []  # not workers.tasks: no relay config is loaded or checked


@app.task(name="bench.noop", ignore_result=True)  # type: ignore[untyped-decorator]
def noop(*delivery_ids: str) -> int:
    return len(delivery_ids)
