"""What the driver needs from a phone provider: the one interface both adapters implement.

The driver reads `events()` and hands each event to the call's IVR machine; of the
commands the machine returns, it carries out the driver commands itself and passes the
provider commands, in order, to `commands()`. A call-back leg is started with `dial()`
under a call id the driver chose; its progress then arrives as CallbackPlaced,
CallbackAnswered or CallbackFailed events with that id. Failures raise the
`telephony.errors` family only.

Recordings of agent conversations leave an adapter as `CallRecording`s handed to a
`RecordingSink` (in `callvault serve`: the vault pipeline's `register`). The adapter deletes
its provider's copy only after the sink returned, so a sink that fails (storage down)
leaves the provider's copy for the next attempt: nothing is lost.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from telephony.commands import ProviderCommand
from telephony.events import Event


class TelephonyProvider(Protocol):
    """A phone platform (Asterisk over ARI, Twilio) seen through the neutral vocabulary."""

    def events(self) -> AsyncIterator[Event]:
        """Every event of every call, in the order the provider reported them per call."""
        ...

    async def commands(self, call_id: str, commands: Sequence[ProviderCommand]) -> None:
        """Carry out `commands` on the call, in order; CallGone if it has ended."""
        ...

    async def dial(self, call_id: str, number: str) -> None:
        """Place an outbound call to the E.164 `number` (never logged), known from now on
        as `call_id`."""
        ...


@dataclass(frozen=True)
class CallRecording:
    """A finished recording of the agent conversation of call `call_id` (our id), taken
    by `agent` (None when the provider no longer knows), as a local WAV file at `path`
    that the sink takes over: it must have made it durable, or raised, when it returns."""

    call_id: str
    agent: str | None
    path: Path


RecordingSink = Callable[[CallRecording], Awaitable[None]]
