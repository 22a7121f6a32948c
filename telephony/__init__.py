"""Provider-neutral telephony: the events and commands every adapter speaks
(`events`, `commands`), the adapter protocol and the error family; adapters for Asterisk
ARI (`telephony.ari`) and, later, Twilio (`telephony.twilio`). Provider words stay
inside their adapter.
"""
