"""The Twilio adapter: Twilio's words (CallSid, RecordingSid, TwiML) stay in this package.

`rest` owns the REST API (call-backs, recording media, deletion, decryption of Twilio's
Voice Recording Encryption); webhooks and TwiML live beside it.
"""

