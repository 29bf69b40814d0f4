"""Celery workers: step 2 and 3 of the pipeline.

``tasks`` is thin Celery glue; ``fanout`` (with ``routing``) turns an accepted event into
deliveries; ``delivery`` runs one attempt of each and applies ``retry_policy``;
``targets/`` are the adapters, ``net/`` the guarded network they use, ``speedups/``
measured library tweaks. Rule: ``relay`` never imports ``workers`` (checked by
import-linter); workers use ``relay.state`` for every Redis change.
"""
