"""`callvault serve` with `telephony = "twilio"`: the webhooks, the REST client and the
recording intake, built from settings and joined to the vault, the agent desk and the
access log."""

from __future__ import annotations

import asyncio
import json
import uuid
from collections.abc import Awaitable, Callable
from dataclasses import dataclass

from aiohttp import web

from callvault.calls import register
from callvault.config import ConfigError, Settings
from callvault.twilio_intake import TwilioIntake
from recordings import pipeline
from storage.audit import AccessLog
from storage.customers import Customers
from telephony.commands import Verdict
from telephony.protocol import CallRecording
from telephony.twilio.ivr import TwilioIvr
from telephony.twilio.rest import TwilioRest
from telephony.twilio.webhooks import Refused, TwilioWebhooks

OnAgent = Callable[[str, str, Verdict], Awaitable[None]]


@dataclass
class TwilioSide:
    webhooks: TwilioWebhooks
    intake: TwilioIntake
    rest: TwilioRest
    ivr: TwilioIvr


def required(settings: Settings) -> tuple[str, str]:
    """The account and the public URL, or ConfigError naming what is missing."""
    missing = [name for name in ("twilio_account_sid", "twilio_auth_token", "public_url")
               if getattr(settings, name) is None]
    if missing:
        raise ConfigError(f"telephony = \"twilio\" needs {', '.join(missing)}")
    assert settings.twilio_account_sid is not None and settings.public_url is not None
    return settings.twilio_account_sid, settings.public_url


def build(settings: Settings, dsn: str, customers: Customers, access_log: AccessLog,
          rt: pipeline.Runtime, app: web.Application, on_agent: OnAgent) -> TwilioSide:
    """Everything Twilio needs, its routes added to `app`."""
    account, public_url = required(settings)
    assert settings.twilio_auth_token is not None
    key = (settings.twilio_recording_private_key.read_bytes()
           if settings.twilio_recording_private_key is not None else None)
    ivr = TwilioIvr(dsn, customers, public_url, settings.twilio_agents,
                    agent_ring_seconds=settings.agent_ring_seconds, log=access_log)
    rest = TwilioRest.from_settings(settings)

    async def sink(recording: CallRecording, verdict: Verdict | None) -> uuid.UUID:
        return await register(rt, recording, verdict)

    intake = TwilioIntake(dsn, rest, sink, settings.spool_dir / "twilio",
                          owner=lambda call_id: ivr.recording_owner(None, call_id),
                          private_key=key)

    async def on_recording(call_id: str, recording_sid: str, params: dict[str, str]) -> None:
        details = params.get("EncryptionDetails")
        try:
            encryption = json.loads(details) if details else None
        except ValueError:
            raise Refused(400, "EncryptionDetails is not JSON") from None
        if encryption is not None and (not isinstance(encryption, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in encryption.items())):
            raise Refused(400, "EncryptionDetails is not an object of strings")
        await asyncio.to_thread(intake.accept, call_id, recording_sid, encryption)

    webhooks = TwilioWebhooks(ivr, account, settings.twilio_auth_token, public_url,
                              access_log=access_log, on_agent=on_agent,
                              on_recording=on_recording, rest=rest)
    webhooks.add_routes(app)
    return TwilioSide(webhooks, intake, rest, ivr)
