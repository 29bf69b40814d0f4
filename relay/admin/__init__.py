"""What operators read and do, shared by the management API, the dashboard and the CLI.

``ops`` holds the actions (replay, purge, pause, ...; each audited) and the overviews;
``listings`` pages through records with filters; ``query`` parses filters, cursors and
times; ``views`` shapes records for display, capped and with secrets redacted.

Rule: imports ``relay.state``, ``relay.config`` and ``relay.context``; never Flask,
so the API and the dashboard stay thin and agree by construction.
"""
