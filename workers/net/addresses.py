"""The SSRF policy and safe URL display, as the workers import them.

The policy lives in ``relay.addresses`` so that ``relay poll``, which may not import
``workers``, checks the same addresses as every target does.
"""

from relay.addresses import HINT, IPAddress, check_url, ip_literal, refusal, safe_url

__all__ = ["HINT", "IPAddress", "check_url", "ip_literal", "refusal", "safe_url"]
