"""Redaction of CPNI and authentication secrets from call recordings.

The package is a set of plain functions over frozen records: read audio, transcribe it,
find sensitive spans in the words and in-band DTMF tones, mute those spans, and prove the
result clean by listening again. `engine.redact_file` is the only orchestrator.
"""
