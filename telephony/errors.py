"""The telephony package's own error family.

Adapters translate their provider's failures (aiohttp errors, ARI HTTP statuses, Twilio
REST exceptions) at the boundary into one of these, so the driver and the CLI handle one
shallow hierarchy whatever the provider. Messages name the provider, the operation and
our call id, never a PIN, a phone number, a credential or a provider's own call id.
"""

from __future__ import annotations


class TelephonyError(Exception):
    """Base of every telephony failure."""

    exit_code = 40


class ProviderUnavailable(TelephonyError):
    """The provider cannot be reached (connection refused, timeout, events stream lost);
    worth retrying with backoff."""

    exit_code = 41


class ProviderRejected(TelephonyError):
    """The provider refused the request: wrong credentials, an application it does not
    know, a malformed request. Retrying the same request will not help."""

    exit_code = 42


class CallGone(TelephonyError):
    """The call ended before the command could act on it; the caller hung up meanwhile."""

    exit_code = 43
