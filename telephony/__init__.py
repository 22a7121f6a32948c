"""Provider-neutral telephony: events and commands, with Asterisk ARI and Twilio adapters.

Not built yet (issues 4 and 5); provider words stay inside `telephony.ari` and
`telephony.twilio` when they land.
"""
