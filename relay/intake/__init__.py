"""Step 1 of the pipeline: a platform's request becomes a durably queued ``GroupEvent``.

``route`` serves ``POST /hooks/<source-id>`` as plain WSGI; ``sources/`` verifies and
parses each platform's requests; ``accept`` dedupes and enqueues (the step the route
and ``poller``, for long-polling bots, share).

Rule: imports ``relay.config``, ``relay.state`` and the leaf modules; never
``relay.admin``, the API, the dashboard or ``workers``.
"""
