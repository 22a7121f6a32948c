"""A Twilio SIMULATOR for tests (Twilio's cloud cannot run here): it places calls at our
webhooks the way Twilio does (form posts signed with X-Twilio-Signature by the `twilio`
library's own RequestValidator), and follows the TwiML it gets back: `<Say>` and `<Pause>`
pass at once, `<Gather>` takes the caller's next entry (its keys, the finishing # dropped
as Twilio drops it) or times out, `<Redirect>` is followed, `<Dial>` rings the agents (the
first answers through its noun's `url`, then hangs up, and the Dial's action follows),
`<Hangup>` ends the call and sends the status callback."""

from __future__ import annotations

import asyncio
import contextlib
import secrets
import threading
import urllib.error
import urllib.parse
import urllib.request
import xml.etree.ElementTree as ET
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from aiohttp import web
from twilio.request_validator import RequestValidator

ACCOUNT = "AC" + "0123456789abcdef" * 2
TOKEN = "simulated-auth-token-" + "x" * 11


@dataclass
class Response:
    status: int
    body: str


@dataclass
class SimCall:
    """One simulated call and everything the simulator saw."""

    sid: str
    caller: str | None
    entries: list[str | None]          # what the caller types at each Gather (None: silence)
    agent_answers: bool = True
    twiml: list[str] = field(default_factory=list)
    said: list[str] = field(default_factory=list)
    dials: list[ET.Element] = field(default_factory=list)
    ended: bool = False


class TwilioSimulator:
    """Drives calls against the webhooks at `base` (the public URL they were given)."""

    def __init__(self, base: str, account: str = ACCOUNT, token: str = TOKEN, *,
                 route: Callable[[str], str] | None = None) -> None:
        """`base` is the public URL; `route`, if given, maps each public URL to where the
        request is really sent (a load balancer picking an instance)."""
        self.base = base.rstrip("/")
        self.account = account
        self._validator = RequestValidator(token)
        self._route = route or (lambda url: url)
        self.sent: list[tuple[str, dict[str, str], Response]] = []

    def post(self, url: str, params: dict[str, str], *, sign: bool = True,
             signature: str | None = None) -> Response:
        """One webhook request, signed as Twilio signs it (unless told otherwise)."""
        headers = {"Content-Type": "application/x-www-form-urlencoded"}
        if sign:
            headers["X-Twilio-Signature"] = signature or self._validator.compute_signature(
                url, params)
        data = urllib.parse.urlencode(params).encode()
        request = urllib.request.Request(self._route(url), data=data, headers=headers,
                                         method="POST")
        try:
            with urllib.request.urlopen(request, timeout=30) as resp:
                out = Response(resp.status, resp.read().decode())
        except urllib.error.HTTPError as exc:
            out = Response(exc.code, exc.read().decode(errors="replace"))
        self.sent.append((url, params, out))
        return out

    def params(self, call: SimCall, **extra: str) -> dict[str, str]:
        base = {"AccountSid": self.account, "CallSid": call.sid, "From": call.caller or
                "anonymous", "To": "+18005550100", "Direction": "inbound",
                "CallStatus": "in-progress"}
        return {**base, **extra}

    def new_call(self, caller: str | None, entries: list[str | None],
                 agent_answers: bool = True) -> SimCall:
        return SimCall("CA" + secrets.token_hex(16), caller, list(entries), agent_answers)

    def run(self, call: SimCall, max_requests: int = 60) -> SimCall:
        """Place the call and follow its TwiML until it hangs up."""
        resp = self.post(f"{self.base}/twilio/voice", self.params(call, CallStatus="ringing"))
        return self._follow_all(call, resp, max_requests)

    def answer(self, call: SimCall, url: str, status_callback: str | None = None,
               max_requests: int = 60) -> SimCall:
        """An outbound call we were asked to place (a call-back) is answered: fetch its
        `url` and follow the TwiML; the status callback goes to `status_callback`."""
        resp = self.post(url, self.params(call, Direction="outbound-api"))
        self._follow_all(call, resp, max_requests, status_callback)
        return call

    def _follow_all(self, call: SimCall, resp: Response, max_requests: int,
                    status_callback: str | None = None) -> SimCall:
        for _ in range(max_requests):
            if resp.status != 200:
                raise AssertionError(f"webhook answered {resp.status}: {resp.body[:200]}")
            call.twiml.append(resp.body)
            nxt = self._follow(call, ET.fromstring(resp.body))
            if nxt is None:
                break
            resp = nxt
        else:
            raise AssertionError("the call did not end")
        call.ended = True
        self.post(status_callback or f"{self.base}/twilio/status",
                  self.params(call, CallStatus="completed"))
        return call

    def _follow(self, call: SimCall, root: ET.Element) -> Response | None:
        for verb in root:
            if verb.tag == "Say":
                call.said.append(verb.text or "")
            elif verb.tag == "Gather":
                for say in verb.iter("Say"):
                    call.said.append(say.text or "")
                entry = call.entries.pop(0) if call.entries else None
                if entry is None:
                    continue          # silence: Twilio goes on to the next verb
                finish = verb.get("finishOnKey", "#")
                keys = entry[:-1] if finish and entry.endswith(finish) else entry
                if not keys:
                    continue
                return self.post(verb.get("action", ""), self.params(call, Digits=keys))
            elif verb.tag == "Redirect":
                return self.post(verb.text or "", self.params(call))
            elif verb.tag == "Dial":
                call.dials.append(verb)
                return self._dial(call, verb)
            elif verb.tag == "Hangup":
                return None
        return None   # the end of the TwiML: Twilio hangs up

    def _dial(self, call: SimCall, dial: ET.Element) -> Response:
        status = "no-answer"
        if call.agent_answers and len(dial):
            noun = dial[0]
            leg = self.params(call, CallSid="CA" + secrets.token_hex(16), ParentCallSid=call.sid,
                              Direction="outbound-dial")
            answered = self.post(noun.get("url", ""), leg)
            if answered.status == 200 and "<Hangup" not in answered.body:
                status = "completed"
        return self.post(dial.get("action", ""), self.params(
            call, DialCallStatus=status, DialCallDuration="3" if status == "completed"
            else "0"))


@contextlib.contextmanager
def serving(app: web.Application, port: int) -> Iterator[asyncio.AbstractEventLoop]:
    """Serve `app` on 127.0.0.1:`port` from a thread with its own event loop (the
    simulator is synchronous); yields that loop, for coroutines that must run on it."""
    loop = asyncio.new_event_loop()
    ready = threading.Event()
    runner = web.AppRunner(app, access_log=None)

    async def start() -> None:
        await runner.setup()
        await web.TCPSite(runner, "127.0.0.1", port).start()
        ready.set()

    thread = threading.Thread(target=lambda: (loop.run_until_complete(start()),
                                              loop.run_forever()), daemon=True)
    thread.start()
    assert ready.wait(10), "the webhook server did not start"
    try:
        yield loop
    finally:
        asyncio.run_coroutine_threadsafe(runner.cleanup(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(10)
        loop.close()
