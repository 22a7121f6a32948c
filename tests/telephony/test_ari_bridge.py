"""Agent bridging in the ARI adapter against the real Asterisk sandbox: SIPp plays the caller
(UAC) and the agent's phone (UAS on the agent's port)."""

from __future__ import annotations

import asyncio
import json
import shutil
import socket
import time
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from pydantic import SecretStr

from callvault.config import Settings
from telephony.ari.adapter import AriProvider, _Leg
from telephony.ari.client import AriClient
from telephony.ari.events import AriEventStream
from telephony.ari.sandbox import AGENT_PORT_OFFSET, AsteriskSandbox, ari_password
from telephony.commands import Answer, BridgeToAgent, Hangup, Verdict
from telephony.events import (
    AgentAnswered,
    AgentHungUp,
    AgentUnavailable,
    CallEnded,
    CallStarted,
    Event,
)
from tests.telephony.sandbox_fixture import free_port
from tests.telephony.test_ari_adapter import _finish, _sipp

SIPP_DIR = Path(__file__).resolve().parents[2] / "deploy" / "sipp"
RING = 4.0  # agent ring timeout for these tests, seconds
Outcome = tuple[list[tuple[Event, float]], float, list[tuple[int, str]], list[list[int]]]
VERDICT = Verdict(verified=True, method="pin", reason=None, at=1.0, account_ref="acct-ref-1")


def _provider(settings: Settings) -> AriProvider:
    return AriProvider.from_settings(settings, ari_password(settings), backoff_initial=0.2,
                                     backoff_max=1.0, agent_ring_timeout=RING)


async def _agent(settings: Settings, scenario: str, workdir: Path,
                 up_ms: int = 3000) -> asyncio.subprocess.Process:
    """A SIPp UAS answering for agent 0 of settings.agent_endpoints on its port."""
    assert shutil.which("sipp"), "sip-tester is not installed (make installs it)"
    return await asyncio.create_subprocess_exec(
        "sipp", "-sf", str(SIPP_DIR / scenario), "-m", "1", "-d", str(up_ms),
        "-i", "127.0.0.1", "-mi", "127.0.0.1",
        "-p", str(settings.sip_port + AGENT_PORT_OFFSET),
        "-mp", str(free_port(socket.SOCK_DGRAM)),
        "-nostdin", "-trace_err", "-timeout", "30s", "-timeout_error",
        cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)


async def _collect(events: AsyncIterator[Event], until: type[Event], timeout: float,
                   seen: list[tuple[Event, float]]) -> Event:
    """Append every event to `seen` (with its arrival time) up to one of type `until`."""
    async with asyncio.timeout(timeout):
        async for event in events:
            seen.append((event, time.monotonic()))
            if isinstance(event, until):
                return event
    raise AssertionError("the events ended")


async def _bridged_call(sandbox: AsteriskSandbox, workdir: Path, agent_scenario: str | None,
                        outcome: type[Event]) -> Outcome:
    """One SIPp caller answered and bridged; events up to `outcome`, then hung up."""
    s = sandbox.settings
    seen: list[tuple[Event, float]] = []
    results: list[tuple[int, str]] = []
    bridges: list[list[int]] = []
    async with _provider(s) as ari:
        await asyncio.wait_for(ari.stream.connected.wait(), 10)
        events = ari.events()
        agent = await _agent(s, agent_scenario, workdir) if agent_scenario else None
        caller = await _sipp(s, "uac_answered.xml", workdir)
        try:
            started = await _collect(events, CallStarted, 15, seen)
            await ari.commands(started.call_id, [Answer(), BridgeToAgent(VERDICT)])
            bridged = time.monotonic()
            await _collect(events, outcome, RING + 15, seen)
            bridges.append(await _bridge_sizes(ari))
            if outcome is AgentAnswered:
                await _collect(events, AgentHungUp, 15, seen)
            await ari.commands(started.call_id, [Hangup("done")])
            await _collect(events, CallEnded, 10, seen)
            await asyncio.sleep(0.3)  # the bridge is destroyed in the background
            bridges.append(await _bridge_sizes(ari))
        finally:
            results.append(await _finish(caller))
            if agent is not None:
                results.append(await _finish(agent))
            await events.aclose()  # type: ignore[attr-defined]
    return seen, bridged, results, bridges


async def _bridge_sizes(ari: AriProvider) -> list[int]:
    """How many channels each bridge of the sandbox holds."""
    _, body = await ari.client.request("GET", "bridges", "list bridges")
    return [len(b["channels"]) for b in json.loads(body)]


def test_a_verified_caller_reaches_agent1_who_answers_and_later_hangs_up(
        sandbox: AsteriskSandbox, tmp_path: Path) -> None:
    """agent1's UAS answers → AgentAnswered("agent1"); its BYE → AgentHungUp; no CallStarted."""
    seen, bridged, results, bridges = asyncio.run(
        _bridged_call(sandbox, tmp_path, "uas_agent.xml", AgentAnswered))
    assert bridges == [[2], []], bridges  # caller and agent mixed; destroyed at the end
    kinds = [type(e).__name__ for e, _ in seen]
    assert kinds == ["CallStarted", "AgentAnswered", "AgentHungUp", "CallEnded"], kinds
    call = seen[0][0].call_id
    assert all(e.call_id == call for e, _ in seen)
    answered, answered_at = seen[1]
    assert isinstance(answered, AgentAnswered) and answered.agent == "agent1"
    assert answered_at - bridged < 3.0
    assert 2.0 < seen[2][1] - answered_at < 6.0  # the agent stays up 3 s
    assert [rc for rc, _ in results] == [0, 0], [err[-2000:] for _, err in results]


@pytest.mark.parametrize("agent_scenario", ["uas_agent_busy.xml", None],
                         ids=["busy-486", "nobody-listening"])
def test_an_agent_who_does_not_answer_is_unavailable_within_the_ring_timeout(
        sandbox: AsteriskSandbox, tmp_path: Path, agent_scenario: str | None) -> None:
    """agent1 rejects with 486, or nobody listens; agent2 never answers either → one
    AgentUnavailable for the round, once every agent of the pool has rung out."""
    seen, bridged, results, bridges = asyncio.run(
        _bridged_call(sandbox, tmp_path, agent_scenario, AgentUnavailable))
    assert bridges == [[1], []], bridges  # the caller waits alone; destroyed at the end
    kinds = [type(e).__name__ for e, _ in seen]
    assert kinds == ["CallStarted", "AgentUnavailable", "CallEnded"], kinds
    pool = len(sandbox.settings.agent_endpoints)
    rung_out = 1 if agent_scenario else pool  # a 486 ends agent1's ringing at once
    assert RING * rung_out - 1.0 < seen[1][1] - bridged < RING * rung_out + 1.5
    assert [rc for rc, _ in results] == [0] * len(results), [e[-2000:] for _, e in results]


def test_agents_are_picked_round_robin_skipping_busy_ones_and_legs_are_not_callers() -> None:
    """The pool rotates, skips agents with a live leg, and an agent's StasisStart is no caller."""
    provider = AriProvider(AriClient("http://127.0.0.1:9", "u", SecretStr("p")),
                           AriEventStream("http://127.0.0.1:9", "u", SecretStr("p"), "app"),
                           agents=["a1", "a2", "a3"])
    assert [provider._pick_agent() for _ in range(4)] == ["a1", "a2", "a3", "a1"]
    provider._legs["leg.1"] = _Leg("call", "a2", "leg.1")
    assert [provider._pick_agent() for _ in range(3)] == ["a3", "a1", "a3"]
    stray = {"type": "StasisStart", "args": ["agent"], "channel": {"id": "x.9", "caller": {}}}

    async def translate() -> list[object]:
        out: list[object] = list(provider._translate(stray))  # and a hang-up is attempted
        assert len(provider._tasks) == 1
        await provider.close()
        return out

    assert asyncio.run(translate()) == [] and provider._calls == {}
