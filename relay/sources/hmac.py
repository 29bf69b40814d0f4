"""``hmac``: generic HMAC-signed webhooks (placeholder until the full module lands)."""
