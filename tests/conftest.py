"""Fixtures shared across test packages: the real PostgreSQL, SeaweedFS and a vault."""

pytest_plugins = [
    "tests.storage.pg_fixture",
    "tests.storage.seaweed_fixture",
    "tests.storage.vault_fixture",
    "tests.telephony.sandbox_fixture",
]
