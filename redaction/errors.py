"""The error family of the redaction package, each with its own process exit code.

Messages are written for an operator: one line, naming the file's problem and never any
audio content, transcript text or value that was being redacted.
"""

from __future__ import annotations


class RedactionError(Exception):
    """Base of every error `callvault redact` reports; `exit_code` is distinct per kind."""

    exit_code = 1


class InputMissing(RedactionError):
    """The input path does not exist, is not a regular file, or cannot be read."""

    exit_code = 3


class NotAudio(RedactionError):
    """The input is not a RIFF/WAVE file at all."""

    exit_code = 4


class CorruptAudio(RedactionError):
    """The WAV header is damaged or the data is shorter than the header declares."""

    exit_code = 5


class EmptyAudio(RedactionError):
    """The file is empty, or a valid WAV holding zero samples."""

    exit_code = 6


class UnsupportedAudio(RedactionError):
    """A valid WAV in an encoding, rate or channel count callvault does not take."""

    exit_code = 7


class TooLong(RedactionError):
    """The recording is longer than the configured limit."""

    exit_code = 8


class VerificationFailed(RedactionError):
    """Sensitive speech was still heard after redaction and widening: nothing is written.

    `verification` carries how the file was checked (counts and times, no values).
    """

    exit_code = 9

    def __init__(self, message: str, verification: object | None = None) -> None:
        super().__init__(message)
        self.verification = verification


class OutputError(RedactionError):
    """The output or report could not be written."""

    exit_code = 10


class ModelUnavailable(RedactionError):
    """The speech model could not be found or loaded (no download is ever attempted)."""

    exit_code = 11
