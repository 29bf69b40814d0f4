"""What the operator declares: the config file's models and loader, units, people, kinds.

Rule: pure declarations and their validation. Modules here import only the relay's leaf
modules (``relay.errors``, ``relay.events``, ``relay.templates``, ...) and never Redis,
Flask or Celery. Source and target kinds are found through entry points
(``relay.config.kinds``), so this package never imports an adapter.
"""
