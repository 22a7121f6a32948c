"""Fixtures shared across test packages: the real PostgreSQL, SeaweedFS, a vault, the
Asterisk sandbox and Debian's Chromium through Playwright."""

pytest_plugins = [
    "tests.storage.pg_fixture",
    "tests.storage.seaweed_fixture",
    "tests.storage.vault_fixture",
    "tests.telephony.sandbox_fixture",
    "tests.support.browser",
]
