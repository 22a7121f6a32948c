"""IVR under load: SIPp callers through identification and PIN to an agent, callvault's ARI
IVR against the same flow written as plain Asterisk dialplan, on the same Asterisk sandbox
in the same run.

The two flows:
- ARI: callvault's `IvrDriver` + `AriProvider` + `storage.customers.Customers` with its
  production argon2id parameters (argon2-cffi's defaults, printed), on an embedded
  PostgreSQL in a temporary folder; one customer per caller, each with its own caller id.
- plain: the `[plain-ivr]` context of deploy/asterisk/extensions.conf (dialled as 999 +
  number): identify by caller id in AstDB, the same prompt files as SOUNDS["enter-pin"],
  Read with # and the same 7 s digit timeout, a *plaintext* PIN comparison (callvault's
  argon2id check is the real cost being measured), then the same agent pool round robin
  with the same ring timeout. The bench loads its AstDB data with Asterisk's CLI in the
  sandbox's chroot (ARI refuses DB() writes: a "dangerous" function) and sets the pool's
  globals (CVB_AGENTS, CVB_RING) through ARI.

Agents: the pool is `--agents` endpoints (default: one per caller, so no caller ever waits
for a free agent in either flow); agent i is a SIPp UAS on sip_port+10+i taking any number
of calls, answering at once, talking `--talk-ms`, then hanging up.

Time-to-agent is measured caller-side, the same way for both flows: SIPp's caller logs the
wall clock just before its INVITE, just before its # key, and when the far end's BYE
arrives. The BYE comes because the agent hung up after the fixed talk time, so
  time-to-agent = BYE - INVITE - talk time   (the caller's view, its own fixed pauses included:
                                              3 s before the first key, 0.7 s between keys)
  after-#       = BYE - # - talk time        (PIN check, agent hunt, ring, answer, and the
                                              agent's hang-up relayed to the caller)
The ratio target applies to time-to-agent as the issue defines it; the after-# ratio is
printed beside it because the caller's fixed ~7.2 s of pauses dilute the former. Measuring
at the caller needs nothing from either implementation (no second ARI subscription beside
callvault's, no dialplan hooks) and is the same SIPp code path for both flows; the relayed
hang-up it includes is a few ms in both (printed in the breakdown). The plain flow runs
first, then the ARI flow, on the same Asterisk and the same agent processes.

A call succeeds when the caller got that BYE (not its own 40 s timeout) and the service
says the agent answered it: for ARI a verified-by-PIN verdict and AgentAnswered for that
caller id; for plain DIALSTATUS=ANSWER left in AstDB cvbench/result/<caller id>.

Service-side event-to-command latency is `IvrDriver.latencies` (from taking an event off a
call's queue to handing its provider commands to the provider). Also printed: # key to the
BridgeToAgent command and on to AgentAnswered, seen at the provider boundary, and a profile:
the duration of each ARI REST call and of the driver's Customers calls, by kind.

One warm-up call per flow runs first and is not counted. Exit status 1 if either flow has
a call that did not succeed; latency and ratio targets are printed as met / not met.
Usage: .venv/bin/python bench/ivr_load.py [--callers 50] [--rate 10] [--quick]
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import math
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.parse
from collections.abc import AsyncIterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher
from benchstats import pct, progress

from callvault.config import Settings, load_settings
from ivr.driver import IvrDriver
from ivr.machine import IvrConfig
from storage.customers import Customers
from storage.db import EmbeddedPostgres, migrate
from storage.keys import LocalKeyring
from telephony.ari.adapter import SOUNDS, AriProvider
from telephony.ari.client import AriClient
from telephony.ari.sandbox import AGENT_PORT_OFFSET, AsteriskSandbox, ari_password
from telephony.commands import BridgeToAgent, ProviderCommand, Verdict
from telephony.events import AgentAnswered, CallStarted, Digits, Event

ROOT = Path(__file__).resolve().parents[1]
SIPP_DIR = ROOT / "deploy" / "sipp"
SERVICE = "18005550100"
PLAIN_PREFIX = "999"         # [from-callers] sends 999 + number to [plain-ivr]
PIN = "235789"               # keys in the DTMF pcaps' only usable order (see uac_dtmf.xml)
CALLER_TIMEOUT = 40.0        # the caller's wait for the BYE after its #, seconds
TARGET_LATENCY_MS = 20.0
TARGET_RATIO = 1.2



# --- ports and processes ----------------------------------------------------------------
def _udp_free(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        try:
            s.bind(("127.0.0.1", port))
        except OSError:
            return False
    return True


def _tcp_free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


class Ports:
    """UDP ports handed out once each: the SIP port with its agent range, media ports."""

    def __init__(self, agents: int) -> None:
        self.taken: set[int] = set()
        for base in range(21000, 60000, 211):
            wanted = [base, base + 5, *range(base + AGENT_PORT_OFFSET,
                                             base + AGENT_PORT_OFFSET + agents)]
            if all(_udp_free(p) for p in wanted):
                self.sip = base
                self.taken.update(range(base, base + AGENT_PORT_OFFSET + agents + 1))
                break
        else:
            raise SystemExit("no free UDP port range for SIP and the agents")
        self._next = 61000

    def media(self) -> int:
        """A free UDP port for SIPp media, with the next three free as well (RTP, RTCP)."""
        while True:
            port, self._next = self._next, self._next + 4
            if self._next > 65000:
                raise SystemExit("out of media ports")
            if all(_udp_free(p) and p not in self.taken for p in range(port, port + 4)):
                self.taken.update(range(port, port + 4))
                return port


def _sipp_common(media_port: int) -> list[str]:
    return ["-i", "127.0.0.1", "-mi", "127.0.0.1", "-mp", str(media_port), "-nostdin",
            "-trace_err", "-trace_logs"]


async def start_agents(settings: Settings, ports: Ports, talk_ms: int,
                       workdir: Path) -> list[asyncio.subprocess.Process]:
    """One SIPp UAS per agent endpoint, on sip_port + 10 + i, taking any number of calls."""
    procs = []
    for i, name in enumerate(settings.agent_endpoints):
        procs.append(await asyncio.create_subprocess_exec(
            "sipp", "-sf", str(SIPP_DIR / "load_agent.xml"), "-d", str(talk_ms),
            "-p", str(settings.sip_port + AGENT_PORT_OFFSET + i),
            *_sipp_common(ports.media()), "-log_file", str(workdir / f"{name}.log"),
            "-error_file", str(workdir / f"{name}.err"),
            cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.DEVNULL))
    await asyncio.sleep(0.5)
    dead = [p.returncode for p in procs if p.returncode is not None]
    if dead:
        raise SystemExit(f"{len(dead)} agent SIPp processes exited at once: {dead[:5]}")
    return procs


async def stop(procs: Sequence[asyncio.subprocess.Process]) -> None:
    for p in procs:
        if p.returncode is None:
            p.send_signal(signal.SIGTERM)
    for p in procs:
        try:
            await asyncio.wait_for(p.wait(), 5)
        except TimeoutError:
            p.kill()
            await p.wait()


async def run_callers(settings: Settings, ports: Ports, service: str, callers: Sequence[str],
                      rate: float, workdir: Path, name: str) -> Path:
    """SIPp calls `service` once per caller id, `rate` new calls a second, all at once at
    most; returns its log of marks. Waits for every call to end."""
    inf = workdir / f"{name}.csv"
    inf.write_text("SEQUENTIAL\n" + "".join(f"{c};\n" for c in callers))
    log = workdir / f"{name}.log"
    proc = await asyncio.create_subprocess_exec(
        "sipp", f"127.0.0.1:{settings.sip_port}", "-sf", str(SIPP_DIR / "load_caller.xml"),
        "-inf", str(inf), "-s", service, "-m", str(len(callers)), "-l", str(len(callers)),
        "-r", f"{max(1, round(rate * 10))}", "-rp", "10000",
        "-p", str(ports.media()), *_sipp_common(ports.media()), "-log_file", str(log),
        "-error_file", str(workdir / f"{name}.err"),
        "-timeout", f"{int(CALLER_TIMEOUT + 60 + len(callers) / rate)}s",
        cwd=workdir, stdout=asyncio.subprocess.DEVNULL, stderr=asyncio.subprocess.PIPE)
    _, err = await proc.communicate()
    if proc.returncode not in (0, 1):  # 1: some call failed, counted from the log
        progress(f"SIPp callers ({name}) exited {proc.returncode}: "
                 f"{err.decode(errors='replace')[-500:]}")
    return log


@dataclass
class Marks:
    """What one caller's SIPp log says about its call (wall-clock seconds)."""

    invite: float | None = None
    pound: float | None = None
    bye: float | None = None
    timeout: float | None = None


def read_marks(log: Path) -> dict[str, Marks]:
    marks: dict[str, Marks] = {}
    if not log.exists():
        return marks
    for line in log.read_text(errors="replace").splitlines():
        parts = line.split()
        if len(parts) >= 5 and parts[-5] == "cvload":
            caller, what, sec, usec = parts[-4:]
            setattr(marks.setdefault(caller, Marks()), what, float(sec) + float(usec) / 1e6)
    return marks


# --- Asterisk helpers ------------------------------------------------------------------------
def astdb_put(box: AsteriskSandbox, entries: Sequence[tuple[str, str, str]]) -> None:
    """AstDB puts (family, key, value) through Asterisk's CLI in the chroot: ARI refuses
    DB() writes (a "dangerous function" unless asterisk.conf sets live_dangerously)."""
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    conf = f"{box.instance}/etc/asterisk.conf"
    for family, key, value in entries:
        done = subprocess.run(
            [chroot, str(box.root), "/usr/sbin/asterisk", "-C", conf, "-rx",
             f"database put {family} {key} {value}"],
            capture_output=True, text=True, timeout=10, check=False)
        if "Updated database successfully" not in done.stdout:
            raise SystemExit(f"AstDB put {family} failed: {done.stdout[-200:]}"
                             f"{done.stderr[-200:]}")


def astdb_show(box: AsteriskSandbox, family: str) -> dict[str, str]:
    """key → value of one AstDB family (ARI's GET /asterisk/variable does not run DB())."""
    chroot = shutil.which("chroot") or "/usr/sbin/chroot"
    done = subprocess.run(
        [chroot, str(box.root), "/usr/sbin/asterisk", "-C",
         f"{box.instance}/etc/asterisk.conf", "-rx", f"database show {family}"],
        capture_output=True, text=True, timeout=10, check=False)
    found = {}
    for line in done.stdout.splitlines():
        key, sep, value = line.partition(":")
        if sep and key.strip().startswith(f"/{family}/"):
            found[key.strip()[len(family) + 2:]] = value.strip()
    return found


def ari_set(box: AsteriskSandbox, variable: str, value: str) -> None:
    """Set a global variable through ARI."""
    query = urllib.parse.urlencode({"variable": variable, "value": value})
    code, body = box.ari_request("POST", f"asterisk/variable?{query}")
    if code != 204:
        raise SystemExit(f"ARI refused to set {variable}: {code} {body[:200]!r}")


# --- the ARI flow -----------------------------------------------------------------------------
@dataclass
class Watch:
    """What the provider boundary saw of each caller id."""

    started: dict[str, str] = field(default_factory=dict)       # call id → caller id
    pound: dict[str, float] = field(default_factory=dict)       # call id → # key event
    bridged: dict[str, float] = field(default_factory=dict)     # call id → BridgeToAgent
    answered: dict[str, float] = field(default_factory=dict)    # call id → AgentAnswered
    rest: dict[str, list[float]] = field(default_factory=dict)  # ARI operation → durations
    store: dict[str, list[float]] = field(default_factory=dict)  # Customers method → same


def time_customers(customers: Customers, watch: Watch) -> None:
    """Profile: note how long the driver's Customers calls take (in their threads)."""
    for name in ("find_by_phone", "check_pin"):
        inner = getattr(customers, name)

        def timed(*args: Any, _inner: Any = inner, _name: str = name) -> Any:
            began = time.perf_counter()
            try:
                return _inner(*args)
            finally:
                watch.store.setdefault(_name, []).append(time.perf_counter() - began)

        setattr(customers, name, timed)


def time_rest_calls(client: AriClient, watch: Watch) -> None:
    """Profile: note how long each ARI REST call of `client` takes, by operation."""
    inner = client.request

    async def timed(method: str, path: str, op: str, **kw: Any) -> tuple[int, bytes]:
        began = time.perf_counter()
        try:
            return await inner(method, path, op, **kw)
        finally:
            watch.rest.setdefault(op, []).append(time.perf_counter() - began)

    client.request = timed  # type: ignore[method-assign]


class WatchedProvider:
    """AriProvider as the driver sees it, noting when events and commands pass."""

    def __init__(self, inner: AriProvider, watch: Watch) -> None:
        self.inner = inner
        self.watch = watch

    async def events(self) -> AsyncIterator[Event]:
        async for event in self.inner.events():
            now = time.time()   # wall clock, comparable with the SIPp marks
            if isinstance(event, CallStarted) and event.caller_id:
                self.watch.started[event.call_id] = event.caller_id
            elif isinstance(event, Digits) and event.digits.endswith("#"):
                self.watch.pound[event.call_id] = now
            elif isinstance(event, AgentAnswered):
                self.watch.answered[event.call_id] = now
            yield event

    async def commands(self, call_id: str, commands: Sequence[ProviderCommand]) -> None:
        if any(isinstance(c, BridgeToAgent) for c in commands):
            self.watch.bridged.setdefault(call_id, time.time())
        await self.inner.commands(call_id, commands)

    async def dial(self, call_id: str, number: str) -> None:
        await self.inner.dial(call_id, number)


@dataclass
class FlowResult:
    name: str
    marks: dict[str, Marks]
    answered: set[str]                  # caller ids the service says reached an agent
    latencies: list[float] = field(default_factory=list)
    watch: Watch | None = None          # the ARI flow's provider boundary
    agent_acks: dict[str, float] = field(default_factory=dict)  # caller id → agent's ACK


_FROM_USER = re.compile(r"sip:([^@;>]+)@")


def read_agent_acks(workdir: Path, agents: Sequence[str]) -> dict[str, float]:
    """Caller id → when the agent's UAS got the ACK of its 200 (the plain flow's Dial
    passes the caller id on; callvault's agent legs carry none, so they are not linked)."""
    acks: dict[str, float] = {}
    for name in agents:
        log = workdir / f"{name}.log"
        if not log.exists():
            continue
        for line in log.read_text(errors="replace").splitlines():
            parts = line.split(maxsplit=4)
            if len(parts) == 5 and parts[:2] == ["cvagent", "answered"]:
                m = _FROM_USER.search(parts[4])
                if m:
                    acks[m.group(1)] = float(parts[2]) + float(parts[3]) / 1e6
    return acks


async def run_ari_flow(box: AsteriskSandbox, ports: Ports, customers: Customers,
                       callers: Sequence[str], rate: float, workdir: Path, name: str,
                       ring: float) -> FlowResult:
    s = box.settings
    watch = Watch()
    verdicts: dict[str, Verdict] = {}
    provider = AriProvider.from_settings(s, ari_password(s), agent_ring_timeout=ring)
    time_rest_calls(provider.client, watch)
    time_customers(customers, watch)
    async with provider:
        await asyncio.wait_for(provider.stream.connected.wait(), 10)
        driver = IvrDriver(WatchedProvider(provider, watch), customers, config=IvrConfig(),
                           on_verdict=verdicts.__setitem__)
        runner = asyncio.create_task(driver.run())
        try:
            log = await run_callers(s, ports, SERVICE, callers, rate, workdir, name)
            deadline = time.monotonic() + 30
            while driver.active_calls and time.monotonic() < deadline:
                await asyncio.sleep(0.1)
        finally:
            runner.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await runner
    answered = {watch.started[c] for c in watch.answered
                if c in watch.started and verdicts.get(c) is not None
                and verdicts[c].verified and verdicts[c].method == "pin"}
    return FlowResult(name, read_marks(log), answered, driver.latencies, watch)


async def run_plain_flow(box: AsteriskSandbox, ports: Ports, callers: Sequence[str],
                         rate: float, workdir: Path, name: str) -> FlowResult:
    astdb_put(box, [("cvbench/result", c, "none") for c in callers])
    log = await run_callers(box.settings, ports, PLAIN_PREFIX + SERVICE, callers, rate,
                            workdir, name)
    results = astdb_show(box, "cvbench/result")
    answered = {c for c in callers if results.get(c) == "ANSWER"}
    return FlowResult(name, read_marks(log), answered,
                      agent_acks=read_agent_acks(workdir, box.settings.agent_endpoints))


# --- figures -------------------------------------------------------------------------------------

@dataclass
class Summary:
    ok: int
    total: int
    to_agent: list[float]
    after_pound: list[float]


def summarise(flow: FlowResult, callers: Sequence[str], talk: float) -> Summary:
    ok, to_agent, after_pound = 0, [], []
    for caller in callers:
        m = flow.marks.get(caller)
        if m is None or m.invite is None or m.pound is None or m.bye is None:
            continue
        if caller not in flow.answered or m.bye - m.pound < talk:
            continue
        ok += 1
        to_agent.append(m.bye - m.invite - talk)
        after_pound.append(m.bye - m.pound - talk)
    return Summary(ok, len(callers), to_agent, after_pound)


def met(ok: bool) -> str:
    return "met" if ok else "NOT MET"


def _stages(ari: FlowResult, plain: FlowResult, talk: float
            ) -> list[tuple[str, list[float], list[float]]]:
    """Where the time after the # key goes, per flow (seconds, successful or not)."""
    w = ari.watch or Watch()
    a: dict[str, list[float]] = {k: [] for k in ("digit", "check", "agent", "relay", "ans")}
    for call, caller in w.started.items():
        m = ari.marks.get(caller)
        if m is None or m.pound is None or call not in w.pound:
            continue
        a["digit"].append(w.pound[call] - m.pound)
        if call in w.bridged:
            a["check"].append(w.bridged[call] - w.pound[call])
            if call in w.answered:
                a["agent"].append(w.answered[call] - w.bridged[call])
                a["ans"].append(w.answered[call] - m.pound)
                if m.bye is not None:
                    a["relay"].append(m.bye - talk - w.answered[call])
    p_ans, p_relay = [], []
    for caller, ack in plain.agent_acks.items():
        m = plain.marks.get(caller)
        if m is None or m.pound is None:
            continue
        p_ans.append(ack - m.pound)
        if m.bye is not None:
            p_relay.append(m.bye - talk - ack)
    return [("# sent -> agent answered", a["ans"], p_ans),
            ("  # sent -> # event in callvault", a["digit"], []),
            ("  # event -> BridgeToAgent (PIN check)", a["check"], []),
            ("  BridgeToAgent -> AgentAnswered", a["agent"], []),
            ("agent answered -> caller's BYE - talk", a["relay"], p_relay)]


def _row(label: str, xa: float, xp: float, digits: int = 3, ratio: bool = True) -> str:
    fa = "-" if math.isnan(xa) else f"{xa:.{digits}f}"
    fp = "-" if math.isnan(xp) else f"{xp:.{digits}f}"
    fr = f"{xa / xp:.2f}" if ratio and xp and not math.isnan(xa / xp) else ""
    return f"{label:40}{fa:>16}{fp:>16}{fr:>8}"


def report(args: argparse.Namespace, ari: FlowResult, plain: FlowResult,
           callers: Sequence[str], hasher: PasswordHasher, agents: int) -> bool:
    talk = args.talk_ms / 1000
    a, p = summarise(ari, callers, talk), summarise(plain, callers, talk)
    lat = [x * 1000 for x in ari.latencies]
    print(f"\nIVR load: {len(callers)} callers at {args.rate:g} calls/s, {agents} agents "
          f"(SIPp UAS: answer at once, talk {args.talk_ms} ms), ring timeout {args.ring:g} s,"
          f" digit timeout {IvrConfig().digit_timeout:g} s, PIN prompt "
          f"{'+'.join(SOUNDS['enter-pin'])}")
    print(f"PIN check: callvault argon2id t={hasher.time_cost} m={hasher.memory_cost} KiB "
          f"p={hasher.parallelism} (Customers' default); the plain dialplan compares "
          "plaintext\n")
    print(f"{'':40}{'ARI (callvault)':>16}{'plain dialplan':>16}{'ratio':>8}")
    print(f"{'success':40}{f'{a.ok}/{a.total}':>16}{f'{p.ok}/{p.total}':>16}")
    print(_row("time-to-agent p50 (s)", pct(a.to_agent, 50), pct(p.to_agent, 50)))
    print(_row("time-to-agent p99 (s)", pct(a.to_agent, 99), pct(p.to_agent, 99)))
    print(_row("  of which after the # key, p50 (s)", pct(a.after_pound, 50),
               pct(p.after_pound, 50)))
    print(_row("  of which after the # key, p99 (s)", pct(a.after_pound, 99),
               pct(p.after_pound, 99)))
    print(_row(f"event-to-command p50 (ms, {len(lat)} ev.)", pct(lat, 50), math.nan,
               ratio=False))
    print(_row("event-to-command p99 (ms)", pct(lat, 99), math.nan, ratio=False))
    print(_row("event-to-command max (ms)", max(lat, default=math.nan), math.nan,
               ratio=False))
    print("\nafter the # key, p50 / p99 (s):")
    for label, xa, xp in _stages(ari, plain, talk):
        fa = f"{pct(xa, 50):.3f} / {pct(xa, 99):.3f}" if xa else "-"
        fp = f"{pct(xp, 50):.3f} / {pct(xp, 99):.3f}" if xp else "-"
        print(f"  {label:40}{fa:>16}{fp:>18}")
    if ari.watch is not None and ari.watch.rest:
        print(f"\nprofile of the ARI flow, p50 / p99 / max (ms); argon2id verify alone on an"
              f" idle machine: {args.verify_ms:.1f} ms")
        for op, xs in [*sorted(ari.watch.rest.items()), *sorted(ari.watch.store.items())]:
            ys = [x * 1000 for x in xs]
            what = op if op in ari.watch.rest else f"Customers.{op}"
            print(f"  {what:24}{len(ys):>5} calls  {pct(ys, 50):8.1f} / {pct(ys, 99):8.1f} / "
                  f"{max(ys):8.1f}")
    ratio = pct(a.to_agent, 99) / pct(p.to_agent, 99)
    after = pct(a.after_pound, 99) / pct(p.after_pound, 99)
    p99 = pct(lat, 99)
    everyone = a.ok == a.total and p.ok == p.total
    print("\ntargets:")
    print(f"  success 100% (both flows)           {a.ok / a.total:.0%} / {p.ok / p.total:.0%}"
          f"  {met(everyone)}")
    print(f"  p99 event-to-command <= {TARGET_LATENCY_MS:g} ms       {p99:.3f} ms"
          f"  {met(p99 <= TARGET_LATENCY_MS)}")
    print(f"  p99 time-to-agent ratio <= {TARGET_RATIO:g}      {ratio:.3f}"
          f"  {met(ratio <= TARGET_RATIO)}  (after the # key alone: {after:.2f})")
    return everyone


# --- setting up --------------------------------------------------------------------------------
def provision(box: AsteriskSandbox, customers: Customers, callers: Sequence[str],
              agents: Sequence[str], ring: float) -> None:
    """One customer per caller id (PIN 235789) in callvault and, in plaintext, in AstDB."""
    entries = []
    for i, caller in enumerate(callers):
        account = f"{7_000_000_000 + i}"
        customers.add(account, caller, PIN)
        entries += [("cvbench/phone", caller, account), ("cvbench/pin", account, PIN)]
    astdb_put(box, entries)
    ari_set(box, "CVB_AGENTS", ":".join(agents))
    ari_set(box, "CVB_RING", str(round(ring)))
    ari_set(box, "CVB_NEXT", "0")


async def bench(args: argparse.Namespace, work: Path) -> bool:
    agents = args.agents or min(64, args.callers)
    ports = Ports(agents)
    names = [f"agent{i + 1}" for i in range(agents)]
    settings = load_settings(None, state_dir=work / "state",
                             ari_url=f"http://127.0.0.1:{_tcp_free_port()}",
                             sip_port=ports.sip, agent_endpoints=names)
    box = AsteriskSandbox(settings.asterisk_root, settings)
    if box.ensure_created():
        progress("built the Asterisk chroot")
    box.configure()
    progress(f"starting Asterisk (SIP on UDP {settings.sip_port})")
    box.start(timeout=60)
    pg = EmbeddedPostgres(work / "pg")
    agent_procs: list[asyncio.subprocess.Process] = []
    try:
        dsn = pg.start()
        migrate(dsn)
        hasher = PasswordHasher()   # what Customers uses unless told otherwise
        sample = hasher.hash(PIN)
        timings = []
        for _ in range(5):
            began = time.perf_counter()
            hasher.verify(sample, PIN)
            timings.append(time.perf_counter() - began)
        args.verify_ms = pct(timings, 50) * 1000
        customers = Customers(dsn, LocalKeyring(work / "keys" / "keyring.json"))
        callers = [f"+1555{2000000 + i:07d}" for i in range(args.callers)]
        warm = ["+15559999999"]
        progress(f"provisioning {len(callers) + 1} customers (argon2id hashes) and AstDB")
        provision(box, customers, [*callers, *warm], names, args.ring)
        progress(f"starting {agents} agent UAS processes")
        agent_procs = await start_agents(settings, ports, args.talk_ms, work)
        progress("warm-up: one call through each flow (not counted)")
        await run_plain_flow(box, ports, warm, 1, work, "warm-plain")
        await run_ari_flow(box, ports, customers, warm, 1, work, "warm-ari", args.ring)
        progress(f"plain dialplan flow: {len(callers)} callers at {args.rate:g}/s")
        plain = await run_plain_flow(box, ports, callers, args.rate, work, "plain")
        progress(f"plain flow done: {len(plain.answered)} reached an agent")
        await asyncio.sleep(2)
        progress(f"ARI flow (callvault): {len(callers)} callers at {args.rate:g}/s")
        ari = await run_ari_flow(box, ports, customers, callers, args.rate, work, "ari",
                                 args.ring)
        progress(f"ARI flow done: {len(ari.answered)} reached an agent")
        ok = report(args, ari, plain, callers, hasher, agents)
        if not ok and args.keep:
            progress(f"logs kept in {work}")
        return ok
    finally:
        await stop(agent_procs)
        box.stop()
        pg.stop()


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--callers", type=int, default=50, help="callers, all concurrent at peak")
    ap.add_argument("--rate", type=float, default=10.0, help="new calls per second")
    ap.add_argument("--agents", type=int, default=0,
                    help="agent pool size (default: one per caller, at most 64)")
    ap.add_argument("--talk-ms", type=int, default=1000, help="agent talk time")
    ap.add_argument("--ring", type=float, default=20.0, help="agent ring timeout, seconds")
    ap.add_argument("--quick", action="store_true", help="a smoke test: 5 callers")
    ap.add_argument("--keep", action="store_true", help="keep the work folder (logs)")
    args = ap.parse_args()
    if args.quick:
        args.callers, args.rate = 5, min(args.rate, 5.0)
    if not shutil.which("sipp"):
        raise SystemExit("sipp (Debian sip-tester) is not installed; run make")
    if os.geteuid() != 0:
        raise SystemExit("the Asterisk sandbox runs as root")
    work = Path(tempfile.mkdtemp(prefix="cv-ivr-load-"))
    try:
        ok = asyncio.run(bench(args, work))
    finally:
        if not args.keep:
            shutil.rmtree(work, ignore_errors=True)
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
