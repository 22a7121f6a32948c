"""The storage package's own error family.

Everything that can go wrong in the vault is translated at the boundary (psycopg,
botocore, cryptography) into one of these, so callers handle one shallow hierarchy and
the CLI maps each to its own exit code. Messages never carry a secret, a key, a PIN or
any CPNI: they name the object, the setting or the entry, nothing more.
"""

from __future__ import annotations


class StorageError(Exception):
    """Base of every vault failure."""

    exit_code = 20


class IntegrityError(StorageError):
    """Stored ciphertext, a wrapped key or a header failed authentication: a flipped bit,
    a truncation, reordered segments or the wrong key."""

    exit_code = 21


class KeyUnavailable(StorageError):
    """A key-encryption key or a data key is missing, destroyed or cannot be reached."""

    exit_code = 22


class StorageUnavailable(StorageError):
    """PostgreSQL or the object store cannot be reached; nothing was read or written."""

    exit_code = 23


class AccessDenied(StorageError):
    """The user may not do this; the refusal is on the access log."""

    exit_code = 24


class NotFound(StorageError):
    """No such recording, object, user or key."""

    exit_code = 25


class RangeNotSatisfiable(StorageError):
    """A byte range that starts at or past the end of the object (HTTP 416)."""

    exit_code = 2


class RetentionLocked(StorageError):
    """Retention or a legal hold forbids the purge."""

    exit_code = 26


class AuditChainBroken(StorageError):
    """The access log's hash chain or MACs do not verify."""

    exit_code = 27
