"""Twilio's webhooks, served by `callvault serve` (aiohttp routes under `/twilio/`).

Every request is checked first: its `X-Twilio-Signature` with the `twilio` library's
`RequestValidator` over `public_url` + the request's path and query (the URL Twilio was
given, which behind a proxy is not the one we see), then its `AccountSid` against ours.
A missing or wrong signature is 403, a well-signed request that makes no sense (no call
sid, an unknown step, a call we do not know) is 400; both are logged without their
parameters and change nothing. Only then is the IVR step run (`telephony.twilio.ivr`).

Routes, what Twilio calls each for, and the machine event it becomes:
- `POST /twilio/voice`: a new inbound call (the number's Voice URL) → CallStarted.
- `POST /twilio/step?call&seq&ev`: a Gather's action, our Redirects, the Dial's action →
  keys, prompt ends, timers, agent results.
- `POST /twilio/agent?call&agent`: the agent's phone answered (the Dial noun's `url`) →
  AgentAnswered and the agent's screen-pop.
- `POST /twilio/status[?leg]`: a call's status callback → CallEnded (a call-back leg that
  never answered: CallbackFailed).
- `POST /twilio/callback?leg`: the call-back's Url, the customer answered → CallbackAnswered.
- `POST /twilio/recording?call`: the Dial recording's status callback → the vault.
"""

from __future__ import annotations

import asyncio
import inspect
import logging
import os
import re
from collections.abc import Awaitable, Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from aiohttp import web
from pydantic import SecretStr
from twilio.request_validator import RequestValidator

from storage.audit import AccessLog, AuditEvent
from storage.errors import StorageError
from telephony.commands import Verdict
from telephony.errors import TelephonyError
from telephony.twilio.ivr import STEPS, StepResult, TwilioIvr
from telephony.twilio.rest import TwilioRest

log = logging.getLogger(__name__)

_CALL_SID = re.compile(r"^CA[0-9a-f]{32}$")
_RECORDING_SID = re.compile(r"^RE[0-9a-f]{32}$")
_UUID = re.compile(r"^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$")
_ENDED = {"completed", "busy", "failed", "no-answer", "canceled"}
ACTOR = "twilio-webhook"
XML = "text/xml"

OnVerdict = Callable[[str, Verdict], Awaitable[None] | None]
OnAgent = Callable[[str, str, Verdict], Awaitable[None] | None]
# (call id, recording sid, callback parameters) → the recording is taken into the vault
OnRecording = Callable[[str, str, dict[str, str]], Awaitable[None]]


class Refused(Exception):
    """A request we answer with an error status and nothing else."""

    def __init__(self, status: int, why: str) -> None:
        super().__init__(why)
        self.status = status


class TwilioWebhooks:
    """The webhook routes of one Twilio account; see the module doc."""

    def __init__(self, ivr: TwilioIvr, account_sid: str, auth_token: SecretStr,
                 public_url: str, *, access_log: AccessLog | None = None,
                 on_verdict: OnVerdict | None = None, on_agent: OnAgent | None = None,
                 on_recording: OnRecording | None = None, rest: TwilioRest | None = None,
                 callback_ring_seconds: float = 45.0) -> None:
        self._ivr = ivr
        self._account = account_sid
        self._validator = RequestValidator(auth_token.get_secret_value())
        self._base = public_url.rstrip("/")
        self._log = access_log
        self._on_verdict = on_verdict
        self._on_agent = on_agent
        self._on_recording = on_recording
        self._rest = rest
        self._callback_ring = callback_ring_seconds
        self._pin_pool = ThreadPoolExecutor(max_workers=os.cpu_count() or 2,
                                            thread_name_prefix="twilio-pin")

    def close(self) -> None:
        """Stop the PIN-check threads (after the HTTP server has stopped)."""
        self._pin_pool.shutdown(wait=True, cancel_futures=True)

    def add_routes(self, app: web.Application) -> None:
        app.router.add_post("/twilio/voice", self._voice)
        app.router.add_post("/twilio/step", self._step)
        app.router.add_post("/twilio/agent", self._agent)
        app.router.add_post("/twilio/status", self._status)
        app.router.add_post("/twilio/recording", self._recording)
        app.router.add_post("/twilio/callback", self._callback)

    # --- the checks every request passes first ----------------------------------------------
    async def _checked(self, request: web.Request) -> dict[str, str]:
        """The form parameters of a request that Twilio signed for our account."""
        if request.content_type != "application/x-www-form-urlencoded":
            raise Refused(400, "not a form post")
        form = await request.post()
        params = {k: v for k, v in form.items() if isinstance(v, str)}
        if len(params) != len(form):
            raise Refused(400, "unexpected file upload")
        signature = request.headers.get("X-Twilio-Signature", "")
        url = self._base + request.rel_url.path_qs
        if not signature or not self._validator.validate(url, params, signature):
            raise Refused(403, "missing or wrong X-Twilio-Signature")
        if params.get("AccountSid") != self._account:
            raise Refused(403, "signed for another account")
        return params

    async def _handle(self, request: web.Request,
                      work: Callable[[dict[str, str]], Awaitable[StepResult]]) -> web.Response:
        try:
            params = await self._checked(request)
            result = await work(params)
        except Refused as exc:
            await self._refused(request, exc)
            return web.Response(status=exc.status, text=str(exc))
        except StorageError as exc:
            log.error("Twilio webhook %s: storage unavailable (%s)", request.path,
                      type(exc).__name__)
            return web.Response(status=503, text="try again")
        await self._after(result)
        if not result.twiml:
            return web.Response(status=204)
        return web.Response(text=result.twiml, content_type=XML,
                            headers={"Cache-Control": "no-store"})

    async def _refused(self, request: web.Request, exc: Refused) -> None:
        log.warning("Twilio webhook %s refused (%d): %s", request.path, exc.status, exc)
        if self._log is not None:
            entry = AuditEvent(actor=ACTOR, role="system", action="webhook",
                               outcome="denied", origin=request.remote or "unknown",
                               detail=f"{request.path}: {exc}")
            try:
                await asyncio.to_thread(self._log.append, entry)
            except StorageError as err:
                log.error("Twilio webhook: the refusal could not be logged (%s)",
                          type(err).__name__)

    async def _after(self, result: StepResult) -> None:
        """What a committed step asks for: log and announce verdicts, pop agents' screens."""
        for call_id, verdict in result.verdicts:   # on the access log by the step itself
            await _call(self._on_verdict, call_id, verdict)
        for call_id, agent, verdict in result.answered:
            await _call(self._on_agent, call_id, agent, verdict)
        for account_ref in result.callbacks:
            await self._place_callback(account_ref)

    async def _place_callback(self, account_ref: str) -> None:
        """Dial the number of record over the REST API on a new leg of our own."""
        try:
            leg, number = await asyncio.to_thread(self._ivr.new_callback_leg, account_ref)
        except (StorageError, ValueError) as exc:
            log.error("Twilio: the call-back could not be prepared (%s)", type(exc).__name__)
            return
        sid: str | None = None
        if self._rest is None:
            log.error("Twilio: call-back leg %s: no REST client configured", leg)
        else:
            try:
                sid = await self._rest.place_call(
                    number, self._ivr.url("/twilio/callback", leg=leg),
                    self._ivr.url("/twilio/status", leg=leg),
                    timeout=max(5, round(self._callback_ring)))
                log.info("Twilio: call-back leg %s dialling", leg)
            except TelephonyError as exc:
                log.warning("Twilio: call-back leg %s could not be placed (%s: %s)", leg,
                            type(exc).__name__, exc)
        try:
            result = await asyncio.to_thread(self._ivr.callback_placed, leg, sid)
        except StorageError as exc:
            log.error("Twilio: call-back leg %s: state not stored (%s)", leg,
                      type(exc).__name__)
            return
        await self._after(result)

    # --- the routes --------------------------------------------------------------------------
    async def _voice(self, request: web.Request) -> web.Response:
        async def work(p: dict[str, str]) -> StepResult:
            sid = _sid(p)
            return await asyncio.to_thread(self._ivr.incoming, sid, p.get("From"))
        return await self._handle(request, work)

    async def _step(self, request: web.Request) -> web.Response:
        async def work(p: dict[str, str]) -> StepResult:
            sid = _sid(p)
            q = request.rel_url.query
            call, kind = q.get("call", ""), q.get("ev", "")
            if not _UUID.match(call) or kind not in STEPS or not q.get("seq", "").isdigit():
                raise Refused(400, "not a step of ours")
            # an entry step may run argon2id (~0.1 s of CPU): its own pool, sized to the
            # cores, so it never holds up the other steps in the shared one
            pool = self._pin_pool if kind == "gather" else None
            return await asyncio.get_running_loop().run_in_executor(
                pool, self._ivr.step, sid, call, int(q["seq"]), kind, p)
        return await self._handle(request, work)

    async def _agent(self, request: web.Request) -> web.Response:
        async def work(p: dict[str, str]) -> StepResult:
            parent = p.get("ParentCallSid", "")
            q = request.rel_url.query
            if not _CALL_SID.match(parent) or not _UUID.match(q.get("call", "")):
                raise Refused(400, "not an agent leg of ours")
            return await asyncio.to_thread(self._ivr.agent_answered, parent, q["call"],
                                           q.get("agent", ""))
        return await self._handle(request, work)

    async def _status(self, request: web.Request) -> web.Response:
        async def work(p: dict[str, str]) -> StepResult:
            sid = _sid(p)
            status = p.get("CallStatus", "")
            leg = request.rel_url.query.get("leg")
            if leg is not None and not _UUID.match(leg):
                raise Refused(400, "not a leg of ours")
            if status not in _ENDED:
                return StepResult("")
            return await asyncio.to_thread(self._ivr.ended, sid, status, leg)
        return await self._handle(request, work)

    async def _callback(self, request: web.Request) -> web.Response:
        async def work(p: dict[str, str]) -> StepResult:
            sid = _sid(p)
            leg = request.rel_url.query.get("leg", "")
            if not _UUID.match(leg):
                raise Refused(400, "not a leg of ours")
            return await asyncio.to_thread(self._ivr.callback_answered, sid, leg)
        return await self._handle(request, work)

    async def _recording(self, request: web.Request) -> web.Response:
        async def work(p: dict[str, str]) -> StepResult:
            _sid(p)   # a CallSid must be there, whichever leg it names
            call = request.rel_url.query.get("call", "")
            recording = p.get("RecordingSid", "")
            if not _UUID.match(call) or not _RECORDING_SID.match(recording):
                raise Refused(400, "not a recording of ours")
            if p.get("RecordingStatus") != "completed":
                return StepResult("")
            try:
                # `call` is from the URL we gave Twilio, which the signature covers; the
                # CallSid of a Dial's recording may name either leg, so it is not compared
                await asyncio.to_thread(self._ivr.recording_owner, None, call)
            except ValueError:
                raise Refused(400, "not a call of ours") from None
            if self._on_recording is None:
                log.warning("Twilio: call %s: a recording is ready but no vault is wired",
                            call)
                return StepResult("")
            await self._on_recording(call, recording, p)
            return StepResult("")
        return await self._handle(request, work)


def _sid(params: dict[str, str]) -> str:
    sid = params.get("CallSid", "")
    if not _CALL_SID.match(sid):
        raise Refused(400, "no CallSid")
    return sid


async def _call(hook: Callable[..., Any] | None, *args: Any) -> None:
    if hook is None:
        return
    try:
        result = hook(*args)
        if inspect.isawaitable(result):
            await result
    except Exception as exc:  # a hook is a convenience: the call goes on
        log.error("Twilio: a webhook hook failed (%s)", type(exc).__name__)
