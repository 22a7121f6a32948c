"""What the driver needs from a phone provider: the one interface both adapters implement.

The driver reads `events()` and hands each event to the call's IVR machine; of the
commands the machine returns, it carries out the driver commands itself and passes the
provider commands, in order, to `commands()`. A call-back leg is started with `dial()`
under a call id the driver chose; its progress then arrives as CallbackPlaced,
CallbackAnswered or CallbackFailed events with that id. Failures raise the
`telephony.errors` family only.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Sequence
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
