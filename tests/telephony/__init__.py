"""Tests of the telephony packages (the Asterisk sandbox, ARI, Twilio)."""
