"""Built-in source kinds; importing this package registers them."""

from relay.sources import hmac, standard_webhooks  # noqa: F401
