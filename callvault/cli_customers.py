"""`callvault customers`: provisioning the people the IVR authenticates.

PINs are read from stdin only (never an argument: arguments show in process lists and
shell history) and must pass `ivr.policy` — 4 to 8 digits, not trivial, not contained in
the account or phone number. A PIN or contact change queues a notice to the customer's
existing contact of record at once. Every change is on the access log, without numbers.
"""

from __future__ import annotations

import sys
import uuid
from typing import Annotated

import typer

from callvault import services as svc
from callvault.cli_common import ConfigOption, fail, settings_from
from callvault.cli_vault import _errors, _operator
from ivr.policy import WeakPin, check_new_pin
from storage.customers import Customers, normalise_account, normalise_phone

customers_app = typer.Typer(help="Customers the IVR authenticates: add, PIN, unlock.",
                            no_args_is_help=True)

AccountOption = Annotated[str, typer.Option("--account", help="Account number.",
                                            show_default=False)]
PinStdin = Annotated[bool, typer.Option(
    "--pin-stdin", help="Read the PIN from the first line of stdin (required).")]


def _pin(stdin: bool) -> str:
    if not stdin:
        raise fail("give the PIN on stdin with --pin-stdin (never as an argument)", 2)
    line = sys.stdin.readline().strip()
    if not line:
        raise fail("no PIN on stdin", 2)
    return line


def _find(store: Customers, account: str) -> uuid.UUID:
    ref = store.find_by_account(account)
    if ref is None:
        raise fail("no customer with that account number", 25)
    return ref


@customers_app.command("add")
def customers_add(
    account: AccountOption,
    phone: Annotated[str, typer.Option(help="Number of record, E.164 (+14155550100).",
                                       show_default=False)],
    contact: Annotated[str | None, typer.Option(
        help="Contact of record for notices (default: the phone number).",
        show_default=False)] = None,
    pin_stdin: PinStdin = False,
    config: ConfigOption = None,
) -> None:
    """Register a customer with a PIN; prints the customer's reference."""
    settings = settings_from(config)
    pin = _pin(pin_stdin)
    try:
        account_digits, number = normalise_account(account), normalise_phone(phone)
        check_new_pin(pin, account_digits, number)
    except (ValueError, WeakPin) as exc:
        raise fail(str(exc), 2) from None
    with _errors(), svc.database(settings) as db:
        ref = Customers(db.dsn, db.keys).add(account_digits, number, pin, contact)
        _operator(db, "manage_customers")
    typer.echo(str(ref))


@customers_app.command("set-pin")
def customers_set_pin(account: AccountOption, pin_stdin: PinStdin = False,
                      config: ConfigOption = None) -> None:
    """Change a customer's PIN; the customer is told at their contact of record."""
    settings = settings_from(config)
    pin = _pin(pin_stdin)
    with _errors(), svc.database(settings) as db:
        store = Customers(db.dsn, db.keys)
        ref = _find(store, account)
        try:
            check_new_pin(pin, normalise_account(account), store.phone_of_record(ref))
        except (ValueError, WeakPin) as exc:
            raise fail(str(exc), 2) from None
        store.set_pin(ref, pin)
        _operator(db, "manage_customers")
    typer.echo("PIN changed; the customer has been notified")


@customers_app.command("set-contact")
def customers_set_contact(
    account: AccountOption,
    contact: Annotated[str, typer.Option(help="New contact of record.", show_default=False)],
    config: ConfigOption = None,
) -> None:
    """Change the contact of record; the notice goes to the previous contact."""
    settings = settings_from(config)
    with _errors(), svc.database(settings) as db:
        store = Customers(db.dsn, db.keys)
        store.set_contact(_find(store, account), contact)
        _operator(db, "manage_customers")
    typer.echo("contact changed; the previous contact has been notified")


@customers_app.command("unlock")
def customers_unlock(account: AccountOption, config: ConfigOption = None) -> None:
    """Lift a PIN lockout and clear the failure count."""
    settings = settings_from(config)
    with _errors(), svc.database(settings) as db:
        store = Customers(db.dsn, db.keys)
        store.unlock(_find(store, account))
        _operator(db, "manage_customers")
    typer.echo("unlocked")


def register(app: typer.Typer) -> None:
    app.add_typer(customers_app, name="customers")
