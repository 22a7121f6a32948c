"""Schema-driven fuzzing of the QA API (schemathesis) against the live server: every
operation in `/api/openapi.json`, with valid and invalid inputs, as a compliance officer
(so the raw-audio paths are reached too) and as a QA reviewer (so are the refusals).

It holds the API to its own description (no 5xx; status codes, content types, headers and
bodies as documented) and to the vault's promise: the stored recording's raw audio
carries `SEEDED_ACCOUNT`, and so do its call id and source file name (metadata the API
never shows), and no response may contain it, except raw audio sent to a
compliance officer who stated a valid reason (the one sanctioned way to hear an
original; the reason is then on the access log). Bounded and deterministic: a fixed
number of examples per operation, derandomised, no shrinking, no example database."""
# ruff: noqa: F811  (the fixture imported below is the test's parameter of the same name)

from __future__ import annotations

import asyncio
import time
from typing import Any

import pytest
import requests
import schemathesis
from hypothesis import HealthCheck, Phase, given, settings
from hypothesis import strategies as st
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode

from storage.access import Principal, check_reason
from storage.errors import AccessDenied
from tests.callvault.qa_fixture import (  # noqa: F401
    PASSWORD,
    SEEDED_ACCOUNT,
    QaServer,
    qa_server,
    tone_wav,
)

EXAMPLES = 20            # per operation and generation mode
GOOD_REASON = "Compliance review of a disputed call, ticket CMP-77"
SEED = SEEDED_ACCOUNT.encode()


def raw_with_seed() -> bytes:
    """A valid WAV whose samples spell out the seeded account number in ASCII."""
    wav = bytearray(tone_wav(2.0))
    at = 2000
    wav[at:at + len(SEED)] = SEED
    return bytes(wav)


def reason_is_valid(value: str | None) -> bool:
    if value is None:
        return False
    try:
        check_reason(value)
    except AccessDenied:
        return False
    return True


def may_carry_the_seed(case: Any, response: Any) -> bool:
    """Only the original audio, sent to a caller who gave a valid reason."""
    sent = response.request.headers.get("X-Access-Reason")
    return (case.operation.label.startswith(("GET /api/recordings/{id}/audio/",
                                             "HEAD /api/recordings/{id}/audio/"))
            and response.request.path_url.split("?")[0].endswith("/audio/raw")
            and response.status_code in (200, 206) and reason_is_valid(sent))


def fuzz(server: QaServer, cases: Any, label: str, http: requests.Session,
         checks: list[Any], seen: dict[str, set[int]], who: Principal) -> None:
    """Send `EXAMPLES` generated cases of one operation and check each response."""

    @settings(max_examples=EXAMPLES, derandomize=True, database=None, deadline=None,
              phases=[Phase.explicit, Phase.generate], suppress_health_check=list(HealthCheck))
    @given(case=cases)
    def run(case: Any) -> None:
        headers = None
        if label == "DELETE /api/tokens":   # revoke a token of its own, not the shared one
            token, _ = asyncio.run(server.service.auth.start(who, "api", "fuzz"))
            headers = {"Authorization": f"Bearer {token}"}
        response = case.call(base_url=server.base, session=http, headers=headers, timeout=30)
        case.validate_response(response, checks=checks, headers=headers)
        seen.setdefault(label, set()).add(response.status_code)
        if SEED in response.content:
            assert who.role == "compliance" and may_carry_the_seed(case, response), (
                f"{label} revealed the seeded account ({response.status_code})")

    run()


@pytest.mark.parametrize("who", [Principal("carol", "compliance"), Principal("quinn", "qa")],
                         ids=["compliance", "qa"])
def test_the_api_matches_its_schema_and_never_leaks(qa_server: QaServer,
                                                    who: Principal) -> None:
    rid = qa_server.store(raw=raw_with_seed(), seconds=2.0,
                          call_id=f"acct-{SEEDED_ACCOUNT}", source_name=f"{SEEDED_ACCOUNT}.wav")
    base = qa_server.base
    http = requests.Session()
    tok = http.post(f"{base}/api/tokens", json={"user": who.name, "password": PASSWORD})
    assert tok.status_code == 201, tok.text
    auth = {"Authorization": f"Bearer {tok.json()['token']}"}
    # the check below can fail: the original does carry the seed, the redacted copy not
    raw = http.get(f"{base}/api/recordings/{rid}/audio/raw",
                   headers={**auth, "X-Access-Reason": GOOD_REASON})
    if who.role == "compliance":
        assert raw.status_code == 200 and SEED in raw.content
    else:
        assert raw.status_code == 403 and SEED not in raw.content
    assert SEED not in http.get(f"{base}/api/recordings/{rid}/audio/redacted",
                                headers=auth).content

    schema = schemathesis.openapi.from_url(f"{base}/api/openapi.json")
    checks = [schemathesis.checks.not_a_server_error,
              schemathesis.checks.status_code_conformance,
              schemathesis.checks.content_type_conformance,
              schemathesis.checks.response_headers_conformance,
              schemathesis.checks.response_schema_conformance]
    started = time.monotonic()
    seen: dict[str, set[int]] = {}
    skipped: list[str] = []
    for result in schema.get_all_operations():
        operation = result.ok()
        label = operation.label
        has_id = any(p.name == "id" for p in operation.path_parameters)
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):
            options: list[Any] = [operation.as_strategy(generation_mode=mode, headers=auth)]
            if has_id and mode is GenerationMode.POSITIVE:   # the stored recording, too
                options.append(operation.as_strategy(generation_mode=mode, headers=auth,
                                                     path_parameters={"id": str(rid)}))

            try:
                fuzz(qa_server, st.one_of(options), label, http, checks, seen, who)
            except Unsatisfiable:
                # nothing to get wrong (no parameters): only the valid cases are run
                assert mode is GenerationMode.NEGATIVE, label
                skipped.append(label)
    # the fuzzer reached the operations, not just the front door
    assert 200 in seen["GET /api/recordings"]
    assert 400 in seen["GET /api/recordings"]
    assert 200 in seen["GET /api/recordings/{id}/transcript"]
    assert seen["GET /api/recordings/{id}/audio/{variant}"] & {200, 206}
    assert 403 in seen["GET /api/recordings/{id}/audio/{variant}"]
    assert 204 in seen["DELETE /api/tokens"]
    assert set(skipped) <= {"GET /api/openapi.json", "GET /api/scorecard-questions",
                            "DELETE /api/tokens"}, skipped
    # the token the fuzzer used still works: nothing it sent revoked it
    assert http.get(f"{base}/api/recordings", headers=auth).status_code == 200
    assert time.monotonic() - started < 90
