"""The Twilio REST client against the FAKE Twilio API (Twilio's cloud cannot run here):
recording media, deletion, call-backs, error translation, and decryption of Twilio's Voice
Recording Encryption."""

from __future__ import annotations

import asyncio
import logging
import os
import socket
import stat
from collections.abc import Awaitable, Callable, Iterator
from pathlib import Path
from typing import TypeVar

import pytest
from pydantic import SecretStr

from callvault.config import load_settings
from telephony.errors import ProviderRejected, ProviderUnavailable, TelephonyError
from telephony.twilio.rest import RecordingDecryptError, TwilioRest, decrypt_recording
from tests.telephony.twilio_fake import FakeTwilioApi, encrypt_like_twilio, make_recording_key

T = TypeVar("T")
ACCOUNT = "AC" + "5a" * 16
TOKEN = "tok-" + "9f3e" * 8
CALLER_ID = "+15005550006"
CUSTOMER = "+14155550123"
SID = "RE" + "0123456789abcdef" * 2
WAV = b"RIFF" + os.urandom(300_000)          # several 64 KiB chunks


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeTwilioApi]:
    with FakeTwilioApi(ACCOUNT, TOKEN) as api:
        yield api


@pytest.fixture(autouse=True)
def fresh(fake: FakeTwilioApi) -> None:
    fake.requests.clear()
    fake.calls.clear()
    fake.call_sids.clear()
    fake.deleted.clear()
    fake.media_redirect = None
    fake.fail_status = None
    fake.fail_code, fake.fail_message = 20500, "Internal Server Error"
    fake.chunked_media = False
    fake.add_recording(SID, WAV)


@pytest.fixture(scope="module")
def key() -> tuple[bytes, object]:
    return make_recording_key()


def rest(fake: FakeTwilioApi, token: str = TOKEN, base: str | None = None) -> TwilioRest:
    return TwilioRest(ACCOUNT, SecretStr(token), base_url=base or fake.base_url,
                      caller_id=CALLER_ID, timeout=3.0, connect_timeout=2.0)


def run(client: TwilioRest, op: Callable[[TwilioRest], Awaitable[T]]) -> T:
    async def go() -> T:
        async with client:
            return await op(client)
    return asyncio.run(go())


def closed_port_url() -> str:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    return f"http://127.0.0.1:{port}"


def assert_clean(text: str) -> None:
    for secret in (TOKEN, CUSTOMER, CALLER_ID, SID, "/Accounts/"):
        assert secret not in text


# --- recording media ---------------------------------------------------------------------
def test_fetch_streams_the_exact_bytes_into_a_private_file(fake: FakeTwilioApi,
                                                           tmp_path: Path) -> None:
    dest = tmp_path / "call.wav"
    size = run(rest(fake), lambda r: r.fetch_recording(SID, dest, max_bytes=1 << 20))
    assert size == len(WAV) and dest.read_bytes() == WAV
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600
    assert [(q.method, q.path, q.authorized) for q in fake.requests] == [
        ("GET", f"/2010-04-01/Accounts/{ACCOUNT}/Recordings/{SID}.wav", True)]


def test_fetch_streams_chunked_media_without_a_length(fake: FakeTwilioApi,
                                                      tmp_path: Path) -> None:
    fake.chunked_media = True
    dest = tmp_path / "call.wav"
    assert run(rest(fake), lambda r: r.fetch_recording(SID, dest, max_bytes=1 << 20)) \
        == len(WAV)
    assert dest.read_bytes() == WAV


@pytest.mark.parametrize("chunked", [False, True])
def test_fetch_over_the_size_limit_is_refused_and_leaves_no_file(
        fake: FakeTwilioApi, tmp_path: Path, chunked: bool) -> None:
    fake.chunked_media = chunked
    dest = tmp_path / "call.wav"
    with pytest.raises(ProviderRejected, match="max_bytes"):
        run(rest(fake), lambda r: r.fetch_recording(SID, dest, max_bytes=100_000))
    assert not dest.exists()


def test_fetch_refuses_an_existing_destination_and_keeps_it(fake: FakeTwilioApi,
                                                            tmp_path: Path) -> None:
    dest = tmp_path / "call.wav"
    dest.write_bytes(b"mine")
    with pytest.raises(FileExistsError):
        run(rest(fake), lambda r: r.fetch_recording(SID, dest, max_bytes=1 << 20))
    assert dest.read_bytes() == b"mine"


def test_fetch_follows_a_redirect_on_the_api_host(fake: FakeTwilioApi, tmp_path: Path) -> None:
    fake.media_redirect = fake.base_url + "/media/{sid}"
    dest = tmp_path / "call.wav"
    run(rest(fake), lambda r: r.fetch_recording(SID, dest, max_bytes=1 << 20))
    assert dest.read_bytes() == WAV
    assert [q.path for q in fake.requests][-1] == f"/media/{SID}"


def test_fetch_refuses_a_redirect_to_another_plain_http_host(fake: FakeTwilioApi,
                                                             tmp_path: Path) -> None:
    with FakeTwilioApi(ACCOUNT, TOKEN) as other:
        other.add_recording(SID, WAV)
        fake.media_redirect = other.base_url + "/media/{sid}"
        dest = tmp_path / "call.wav"
        with pytest.raises(ProviderRejected, match="redirect"):
            run(rest(fake), lambda r: r.fetch_recording(SID, dest, max_bytes=1 << 20))
        assert other.requests == [] and not dest.exists()


@pytest.mark.parametrize("bad", ["RE123", "../Calls", "CA" + "0" * 32, SID + "/x",
                                 "https://evil.example/RE" + "0" * 32, SID.lower() + "0", ""])
def test_a_malformed_recording_sid_is_refused_before_any_request(
        fake: FakeTwilioApi, tmp_path: Path, bad: str) -> None:
    dest = tmp_path / "call.wav"
    with pytest.raises(ProviderRejected, match="not a recording SID"):
        run(rest(fake), lambda r: r.fetch_recording(bad, dest, max_bytes=1 << 20))
    with pytest.raises(ProviderRejected, match="not a recording SID"):
        run(rest(fake), lambda r: r.delete_recording(bad))
    assert fake.requests == [] and not dest.exists()


def test_an_unknown_recording_is_a_rejection(fake: FakeTwilioApi, tmp_path: Path) -> None:
    dest = tmp_path / "call.wav"
    with pytest.raises(ProviderRejected, match="HTTP 404"):
        run(rest(fake), lambda r: r.fetch_recording("RE" + "f" * 32, dest, max_bytes=10))
    assert not dest.exists()


def test_delete_is_true_then_false_once_gone(fake: FakeTwilioApi) -> None:
    client = rest(fake)

    async def twice(r: TwilioRest) -> tuple[bool, bool]:
        return await r.delete_recording(SID), await r.delete_recording(SID)

    assert run(client, twice) == (True, False)
    assert fake.deleted == [SID]
    assert [q.method for q in fake.requests] == ["DELETE", "DELETE"]


# --- call-backs ----------------------------------------------------------------------------
def test_place_call_sends_twilios_form_fields_and_returns_the_sid(fake: FakeTwilioApi) -> None:
    sid = run(rest(fake), lambda r: r.place_call(
        CUSTOMER, "https://cv.example/twilio/callback", "https://cv.example/twilio/status", 30))
    assert fake.call_sids == [sid]
    [fields] = fake.calls
    assert fields["To"] == CUSTOMER and fields["From"] == CALLER_ID
    assert fields["Url"] == "https://cv.example/twilio/callback"
    assert fields["StatusCallback"] == "https://cv.example/twilio/status"
    assert fields["StatusCallbackEvent"] == ["initiated", "ringing", "answered", "completed"]
    assert fields["Timeout"] == "30"
    assert fake.requests[-1].path == f"/2010-04-01/Accounts/{ACCOUNT}/Calls.json"


@pytest.mark.parametrize(("to", "timeout"), [("4155550123", 30), ("+1415555x123", 30),
                                              (CUSTOMER, 1), (CUSTOMER, 601)])
def test_place_call_refuses_bad_input_before_any_request(fake: FakeTwilioApi, to: str,
                                                         timeout: int) -> None:
    with pytest.raises(ProviderRejected) as err:
        run(rest(fake), lambda r: r.place_call(to, "https://a.example/x",
                                               "https://a.example/s", timeout))
    assert fake.requests == [] and to not in str(err.value)


# --- error translation ---------------------------------------------------------------------
def test_a_wrong_token_is_rejected_naming_the_setting_not_the_value(
        fake: FakeTwilioApi, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    wrong = "wrong-" + "c0ffee" * 5
    dest = tmp_path / "call.wav"
    errors: list[TelephonyError] = []
    for op in (lambda r: r.fetch_recording(SID, dest, max_bytes=1 << 20),
               lambda r: r.delete_recording(SID),
               lambda r: r.place_call(CUSTOMER, "https://a.example/x",
                                      "https://a.example/s", 30)):
        with pytest.raises(ProviderRejected, match="twilio_auth_token") as err:
            run(rest(fake, token=wrong), op)
        errors.append(err.value)
    assert not dest.exists() and fake.calls == [] and fake.deleted == []
    assert len(fake.requests) == 3 and not any(q.authorized for q in fake.requests)
    for text in [str(e) for e in errors] + [caplog.text]:
        assert wrong not in text
        assert_clean(text)


def test_an_unreachable_api_is_unavailable(tmp_path: Path, fake: FakeTwilioApi) -> None:
    base = closed_port_url()
    dest = tmp_path / "call.wav"
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        run(rest(fake, base=base), lambda r: r.fetch_recording(SID, dest, max_bytes=10))
    with pytest.raises(ProviderUnavailable, match="cannot reach"):
        run(rest(fake, base=base), lambda r: r.delete_recording(SID))
    with pytest.raises(ProviderUnavailable, match="cannot reach") as err:
        run(rest(fake, base=base), lambda r: r.place_call(
            CUSTOMER, "https://a.example/x", "https://a.example/s", 30))
    assert not dest.exists()
    assert_clean(str(err.value))


def test_an_outage_at_twilio_is_unavailable_and_quotes_nothing(
        fake: FakeTwilioApi, tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    fake.fail_status = 503
    with pytest.raises(ProviderUnavailable, match="HTTP 503") as call_err:
        run(rest(fake), lambda r: r.place_call(CUSTOMER, "https://a.example/x",
                                               "https://a.example/s", 30))
    with pytest.raises(ProviderUnavailable, match="HTTP 503"):
        run(rest(fake), lambda r: r.fetch_recording(SID, tmp_path / "a.wav", max_bytes=10))
    assert not (tmp_path / "a.wav").exists()
    assert_clean(str(call_err.value) + caplog.text)


def test_a_refusal_gives_twilios_code_but_not_its_message(fake: FakeTwilioApi) -> None:
    fake.fail_status, fake.fail_code = 400, 21211
    fake.fail_message = f"The 'To' number {CUSTOMER} is not a valid phone number."
    with pytest.raises(ProviderRejected, match="HTTP 400, Twilio error 21211") as err:
        run(rest(fake), lambda r: r.place_call(CUSTOMER, "https://a.example/x",
                                               "https://a.example/s", 30))
    assert_clean(str(err.value))


def test_credentials_go_only_to_the_api_origin(fake: FakeTwilioApi) -> None:
    client = rest(fake)
    assert client._same_origin(f"{fake.base_url}/media/x")
    for elsewhere in ("https://media.example/x", fake.base_url.replace("127.0.0.1", "localhost"),
                      fake.base_url.replace("http:", "https:")):
        assert not client._same_origin(elsewhere)
    assert client._redirect_target(fake.base_url, "https://media.example/x") \
        == "https://media.example/x"


def test_from_settings_uses_the_configured_api_and_names_missing_settings(
        fake: FakeTwilioApi, tmp_path: Path) -> None:
    settings = load_settings(state_dir=tmp_path, twilio_account_sid=ACCOUNT,
                             twilio_auth_token=TOKEN, twilio_api_base_url=fake.base_url,
                             twilio_caller_id=CALLER_ID)
    sid = run(TwilioRest.from_settings(settings), lambda r: r.place_call(
        CUSTOMER, "https://a.example/x", "https://a.example/s", 20))
    assert fake.call_sids == [sid] and fake.calls[0]["From"] == CALLER_ID
    assert TOKEN not in repr(TwilioRest.from_settings(settings))
    with pytest.raises(ProviderRejected, match="twilio_auth_token"):
        TwilioRest.from_settings(load_settings(state_dir=tmp_path, twilio_account_sid=ACCOUNT))


def test_the_fake_also_serves_async_tests(tmp_path: Path) -> None:
    async def go() -> int:
        async with FakeTwilioApi(ACCOUNT, TOKEN) as api:
            api.add_recording(SID, b"RIFFdata")
            async with rest(api) as client:
                return await client.fetch_recording(SID, tmp_path / "x.wav", max_bytes=100)
    assert asyncio.run(go()) == 8


# --- Voice Recording Encryption ------------------------------------------------------------
def encrypted(tmp_path: Path, key: tuple[bytes, object]) -> tuple[Path, dict[str, str]]:
    media, details = encrypt_like_twilio(WAV, key[1])  # type: ignore[arg-type]
    src = tmp_path / "encrypted.wav"
    src.write_bytes(media)
    return src, details


def test_decrypt_round_trips_twilios_encryption(tmp_path: Path,
                                                key: tuple[bytes, object]) -> None:
    src, details = encrypted(tmp_path, key)
    dest = tmp_path / "plain.wav"
    decrypt_recording(src, dest, details, key[0])
    assert dest.read_bytes() == WAV
    assert stat.S_IMODE(dest.stat().st_mode) == 0o600


def test_decrypt_with_another_key_fails_clearly_and_leaves_no_file(
        tmp_path: Path, key: tuple[bytes, object]) -> None:
    src, details = encrypted(tmp_path, key)
    other_pem, _ = make_recording_key()
    dest = tmp_path / "plain.wav"
    with pytest.raises(RecordingDecryptError, match="wrong key"):
        decrypt_recording(src, dest, details, other_pem)
    assert not dest.exists()


@pytest.mark.parametrize("where", [0, 150_000, -1])   # first byte, middle, inside the tag
def test_decrypt_of_a_tampered_file_fails_and_leaves_no_file(
        tmp_path: Path, key: tuple[bytes, object], where: int) -> None:
    src, details = encrypted(tmp_path, key)
    data = bytearray(src.read_bytes())
    data[where] ^= 0x01
    src.write_bytes(bytes(data))
    dest = tmp_path / "plain.wav"
    with pytest.raises(RecordingDecryptError, match="authentication failed"):
        decrypt_recording(src, dest, details, key[0])
    assert not dest.exists()


@pytest.mark.parametrize(("change", "match"), [
    ({"type": "aes"}, "unsupported"), ({"iv": "not base64!"}, "iv"),
    ({"encrypted_cek": ""}, "wrong key"), ({"iv": "AAAA"}, "96 bits")])
def test_decrypt_refuses_bad_details(tmp_path: Path, key: tuple[bytes, object],
                                     change: dict[str, str], match: str) -> None:
    src, details = encrypted(tmp_path, key)
    dest = tmp_path / "plain.wav"
    with pytest.raises(RecordingDecryptError, match=match):
        decrypt_recording(src, dest, {**details, **change}, key[0])
    assert not dest.exists()


def test_decrypt_refuses_a_key_that_is_not_a_pem(tmp_path: Path,
                                                 key: tuple[bytes, object]) -> None:
    src, details = encrypted(tmp_path, key)
    with pytest.raises(RecordingDecryptError, match="twilio_recording_private_key"):
        decrypt_recording(src, tmp_path / "plain.wav", details, b"not a key")
    assert not (tmp_path / "plain.wav").exists()
