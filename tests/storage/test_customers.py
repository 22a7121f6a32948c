"""The customer store on the real PostgreSQL: blind indexes and sealed contacts (no
identifier in the clear), PIN checks, lockout shared across instances, the outbox."""

from __future__ import annotations

import uuid
from pathlib import Path

import pytest
from argon2 import PasswordHasher

from storage.customers import Customers, Lockout
from storage.db import connect
from storage.errors import StorageError
from storage.keys import LocalKeyring

ACCOUNT, PHONE, PIN = "48201735", "+14155550192", "583920"
CHEAP = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)


@pytest.fixture
def customers(pg_dsn: str, tmp_path: Path) -> Customers:
    return Customers(pg_dsn, LocalKeyring(tmp_path / "keyring.json"), hasher=CHEAP,
                     lockout=Lockout(max_failures=3, window_seconds=900, lock_seconds=1800))


def _dump(dsn: str) -> bytes:
    with connect(dsn) as conn:
        rows = [repr(r).encode() for table in ("customers", "outbox", "pin_failures")
                for r in conn.execute(f"SELECT * FROM {table}".encode())]
    return b"\n".join(rows)


def test_no_identifier_is_stored_in_the_clear(customers: Customers, pg_dsn: str) -> None:
    """The database holds neither the account, the phone, the contact nor the PIN."""
    ref = customers.add(ACCOUNT, PHONE, PIN, contact="pat@example.org")
    customers.set_pin(ref, "719264")
    dump = _dump(pg_dsn)
    for secret in (ACCOUNT, PHONE, PHONE[1:], "pat@example.org", PIN, "719264"):
        assert secret.encode() not in dump
    assert "583920" not in repr(customers)


def test_lookup_by_phone_and_account(customers: Customers) -> None:
    """Caller ID finds the account; a shared line gives two matches; formats normalise."""
    ref = customers.add(ACCOUNT, PHONE, PIN)
    assert customers.find_by_phone("+1 (415) 555-0192") == [ref]
    assert customers.find_by_account("4820 1735") == ref
    assert customers.find_by_account("99999999") is None
    assert customers.find_by_phone("not a number") == []
    other = customers.add("55501234", PHONE, "836201")
    assert sorted(customers.find_by_phone(PHONE)) == sorted([ref, other])


def test_duplicate_account_refused(customers: Customers) -> None:
    """An account registered twice is refused, without echoing the number."""
    customers.add(ACCOUNT, PHONE, PIN)
    with pytest.raises(StorageError) as info:
        customers.add(ACCOUNT, "+14155550100", "836201")
    assert ACCOUNT not in str(info.value)


def test_pin_check_and_lockout_shared_across_instances(customers: Customers, pg_dsn: str,
                                                       tmp_path: Path) -> None:
    """Failures count per account across instances; the third locks the account, queues
    one notice, and the right PIN during the lock does not verify."""
    ref = customers.add(ACCOUNT, PHONE, PIN)
    other_instance = Customers(pg_dsn, LocalKeyring(tmp_path / "keyring.json"), hasher=CHEAP)
    assert customers.check_pin(ref, PIN).ok
    first = customers.check_pin(ref, "000000")
    assert not first.ok and not first.locked and first.attempts_left == 2
    assert other_instance.check_pin(ref, "111111").attempts_left == 1
    third = customers.check_pin(ref, "222222")
    assert third.locked and not third.ok
    during = other_instance.check_pin(ref, PIN)
    assert not during.ok and during.locked
    assert [k for _, r, k in customers.pending_notices() if r == ref] == ["account_locked"]
    customers.unlock(ref)
    assert customers.check_pin(ref, PIN).ok


def test_success_resets_the_count(customers: Customers) -> None:
    """A right PIN clears earlier failures, so two more wrong ones do not lock."""
    ref = customers.add(ACCOUNT, PHONE, PIN)
    customers.check_pin(ref, "000000")
    customers.check_pin(ref, "000001")
    assert customers.check_pin(ref, PIN).ok
    assert not customers.check_pin(ref, "000002").locked
    assert not customers.check_pin(ref, "000003").locked


def test_unknown_account_pin_check(customers: Customers) -> None:
    """A PIN check for an unknown reference fails without error."""
    result = customers.check_pin(uuid.uuid4(), PIN)
    assert not result.ok and not result.locked


def test_contact_change_is_told_to_the_old_contact(customers: Customers) -> None:
    """Changing the contact of record queues a notice addressed to the old contact;
    changing the PIN queues one to the current contact."""
    ref = customers.add(ACCOUNT, PHONE, PIN, contact="old@example.org")
    customers.set_contact(ref, "new@example.org")
    customers.set_pin(ref, "719264")
    notices = [(n, k) for n, r, k in customers.pending_notices() if r == ref]
    assert [k for _, k in notices] == ["contact_changed", "pin_changed"]
    assert customers.notice_destination(notices[0][0]) == "old@example.org"
    assert customers.notice_destination(notices[1][0]) == "new@example.org"


def test_phone_of_record_for_callback(customers: Customers) -> None:
    """The call-back number is unsealed only on request, exactly as registered."""
    ref = customers.add(ACCOUNT, "+1 415 555 0192", PIN)
    assert customers.phone_of_record(ref) == PHONE


@pytest.mark.parametrize(("account", "phone"), [("12", PHONE), ("abcd1234", PHONE),
                                                 (ACCOUNT, "4155550192"), (ACCOUNT, "+0123")])
def test_bad_identifiers_refused(customers: Customers, account: str, phone: str) -> None:
    """Malformed account or phone numbers are refused with a message that names the rule."""
    with pytest.raises(ValueError, match=r"account number|E\.164"):
        customers.add(account, phone, PIN)
