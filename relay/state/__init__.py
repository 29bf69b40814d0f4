"""The Redis state that the web processes, the workers and the CLI share.

Every key is named in ``keys``; every multi-step change is one Lua script from
``lua/`` (loaded by ``lua.py``). ``outbox`` accepts events and fans them out into
queued deliveries; ``deliveries`` runs a delivery's steps and ``records`` reads them;
``lifecycle`` types a delivery's statuses, verdicts and outcomes and its one record;
``gate`` decides whether a target may be sent to; ``scheduler`` releases due retries
and redoes lost tasks; ``stats``, ``audit`` and ``apikeys`` keep what operators read.

Rule: imports ``relay.config`` and the leaf modules only; never Flask, Celery,
``relay.intake``, ``relay.admin`` or ``workers``. The Celery message format lives in
``celery_message`` so the scripts can push tasks without a Celery app.
"""
