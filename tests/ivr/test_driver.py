"""The IVR driver: against the real Asterisk sandbox with SIPp callers and a real PostgreSQL,
and against an in-memory fake provider for timers and ordering."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import random
import uuid
from collections.abc import AsyncIterator, Callable, Sequence
from pathlib import Path

import pytest
from argon2 import PasswordHasher
from pydantic import SecretStr

from ivr.driver import IvrDriver, serve_ivr
from ivr.machine import IvrConfig
from storage.audit import AccessLog
from storage.customers import Customers
from storage.keys import LocalKeyring
from telephony.ari.sandbox import AsteriskSandbox
from telephony.commands import BridgeToAgent, Hangup, Play, ProviderCommand, Verdict
from telephony.errors import CallGone, ProviderRejected
from telephony.events import CallEnded, CallStarted, Digits, Event, PromptDone
from tests.telephony.test_ari_adapter import CALLER, _finish, _provider, _sipp

PIN = "235789"          # keys in the pcaps' ascending order; 6 digits, never in a uuid by chance
WRONG_PIN = "134679"
ACCOUNT = "97531864"
AUDIT_KEY = b"k" * 32


def _customers(pg_dsn: str, tmp_path: Path) -> Customers:
    cheap = PasswordHasher(time_cost=1, memory_cost=1024, parallelism=1)
    return Customers(pg_dsn, LocalKeyring(tmp_path / "keyring.json"), hasher=cheap)


async def _until(check: Callable[[], bool], timeout: float) -> None:
    async with asyncio.timeout(timeout):
        while not check():
            await asyncio.sleep(0.02)


async def _live(sandbox: AsteriskSandbox, customers: Customers, log: AccessLog | None,
                batches: Sequence[Sequence[str]], workdir: Path
                ) -> tuple[list[tuple[str, Verdict]], list[tuple[int, str]], IvrDriver]:
    """Run the driver on the sandbox; each batch of SIPp scenarios calls at once, and the
    next batch starts when every call of the one before is over."""
    s = sandbox.settings
    verdicts: list[tuple[str, Verdict]] = []
    results: list[tuple[int, str]] = []
    async with _provider(s) as ari:
        await asyncio.wait_for(ari.stream.connected.wait(), 10)
        driver = IvrDriver(ari, customers, log=log,
                           on_verdict=lambda call, v: verdicts.append((call, v)))
        runner = asyncio.create_task(driver.run())
        try:
            for batch in batches:
                procs = [await _sipp(s, scenario, workdir) for scenario in batch]
                results += [await _finish(p) for p in procs]
                await _until(lambda: not driver.active_calls, 15)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    return verdicts, results, driver


def test_right_pin_is_verified_then_agent1_is_rung_and_the_call_ends_cleanly(
        sandbox: AsteriskSandbox, pg_dsn: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Caller id identifies the account; the right PIN → verified pin; agent1 rung → cleaned."""
    caplog.set_level(logging.DEBUG)
    customers = _customers(pg_dsn, tmp_path)
    ref = customers.add(ACCOUNT, CALLER, PIN)
    log = AccessLog(pg_dsn, AUDIT_KEY)
    verdicts, results, driver = asyncio.run(
        _live(sandbox, customers, log, [["uac_pin_235789.xml"]], tmp_path))
    [(call, verdict)] = verdicts
    assert verdict.verified and verdict.method == "pin" and verdict.account_ref == str(ref)
    assert results[0][0] == 0, results[0][1][-2000:]
    assert driver.active_calls == frozenset() and driver.pending_timers == 0
    assert f"call {call}: ringing agent agent1" in caplog.text  # nobody answers; caller hangs up
    assert driver.latencies and max(driver.latencies) < 1.0
    [entry] = [r for r in log.show() if r.action == "verdict"]
    assert (entry.actor, entry.role, entry.outcome, entry.detail) == \
        ("callvault-ivr", "system", "ok", "verified pin")
    for secret in (PIN, ACCOUNT, CALLER, CALLER[2:]):
        assert secret not in caplog.text and secret not in repr(driver)
        assert secret not in (entry.detail or "") + (entry.origin or "")


def test_three_wrong_pins_lock_the_account_and_the_right_pin_then_is_refused(
        sandbox: AsteriskSandbox, pg_dsn: str, tmp_path: Path) -> None:
    """Three concurrent wrong-PIN calls lock and queue a notice; then the right PIN → locked."""
    customers = _customers(pg_dsn, tmp_path)
    ref = customers.add(ACCOUNT, CALLER, PIN)
    wrong = "uac_pin_134679.xml"
    verdicts, results, driver = asyncio.run(_live(
        sandbox, customers, None, [[wrong, wrong, wrong], ["uac_pin_235789.xml"]], tmp_path))
    assert [rc for rc, _ in results] == [0, 0, 0, 0], [err[-1000:] for _, err in results]
    assert len({call for call, _ in verdicts}) == 4
    first = sorted(str(v.reason) for _, v in verdicts[:3])
    assert first == ["hung_up", "hung_up", "locked"], first
    last = verdicts[3][1]
    assert not last.verified and last.reason == "locked" and last.account_ref == str(ref)
    assert [kind for _, who, kind in customers.pending_notices() if who == ref] == \
        ["account_locked"]
    assert driver.active_calls == frozenset() and driver.pending_timers == 0


def test_caller_hanging_up_mid_ivr_is_not_verified_and_leaves_no_state(
        sandbox: AsteriskSandbox, pg_dsn: str, tmp_path: Path) -> None:
    """A caller who hangs up during the first prompt → not verified, hung_up; nothing left."""
    customers = _customers(pg_dsn, tmp_path)
    customers.add(ACCOUNT, CALLER, PIN)
    verdicts, results, driver = asyncio.run(
        _live(sandbox, customers, None, [["uac_hangup_early.xml"]], tmp_path))
    [(_, verdict)] = verdicts
    assert not verdict.verified and verdict.reason == "hung_up"
    assert results[0][0] == 0, results[0][1][-2000:]
    assert driver.active_calls == frozenset() and driver.pending_timers == 0


class FakeProvider:
    """An in-memory stand-in for a phone provider (no Asterisk): every Play ends at once
    with PromptDone, commands take a little random time, BridgeToAgent is refused."""

    def __init__(self) -> None:
        self.queue: asyncio.Queue[Event | None] = asyncio.Queue()
        self.sent: list[tuple[str, ProviderCommand]] = []
        self.in_flight = 0
        self.most_in_flight = 0
        self.rng = random.Random(4)

    async def events(self) -> AsyncIterator[Event]:
        while (event := await self.queue.get()) is not None:
            yield event

    async def commands(self, call_id: str, commands: Sequence[ProviderCommand]) -> None:
        self.in_flight += 1
        self.most_in_flight = max(self.most_in_flight, self.in_flight)
        try:
            await asyncio.sleep(self.rng.uniform(0.0, 0.03))
            for command in commands:
                self.sent.append((call_id, command))
                if isinstance(command, BridgeToAgent):
                    raise ProviderRejected("agent bridging not built yet")
                if isinstance(command, Play):
                    self.queue.put_nowait(PromptDone(call_id, command.prompt, at=0.0))
        finally:
            self.in_flight -= 1

    async def dial(self, call_id: str, number: str) -> None:
        raise ProviderRejected("call-back dialling not built yet")

    def plays(self, call_id: str) -> list[str]:
        return [c.prompt for cid, c in self.sent if cid == call_id and isinstance(c, Play)]


def test_silence_reprompts_on_the_digit_timer_and_ends_failed_with_no_timers_left(
        pg_dsn: str, tmp_path: Path) -> None:
    """Fake provider: no keys → enter-pin thrice on a 0.1 s timer, verdict failed, cleaned up."""
    customers = _customers(pg_dsn, tmp_path)
    customers.add(ACCOUNT, CALLER, PIN)
    fake = FakeProvider()
    verdicts: list[Verdict] = []

    async def note(call: str, verdict: Verdict) -> None:
        verdicts.append(verdict)

    async def run() -> IvrDriver:
        driver = IvrDriver(fake, customers, config=IvrConfig(digit_timeout=0.1),
                           on_verdict=note)
        runner = asyncio.create_task(driver.run())
        fake.queue.put_nowait(CallStarted("call-1", CALLER, at=0.0))
        await _until(lambda: bool(verdicts) and not driver.active_calls, 10)
        fake.queue.put_nowait(None)
        await runner
        return driver

    driver = asyncio.run(run())
    assert fake.plays("call-1") == ["enter-pin", "enter-pin", "enter-pin", "not-verified",
                                    "please-hold"]
    [verdict] = verdicts
    assert not verdict.verified and verdict.reason == "failed"
    assert ("call-1", Hangup("provider-error")) in fake.sent
    assert driver.active_calls == frozenset() and driver.pending_timers == 0
    assert len(driver.latencies) >= 5


def test_events_of_one_call_are_handled_in_order_while_calls_run_concurrently(
        pg_dsn: str, tmp_path: Path) -> None:
    """Fake provider, 5 calls typing the account number key by key → all verified by PIN."""
    customers = _customers(pg_dsn, tmp_path)
    customers.add(ACCOUNT, "+15551239999", PIN)
    fake = FakeProvider()
    calls = [f"call-{n}" for n in range(5)]

    running: list[frozenset[str]] = []   # each call's timers when its verdict came

    async def run() -> IvrDriver:
        driver = IvrDriver(fake, customers,
                           on_verdict=lambda call, _: running.append(driver.timers_of(call)))
        runner = asyncio.create_task(driver.run())
        for call in calls:   # withheld caller id: the account number is typed
            fake.queue.put_nowait(CallStarted(call, None, at=0.0))
        for key in ACCOUNT + "#":
            for call in calls:
                fake.queue.put_nowait(Digits(call, key, at=0.0))
        await _until(lambda: all("enter-pin" in fake.plays(c) for c in calls), 10)
        for key in PIN + "#":
            for call in calls:
                fake.queue.put_nowait(Digits(call, key, at=0.0))
        await _until(lambda: len(driver.verdicts) == 5 and not driver.active_calls, 10)
        fake.queue.put_nowait(None)
        await runner
        return driver

    driver = asyncio.run(run())
    assert sorted(driver.verdicts) == calls
    assert all(v.verified and v.method == "pin" for v in driver.verdicts.values())
    assert all(fake.plays(c) == ["enter-account", "enter-pin", "please-hold"] for c in calls)
    assert fake.most_in_flight >= 2
    assert running == [frozenset()] * 5  # the IVR timer was cancelled on the way to an agent
    assert driver.pending_timers == 0


def test_commands_for_a_call_that_is_gone_end_it_without_a_hangup(
        pg_dsn: str, tmp_path: Path) -> None:
    """A provider raising CallGone → the machine gets CallEnded, verdict hung_up, no Hangup."""
    customers = _customers(pg_dsn, tmp_path)
    fake = FakeProvider()
    verdicts: list[Verdict] = []

    async def gone(call_id: str, commands: Sequence[ProviderCommand]) -> None:
        fake.sent += [(call_id, c) for c in commands]
        raise CallGone(f"fake: call {call_id} has ended")

    fake.commands = gone  # type: ignore[method-assign]

    async def run() -> IvrDriver:
        driver = IvrDriver(fake, customers, on_verdict=lambda _, v: verdicts.append(v))
        runner = asyncio.create_task(driver.run())
        fake.queue.put_nowait(CallStarted("call-1", None, at=0.0))
        await _until(lambda: bool(verdicts) and not driver.active_calls, 5)
        fake.queue.put_nowait(CallEnded("call-1", "caller-hangup", at=0.0))  # late: ignored
        fake.queue.put_nowait(None)
        await runner
        return driver

    driver = asyncio.run(run())
    assert [v.reason for v in verdicts] == ["hung_up"]
    assert not any(isinstance(c, Hangup) for _, c in fake.sent)
    assert driver.active_calls == frozenset() and driver.pending_timers == 0


def test_serve_ivr_keeps_retrying_wrong_credentials_until_cancelled(
        sandbox: AsteriskSandbox, pg_dsn: str, tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    """Wrong ARI password: one clear line per attempt, capped backoff, no exception, cancels."""
    customers = _customers(pg_dsn, tmp_path)
    bad = SecretStr("wrong-password-" + uuid.uuid4().hex)

    async def run() -> bool:
        task = asyncio.create_task(serve_ivr(sandbox.settings, customers, None, password=bad,
                                             backoff_initial=0.1, backoff_max=0.4))
        await asyncio.sleep(2.0)
        alive = not task.done()
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
        return alive

    with caplog.at_level(logging.INFO, logger="ivr.driver"):
        alive = asyncio.run(run())
    lines = [r.getMessage() for r in caplog.records if r.name == "ivr.driver"]
    assert alive
    assert 3 <= len(lines) <= 12, lines
    assert all("cannot start on ARI" in line and "ARI credentials refused" in line
               for line in lines)
    assert bad.get_secret_value() not in caplog.text



def test_forgot_pin_queues_a_callback_and_a_refused_dial_fails_the_leg(
        pg_dsn: str, tmp_path: Path) -> None:
    """Fake provider: 2# at the PIN prompt → declined, notice queued; dial refused → leg failed."""
    customers = _customers(pg_dsn, tmp_path)
    ref = customers.add(ACCOUNT, CALLER, PIN)
    fake = FakeProvider()
    verdicts: dict[str, Verdict] = {}

    async def run() -> IvrDriver:
        driver = IvrDriver(fake, customers,
                           on_verdict=verdicts.__setitem__)
        runner = asyncio.create_task(driver.run())
        fake.queue.put_nowait(CallStarted("call-1", CALLER, at=0.0))
        await _until(lambda: "enter-pin" in fake.plays("call-1"), 5)
        fake.queue.put_nowait(Digits("call-1", "2#", at=0.0))
        await _until(lambda: len(verdicts) == 2 and not driver.active_calls, 5)
        fake.queue.put_nowait(None)
        await runner
        return driver

    driver = asyncio.run(run())
    leg = next(call for call in verdicts if call != "call-1")
    assert verdicts["call-1"].reason == "declined" and verdicts[leg].reason == "failed"
    assert verdicts[leg].account_ref == str(ref)
    assert fake.plays("call-1") == ["enter-pin", "forgot-pin-callback"]
    assert ("call-1", Hangup("done")) in fake.sent
    assert [kind for _, _, kind in customers.pending_notices()] == ["callback_requested"]
    assert driver.pending_timers == 0
