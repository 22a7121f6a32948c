"""Customers for caller authentication: who they are, how to reach them, their PIN.

No customer identifier is stored in the clear. Account and phone numbers are found
through keyed blind indexes (HMAC-SHA256 under a data key of the `customer` KEK); the
phone number of record (for call-backs) and the contact of record (for notices) are
sealed with AES-256-GCM under another. PINs are argon2id hashes, checked in constant
time. Failed attempts are rows in PostgreSQL, so every callvault instance shares one
count per account: after `max_failures` within `window_seconds` the account is locked
for `lock_seconds` and a notice is queued in the outbox, in the same transaction.

The outbox holds the customer reference, the kind of notice and the destination sealed
as it was at that moment, so a change of contact is told to the *existing* contact of
record, as 47 CFR 64.2010(f) requires. It never holds a PIN or any number in the clear.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import uuid
from dataclasses import dataclass
from typing import Literal

from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM

from storage.db import Connection, connect, translate_errors
from storage.errors import IntegrityError, NotFound, StorageError
from storage.keys import KeyProvider, WrappedKey

Notice = Literal["pin_changed", "contact_changed", "account_locked", "callback_requested"]
_E164 = re.compile(r"^\+[1-9][0-9]{6,14}$")
_ACCOUNT = re.compile(r"^[0-9]{4,20}$")
_INDEX_KEY = "customer_index_key"
_SEAL_KEY = "customer_seal_key"


@dataclass(frozen=True)
class PinResult:
    """What a PIN check found; never the PIN."""

    ok: bool
    locked: bool
    attempts_left: int | None


@dataclass(frozen=True)
class Lockout:
    max_failures: int = 3
    window_seconds: float = 900.0
    lock_seconds: float = 1800.0


def normalise_account(account: str) -> str:
    digits = re.sub(r"[\s-]", "", account)
    if not _ACCOUNT.match(digits):
        raise ValueError("an account number is 4-20 digits")
    return digits


def normalise_phone(phone: str) -> str:
    number = re.sub(r"[\s().-]", "", phone)
    if not _E164.match(number):
        raise ValueError("a phone number is E.164: + and 7-15 digits")
    return number


def _meta_key(conn: Connection, keys: KeyProvider, name: str) -> bytes:
    """A data key kept wrapped under the `customer` KEK in `vault_meta`, made once."""
    row = conn.execute("SELECT value FROM vault_meta WHERE key = %s", (name,)).fetchone()
    if row is None:
        _dek, wrapped = keys.generate_data_key("customer")
        conn.execute("INSERT INTO vault_meta (key, value) VALUES (%s, %s::jsonb)"
                     " ON CONFLICT (key) DO NOTHING",
                     (name, json.dumps({"key_id": wrapped.key_id, "blob": wrapped.blob.hex()})))
        conn.commit()
        row = conn.execute("SELECT value FROM vault_meta WHERE key = %s", (name,)).fetchone()
        assert row is not None
    value = row["value"]
    return keys.unwrap(WrappedKey(value["key_id"], bytes.fromhex(value["blob"])), "customer")


class Customers:
    """The customer store; every method is one transaction."""

    def __init__(self, dsn: str, keys: KeyProvider, *, lockout: Lockout | None = None,
                 hasher: PasswordHasher | None = None) -> None:
        self._dsn = dsn
        self.lockout = lockout or Lockout()
        self._hasher = hasher or PasswordHasher()
        # verified against when the account is unknown, so timing says nothing
        self._dummy = self._hasher.hash("callvault-dummy-pin")
        with connect(dsn) as conn, translate_errors():
            self._index_key = _meta_key(conn, keys, _INDEX_KEY)
            self._seal_key = _meta_key(conn, keys, _SEAL_KEY)

    def __repr__(self) -> str:
        return "Customers(<keys hidden>)"

    # ------------------------------------------------------------ sealing and indexing

    def _index(self, kind: str, value: str) -> bytes:
        return hmac.new(self._index_key, f"{kind}\x00{value}".encode(), hashlib.sha256).digest()

    def _seal(self, value: str, ref: uuid.UUID, what: str) -> bytes:
        nonce = os.urandom(12)
        return nonce + AESGCM(self._seal_key).encrypt(nonce, value.encode(),
                                                      f"{ref}|{what}".encode())

    def _unseal(self, blob: bytes, ref: uuid.UUID, what: str) -> str:
        try:
            return AESGCM(self._seal_key).decrypt(blob[:12], blob[12:],
                                                  f"{ref}|{what}".encode()).decode()
        except InvalidTag:
            raise IntegrityError(f"sealed {what} of customer {ref} failed authentication") \
                from None

    # ------------------------------------------------------------ provisioning

    def add(self, account: str, phone: str, pin: str, contact: str | None = None
            ) -> uuid.UUID:
        """Register a customer; the PIN must already have passed `ivr.policy`."""
        account, phone = normalise_account(account), normalise_phone(phone)
        ref = uuid.uuid4()
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute(
                "INSERT INTO customers (id, account_index, phone_index, phone_sealed,"
                " contact_sealed, pin_hash) VALUES (%s, %s, %s, %s, %s, %s)"
                " ON CONFLICT (account_index) DO NOTHING RETURNING id",
                (ref, self._index("account", account), self._index("phone", phone),
                 self._seal(phone, ref, "phone"), self._seal(contact or phone, ref, "contact"),
                 self._hasher.hash(pin))).fetchone()
            if row is None:
                raise StorageError("that account is already registered")
            conn.commit()
        return ref

    def set_pin(self, ref: uuid.UUID, pin: str) -> None:
        """Change the PIN, clear failures, and tell the customer at once."""
        with connect(self._dsn) as conn, translate_errors():
            cur = conn.execute("UPDATE customers SET pin_hash = %s, updated_at = now()"
                               " WHERE id = %s", (self._hasher.hash(pin), ref))
            if cur.rowcount != 1:
                raise NotFound("no such customer")
            conn.execute("DELETE FROM pin_failures WHERE customer_id = %s", (ref,))
            self._notify(conn, ref, "pin_changed")
            conn.commit()

    def set_contact(self, ref: uuid.UUID, contact: str) -> None:
        """Change the contact of record; the notice goes to the one it replaces."""
        with connect(self._dsn) as conn, translate_errors():
            self._notify(conn, ref, "contact_changed")  # sealed old destination
            conn.execute("UPDATE customers SET contact_sealed = %s, updated_at = now()"
                         " WHERE id = %s", (self._seal(contact, ref, "contact"), ref))
            conn.commit()

    def unlock(self, ref: uuid.UUID) -> None:
        with connect(self._dsn) as conn, translate_errors():
            cur = conn.execute("UPDATE customers SET locked_until = NULL WHERE id = %s", (ref,))
            if cur.rowcount != 1:
                raise NotFound("no such customer")
            conn.execute("DELETE FROM pin_failures WHERE customer_id = %s", (ref,))
            conn.commit()

    # ------------------------------------------------------------ the IVR's questions

    def find_by_phone(self, phone: str) -> list[uuid.UUID]:
        """Accounts whose number of record is `phone` (identification needs exactly one)."""
        try:
            index = self._index("phone", normalise_phone(phone))
        except ValueError:
            return []
        with connect(self._dsn) as conn, translate_errors():
            return [r["id"] for r in conn.execute(
                "SELECT id FROM customers WHERE phone_index = %s LIMIT 2", (index,))]

    def find_by_account(self, account: str) -> uuid.UUID | None:
        try:
            index = self._index("account", normalise_account(account))
        except ValueError:
            return None
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute("SELECT id FROM customers WHERE account_index = %s",
                               (index,)).fetchone()
        return None if row is None else row["id"]

    def check_pin(self, ref: uuid.UUID, pin: str) -> PinResult:
        """Verify a PIN in constant time and count a failure across every instance.

        The argon2 verification runs whether or not the account is locked, so the time
        taken tells nothing; a locked account never verifies.
        """
        lock = self.lockout
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute(
                "SELECT pin_hash, locked_until > now() AS locked FROM customers"
                " WHERE id = %s FOR UPDATE", (ref,)).fetchone()
            stored = row["pin_hash"] if row else self._dummy
            matched: bool
            try:
                matched = self._hasher.verify(stored, pin)
            except (VerificationError, InvalidHashError):
                matched = False
            if row is None:
                return PinResult(False, False, None)
            if row["locked"]:
                conn.rollback()
                return PinResult(False, True, 0)
            if matched:
                conn.execute("DELETE FROM pin_failures WHERE customer_id = %s", (ref,))
                if self._hasher.check_needs_rehash(stored):
                    conn.execute("UPDATE customers SET pin_hash = %s WHERE id = %s",
                                 (self._hasher.hash(pin), ref))
                conn.commit()
                return PinResult(True, False, None)
            conn.execute("INSERT INTO pin_failures (customer_id) VALUES (%s)", (ref,))
            recent = conn.execute(
                "SELECT count(*) AS n FROM pin_failures WHERE customer_id = %s"
                " AND at > now() - make_interval(secs => %s)",
                (ref, lock.window_seconds)).fetchone()
            failures = int(recent["n"]) if recent else 0
            locked = failures >= lock.max_failures
            if locked:
                conn.execute("UPDATE customers SET locked_until = now() +"
                             " make_interval(secs => %s) WHERE id = %s",
                             (lock.lock_seconds, ref))
                conn.execute("DELETE FROM pin_failures WHERE customer_id = %s", (ref,))
                self._notify(conn, ref, "account_locked")
            conn.commit()
        return PinResult(False, locked, 0 if locked else lock.max_failures - failures)

    def phone_of_record(self, ref: uuid.UUID) -> str:
        """The number to call back (only the driver placing the call asks for it)."""
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute("SELECT phone_sealed FROM customers WHERE id = %s",
                               (ref,)).fetchone()
        if row is None:
            raise NotFound("no such customer")
        return self._unseal(bytes(row["phone_sealed"]), ref, "phone")

    def request_callback(self, ref: uuid.UUID) -> None:
        """Queue the call-back notice (the driver places the call itself)."""
        with connect(self._dsn) as conn, translate_errors():
            self._notify(conn, ref, "callback_requested")
            conn.commit()

    # ------------------------------------------------------------ the outbox

    def _notify(self, conn: Connection, ref: uuid.UUID, kind: Notice) -> None:
        row = conn.execute("SELECT contact_sealed FROM customers WHERE id = %s",
                           (ref,)).fetchone()
        if row is None:
            raise NotFound("no such customer")
        contact = self._unseal(bytes(row["contact_sealed"]), ref, "contact")
        conn.execute("INSERT INTO outbox (customer_id, destination_sealed, kind)"
                     " VALUES (%s, %s, %s)", (ref, self._seal(contact, ref, "notice"), kind))

    def pending_notices(self) -> list[tuple[int, uuid.UUID, Notice]]:
        """Unsent notices (id, customer, kind), oldest first, for a delivery adapter."""
        with connect(self._dsn) as conn, translate_errors():
            return [(r["id"], r["customer_id"], r["kind"]) for r in conn.execute(
                "SELECT id, customer_id, kind FROM outbox WHERE sent_at IS NULL"
                " ORDER BY id")]

    def notice_destination(self, notice_id: int) -> str:
        """The destination of one notice, unsealed for the adapter that delivers it."""
        with connect(self._dsn) as conn, translate_errors():
            row = conn.execute("SELECT customer_id, destination_sealed FROM outbox"
                               " WHERE id = %s", (notice_id,)).fetchone()
        if row is None:
            raise NotFound("no such notice")
        return self._unseal(bytes(row["destination_sealed"]), row["customer_id"], "notice")
