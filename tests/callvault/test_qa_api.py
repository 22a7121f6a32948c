"""The QA app's JSON API over real PostgreSQL, SeaweedFS and the vault: tokens, filters,
the redacted transcript and waveform, Range audio, raw audio only with a stated reason
(and every access on the log), scorecards and CSRF for cookie sessions."""
# ruff: noqa: F811  (the fixture imported below is the tests' parameter of the same name)

from __future__ import annotations

import asyncio
import json
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

import aiohttp

from storage.access import Principal
from storage.db import connect
from tests.callvault.qa_fixture import PASSWORD, QaServer, qa_server  # noqa: F401

GOOD_REASON = "Complaint review for ticket CMP-2231, customer disputes the call"
FULL_ANSWERS = {"greeting": 5, "verification": 4, "resolution": 3, "courtesy": 5,
                "closing": 2}


@dataclass
class Reply:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        assert self.headers.get("Content-Type", "").startswith("application/json"), \
            self.headers
        return json.loads(self.body)


def call(server: QaServer, method: str, path: str, *, token: str | None = None,
         headers: dict[str, str] | None = None, body: Any = None, data: bytes | None = None,
         cookies: dict[str, str] | None = None) -> Reply:
    """One request from this (synchronous) test thread."""
    sent = dict(headers or {})
    if token is not None:
        sent["Authorization"] = f"Bearer {token}"

    async def go() -> Reply:
        async with aiohttp.ClientSession(cookies=cookies) as http, http.request(
                method, server.base + path, headers=sent, json=body, data=data,
                allow_redirects=False) as resp:
            return Reply(resp.status, dict(resp.headers), await resp.read())

    return asyncio.run(go())


def token_for(server: QaServer, user: str) -> str:
    reply = call(server, "POST", "/api/tokens", body={"user": user, "password": PASSWORD})
    assert reply.status == 201, reply.body
    return str(reply.json()["token"])


def set_created(server: QaServer, rid: uuid.UUID, at: datetime) -> None:
    with connect(server.dsn) as conn:
        conn.execute("UPDATE recordings SET created_at = %s WHERE id = %s", (at, rid))
        conn.commit()


def ids(reply: Reply) -> list[str]:
    assert reply.status == 200, reply.body
    return [item["id"] for item in reply.json()["items"]]


# --- tokens ----------------------------------------------------------------------------

def test_a_token_is_issued_used_and_revoked(qa_server: QaServer) -> None:
    reply = call(qa_server, "POST", "/api/tokens",
                 body={"user": "quinn", "password": PASSWORD, "label": "nightly report"})
    assert reply.status == 201
    doc = reply.json()
    assert doc["token_type"] == "Bearer" and doc["user"] == "quinn" and doc["role"] == "qa"
    assert doc["expires_at"].endswith("Z")
    assert reply.headers["Cache-Control"] == "no-store"
    token = doc["token"]
    assert call(qa_server, "GET", "/api/recordings", token=token).status == 200
    assert call(qa_server, "DELETE", "/api/tokens", token=token).status == 204
    after = call(qa_server, "GET", "/api/recordings", token=token)
    assert after.status == 401
    assert after.headers["WWW-Authenticate"].startswith("Bearer")
    actions = [(r.actor, r.action, r.outcome) for r in qa_server.entries()]
    assert ("quinn", "sign_in", "allowed") in actions
    assert ("quinn", "sign_out", "ok") in actions


def test_requests_without_a_valid_token_get_401(qa_server: QaServer) -> None:
    none = call(qa_server, "GET", "/api/recordings")
    assert none.status == 401 and "error" in none.json()
    assert none.headers["WWW-Authenticate"].startswith("Bearer")
    assert none.headers["Cache-Control"] == "no-store"
    forged = call(qa_server, "GET", "/api/recordings", token="A" * 43)
    assert forged.status == 401
    assert 'error="invalid_token"' in forged.headers["WWW-Authenticate"]
    assert call(qa_server, "GET", "/api/recordings", token="not-a-token").status == 401
    # the description needs no token; nothing else does
    assert call(qa_server, "GET", "/api/openapi.json").status == 200
    assert call(qa_server, "GET", "/api/scorecard-questions").status == 401


def test_a_token_sent_in_a_url_is_revoked(qa_server: QaServer) -> None:
    token = token_for(qa_server, "quinn")
    leaked = call(qa_server, "GET", f"/api/recordings?access_token={token}", token=token)
    assert leaked.status == 401
    assert call(qa_server, "GET", "/api/recordings", token=token).status == 401


def test_token_requests_are_checked(qa_server: QaServer) -> None:
    for user in ("adam", "alex"):           # admin and agent never replay audio
        reply = call(qa_server, "POST", "/api/tokens", body={"user": user,
                                                              "password": PASSWORD})
        assert reply.status == 403, user
        assert "token" not in reply.json()
    wrong = call(qa_server, "POST", "/api/tokens", body={"user": "quinn", "password": "nope"})
    assert wrong.status == 401 and wrong.json()["error"]
    assert "nope" not in wrong.body.decode()
    text = call(qa_server, "POST", "/api/tokens", data=b"user=quinn",
                headers={"Content-Type": "application/x-www-form-urlencoded"})
    assert text.status == 415
    big = call(qa_server, "POST", "/api/tokens",
               body={"user": "quinn", "password": PASSWORD, "label": "x" * 5000})
    assert big.status == 413
    bad_json = call(qa_server, "POST", "/api/tokens", data=b"{nope",
                    headers={"Content-Type": "application/json"})
    assert bad_json.status == 400
    for body in ({"user": "quinn"}, {"user": "quinn", "password": PASSWORD, "role": "x"},
                 {"user": "Quinn Q", "password": PASSWORD}, ["quinn"],
                 {"user": "quinn", "password": PASSWORD, "label": "a\x00b"}):
        reply = call(qa_server, "POST", "/api/tokens", body=body)
        assert reply.status == 400, body
        assert reply.json()["error"]
    foreign = call(qa_server, "POST", "/api/tokens", body={"user": "quinn",
                                                           "password": PASSWORD},
                   headers={"Origin": "https://evil.example"})
    assert foreign.status == 403


# --- the list --------------------------------------------------------------------------

def test_the_list_filters_sorts_and_pages(qa_server: QaServer) -> None:
    a = qa_server.store(agent="ann", seconds=3.0, verified=True)
    b = qa_server.store(agent="bob", seconds=6.0, verified=False)
    c = qa_server.store(agent="cat", seconds=4.5, verified=None)
    set_created(qa_server, a, datetime(2025, 3, 1, 9, tzinfo=UTC))
    set_created(qa_server, b, datetime(2025, 3, 2, 23, 30, tzinfo=UTC))
    set_created(qa_server, c, datetime(2025, 3, 4, 8, tzinfo=UTC))
    a, b, c = str(a), str(b), str(c)
    token = token_for(qa_server, "quinn")

    def get(query: str) -> list[str]:
        return ids(call(qa_server, "GET", f"/api/recordings{query}", token=token))

    assert get("") == [c, b, a]                                  # newest first
    assert get("?order=asc") == [a, b, c]
    assert get("?sort=duration") == [b, c, a]
    assert get("?sort=duration&order=asc") == [a, c, b]
    assert get("?sort=agent&order=asc") == [a, b, c]
    assert get("?agent=bob") == [b]
    assert get("?verdict=verified") == [a]
    assert get("?verdict=not_verified") == [b]
    assert get("?verdict=none") == [c]
    assert get("?min_seconds=4") == [c, b]
    assert get("?max_seconds=4.5") == [c, a]
    assert get("?since=2025-03-02") == [c, b]
    assert get("?until=2025-03-02") == [b, a]                    # the whole day
    assert get("?until=2025-03-02T23:00:00Z") == [a]
    assert get("?since=2025-03-03T01:00:00%2B02:00") == [c, b]  # 23:00 UTC on the 2nd
    assert get("?since=2025-03-02T23:00:00") == [c, b]           # naive: UTC
    page = call(qa_server, "GET", "/api/recordings?limit=2&offset=1&order=asc", token=token)
    assert page.json()["total"] == 3 and page.json()["limit"] == 2
    assert ids(page) == [b, c]
    assert get("?offset=3") == []

    item = call(qa_server, "GET", "/api/recordings?agent=ann", token=token).json()["items"][0]
    assert item["agent"] == "ann" and item["duration_seconds"] == 3.0
    assert item["created_at"] == "2025-03-01T09:00:00Z"
    assert item["verified"] is True and item["method"] == "pin"
    assert item["redacted_spans"] == 1 and item["scorecards"] == 0
    assert {v["variant"] for v in item["variants"]} == {"redacted", "transcript"}  # no raw
    carol = token_for(qa_server, "carol")
    theirs = call(qa_server, "GET", "/api/recordings?agent=ann", token=carol).json()
    raw = [v for v in theirs["items"][0]["variants"] if v["variant"] == "raw"]
    assert raw == [{"variant": "raw", "needs_reason": True}]

    saved = call(qa_server, "PUT", f"/api/recordings/{b}/scorecard", token=token,
                 body={"answers": FULL_ANSWERS, "notes": "fine"})
    assert saved.status == 200
    assert get("?qa_status=reviewed") == [b]
    assert get("?qa_status=unreviewed") == [c, a]
    assert call(qa_server, "GET", "/api/recordings?agent=bob",
                token=token).json()["items"][0]["scorecards"] == 1


BAD_QUERIES = [
    "sort=size", "order=up", "verdict=maybe", "qa_status=done", "min_seconds=-1",
    "max_seconds=abc", "min_seconds=nan", "min_seconds=inf", "max_seconds=1e400",
    "since=yesterday", "since=2025-02-30", "until=2025-13-01", "since=2025-01-01T25:00Z",
    "limit=0", "limit=201", "limit=ten", "limit=%EF%BC%91", "offset=-1", "offset=1000001",
    "limit=1&limit=2", "agent=", "agent=a%00b", "sort=",
]


def test_bad_list_queries_are_400(qa_server: QaServer) -> None:
    token = token_for(qa_server, "quinn")
    for query in BAD_QUERIES:
        reply = call(qa_server, "GET", f"/api/recordings?{query}", token=token)
        assert reply.status == 400, (query, reply.body)
        assert reply.json()["error"]


# --- one recording -----------------------------------------------------------------------

def test_a_recording_with_its_spans_transcript_and_waveform(qa_server: QaServer) -> None:
    rid = qa_server.store(seconds=4.0)
    token = token_for(qa_server, "quinn")
    one = call(qa_server, "GET", f"/api/recordings/{rid}", token=token)
    assert one.status == 200
    doc = one.json()
    assert doc["id"] == str(rid) and doc["status"] == "stored"
    assert doc["spans"] == [{"label": "ACCOUNT_NUMBER", "start": 1.0, "end": 2.0,
                             "channel": 0}]
    for path in ("", "/transcript", "/waveform", "/scorecards", "/audio/redacted"):
        assert call(qa_server, "GET", f"/api/recordings/not-a-uuid{path}",
                    token=token).status == 404, path
        missing = call(qa_server, "GET", f"/api/recordings/{uuid.uuid4()}{path}", token=token)
        assert missing.status == 404, path
        assert missing.json()["error"]
    assert call(qa_server, "GET", f"/api/recordings/{rid}/audio/other",
                token=token).status == 404

    transcript = call(qa_server, "GET", f"/api/recordings/{rid}/transcript", token=token)
    assert transcript.status == 200
    assert "[ACCOUNT_NUMBER]" in transcript.json()["channels"][0]["text"]
    reads = qa_server.entries(action="read", recording_id=rid)
    assert any(r.variant == "transcript" and r.outcome == "allowed" for r in reads)

    wave = call(qa_server, "GET", f"/api/recordings/{rid}/waveform", token=token).json()
    assert wave["duration_seconds"] == 4.0
    step = wave["seconds_per_bin"]
    peaks = wave["channels"][0]["peaks"]
    inside = [p for i, p in enumerate(peaks) if i * step >= 1.0 and (i + 1) * step <= 2.0]
    outside = [p for i, p in enumerate(peaks) if (i + 1) * step <= 1.0 or i * step >= 2.0]
    assert inside and outside
    assert max(inside) < 0.01
    assert min(outside) > 0.1


def test_redacted_audio_with_ranges(qa_server: QaServer) -> None:
    rid = qa_server.store(seconds=2.0)
    token = token_for(qa_server, "quinn")
    path = f"/api/recordings/{rid}/audio/redacted"
    full = call(qa_server, "GET", path, token=token)
    assert full.status == 200
    assert full.headers["Content-Type"] == "audio/wav"
    assert full.headers["Accept-Ranges"] == "bytes"
    assert full.body[:4] == b"RIFF"
    size = len(full.body)
    part = call(qa_server, "GET", path, token=token, headers={"Range": "bytes=1000-1999"})
    assert part.status == 206
    assert part.headers["Content-Range"] == f"bytes 1000-1999/{size}"
    assert part.body == full.body[1000:2000]
    tail = call(qa_server, "GET", path, token=token, headers={"Range": "bytes=-300"})
    assert tail.status == 206
    assert tail.headers["Content-Range"] == f"bytes {size - 300}-{size - 1}/{size}"
    assert tail.body == full.body[-300:]
    beyond = call(qa_server, "GET", path, token=token, headers={"Range": f"bytes={size}-"})
    assert beyond.status == 416
    assert beyond.headers["Content-Range"] == f"bytes */{size}"
    assert beyond.json()["error"]
    head = call(qa_server, "HEAD", path, token=token)
    assert head.status == 200 and head.body == b""
    assert int(head.headers["Content-Length"]) == size
    assert call(qa_server, "GET", path + "?download=yes", token=token).status == 400
    # every range read is on the log, a range from further in with its byte offset
    ranged = [r for r in qa_server.entries(action="read", recording_id=rid)
              if r.origin and "byte 1000" in r.origin]
    assert [(r.actor, r.variant, r.outcome) for r in ranged] == [
        ("quinn", "redacted", "allowed")]


def test_raw_audio_needs_the_role_and_a_stated_reason(qa_server: QaServer) -> None:
    rid = qa_server.store(seconds=1.5)
    path = f"/api/recordings/{rid}/audio/raw"
    quinn = token_for(qa_server, "quinn")
    refused = call(qa_server, "GET", path, token=quinn,
                   headers={"X-Access-Reason": GOOD_REASON})
    assert refused.status == 403 and refused.json()["error"]
    denied = [r for r in qa_server.entries(action="read", recording_id=rid)
              if r.variant == "raw"]
    assert [(r.actor, r.outcome) for r in denied] == [("quinn", "denied")]

    carol = token_for(qa_server, "carol")
    assert call(qa_server, "GET", path, token=carol).status == 403
    long_number = call(qa_server, "GET", path, token=carol,
                       headers={"X-Access-Reason": "Customer called about 4716223190871234"})
    assert long_number.status == 403
    assert "4716223190871234" not in long_number.body.decode()
    played = call(qa_server, "GET", path, token=carol, headers={"X-Access-Reason": GOOD_REASON})
    assert played.status == 200 and played.body[:4] == b"RIFF"
    assert played.headers["Content-Disposition"].startswith("inline")
    rows = [r for r in qa_server.entries(recording_id=rid) if r.actor == "carol"]
    assert [r.outcome for r in rows if r.action == "read"].count("denied") == 2
    allowed = [r for r in rows if r.action == "read" and r.outcome == "allowed"]
    assert len(allowed) == 1 and allowed[0].reason == GOOD_REASON
    assert not any(r.reason and "4716" in r.reason for r in rows)

    saved = call(qa_server, "GET", path + "?download=1", token=carol,
                 headers={"X-Access-Reason": GOOD_REASON})
    assert saved.status == 200 and saved.body == played.body
    assert saved.headers["Content-Disposition"].startswith("attachment")
    downloads = qa_server.entries(action="download", recording_id=rid)
    assert [(r.actor, r.variant, r.outcome, r.reason) for r in downloads] == [
        ("carol", "raw", "allowed", GOOD_REASON)]


# --- scorecards -----------------------------------------------------------------------

def test_scorecards_round_trip_and_validation(qa_server: QaServer) -> None:
    rid = qa_server.store()
    token = token_for(qa_server, "quinn")
    questions = call(qa_server, "GET", "/api/scorecard-questions", token=token).json()
    assert [q["id"] for q in questions["questions"]] == list(FULL_ANSWERS)
    assert all(q["points"] == 5 and q["text"] for q in questions["questions"])
    mine = f"/api/recordings/{rid}/scorecard"
    assert call(qa_server, "GET", mine, token=token).status == 404

    saved = call(qa_server, "PUT", mine, token=token,
                 body={"answers": FULL_ANSWERS, "notes": "good call, see 01:20"})
    assert saved.status == 200
    card = saved.json()
    assert card["reviewer"] == "quinn" and card["answers"] == FULL_ANSWERS
    assert card["score"] == 76.0 and card["notes"] == "good call, see 01:20"
    assert call(qa_server, "GET", mine, token=token).json() == card
    carol = token_for(qa_server, "carol")
    assert call(qa_server, "PUT", mine, token=carol,
                body={"answers": {**FULL_ANSWERS, "closing": 5}}).status == 200
    both = call(qa_server, "GET", f"/api/recordings/{rid}/scorecards", token=token).json()
    assert sorted(c["reviewer"] for c in both["scorecards"]) == ["carol", "quinn"]

    bad_bodies: list[Any] = [
        {"answers": {k: v for k, v in FULL_ANSWERS.items() if k != "closing"}},
        {"answers": {**FULL_ANSWERS, "closing": 6}},
        {"answers": {**FULL_ANSWERS, "closing": "5"}},
        {"answers": {**FULL_ANSWERS, "extra": 1}},
        {"answers": FULL_ANSWERS, "notes": "call back on 0412 555 019 234"},
        {"answers": FULL_ANSWERS, "notes": 7},
        {"answers": FULL_ANSWERS, "score": 100},
        {"answers": [1, 2]},
        {"notes": "no answers"},
    ]
    for body in bad_bodies:
        reply = call(qa_server, "PUT", mine, token=token, body=body)
        assert reply.status == 400, body
        assert "0412" not in reply.json()["error"]
    assert call(qa_server, "PUT", mine, token=token, data=b"answers",
                headers={"Content-Type": "text/plain"}).status == 415
    assert call(qa_server, "GET", mine, token=token).json()["answers"] == FULL_ANSWERS
    assert call(qa_server, "PUT", f"/api/recordings/{uuid.uuid4()}/scorecard", token=token,
                body={"answers": FULL_ANSWERS}).status == 404


def test_cookie_sessions_need_the_csrf_header(qa_server: QaServer) -> None:
    rid = qa_server.store()
    auth = qa_server.service.auth
    secret, session = asyncio.run(auth.start(Principal("quinn", "qa"), "browser", "test"))
    assert session.csrf is not None
    cookies = {auth.cookie_name: secret}
    mine = f"/api/recordings/{rid}/scorecard"
    assert call(qa_server, "GET", "/api/recordings", cookies=cookies).status == 200
    body = {"answers": FULL_ANSWERS}
    forged = call(qa_server, "PUT", mine, cookies=cookies, body=body)
    assert forged.status == 403 and forged.json()["error"]
    wrong = call(qa_server, "PUT", mine, cookies=cookies, body=body,
                 headers={"X-CSRF-Token": "x" * 43})
    assert wrong.status == 403
    cross = call(qa_server, "PUT", mine, cookies=cookies, body=body,
                 headers={"X-CSRF-Token": session.csrf, "Origin": "https://evil.example"})
    assert cross.status == 403
    assert call(qa_server, "GET", mine, cookies=cookies).status == 404   # nothing saved
    ok = call(qa_server, "PUT", mine, cookies=cookies, body=body,
              headers={"X-CSRF-Token": session.csrf})
    assert ok.status == 200 and ok.json()["reviewer"] == "quinn"
    # a browser session is not a bearer token: it signs out on the pages
    assert call(qa_server, "DELETE", "/api/tokens", cookies=cookies,
                headers={"X-CSRF-Token": session.csrf}).status == 400


def test_errors_under_api_are_json(qa_server: QaServer) -> None:
    token = token_for(qa_server, "quinn")
    unknown = call(qa_server, "GET", "/api/nothing-here", token=token)
    assert unknown.status == 404 and unknown.json()["error"]
    wrong_method = call(qa_server, "POST", "/api/recordings", token=token)
    assert wrong_method.status == 405 and "GET" in wrong_method.headers["Allow"]
    assert wrong_method.json()["error"]
    spec = call(qa_server, "GET", "/api/openapi.json").json()
    assert spec["openapi"] == "3.0.3"
    assert set(spec["components"]["securitySchemes"]) == {"bearer", "cookie"}


def test_player_events_are_logged_and_checked(qa_server: QaServer) -> None:
    """What the browser's player reports (play, seek...) lands in the access log with the
    position; the original only from a session granted it; malformed events are 400."""
    rid = qa_server.store()
    auth = qa_server.service.auth
    quinn_secret, quinn = asyncio.run(auth.start(Principal("quinn", "qa"), "browser", "t"))
    carol_secret, carol = asyncio.run(auth.start(Principal("carol", "compliance"),
                                                 "browser", "t"))
    path = f"/api/recordings/{rid}/events"

    def post(secret: str, csrf: str | None, body: Any) -> Reply:
        return call(qa_server, "POST", path, cookies={auth.cookie_name: secret}, body=body,
                    headers={"X-CSRF-Token": csrf} if csrf else None)

    seek = {"type": "seek", "variant": "redacted", "position": 12.34}
    assert post(quinn_secret, None, seek).status == 403               # no CSRF token
    assert post(quinn_secret, quinn.csrf, seek).status == 204
    assert post(quinn_secret, quinn.csrf, {"type": "play", "variant": "redacted",
                                           "position": 0}).status == 204
    raw = {"type": "play", "variant": "raw", "position": 0}
    assert post(quinn_secret, quinn.csrf, raw).status == 403          # qa: never the original
    assert post(carol_secret, carol.csrf, raw).status == 403          # no grant yet
    asyncio.run(auth.grant_raw(carol, rid, GOOD_REASON, "test"))
    assert post(carol_secret, carol.csrf, raw).status == 204
    for bad in ({"type": "rewind", "variant": "redacted", "position": 1},
                {"type": "play", "variant": "transcript", "position": 1},
                {"type": "play", "variant": "redacted", "position": -1},
                {"type": "play", "variant": "redacted", "position": True},
                {"type": "play", "variant": "redacted", "position": 1, "extra": 1},
                {"type": "play", "variant": "redacted"}):
        reply = post(quinn_secret, quinn.csrf, bad)
        assert reply.status == 400 and reply.json()["error"], bad
    assert call(qa_server, "POST", f"/api/recordings/{uuid.uuid4()}/events",
                cookies={auth.cookie_name: quinn_secret}, body=seek,
                headers={"X-CSRF-Token": quinn.csrf or ""}).status == 404
    rows = [(r.actor, r.action, r.variant, r.outcome, r.detail)
            for r in qa_server.entries(recording_id=rid)
            if (r.origin or "").startswith("QA app player")]
    assert ("quinn", "seek", "redacted", "ok", "seek at 12.3 s") in rows
    assert ("quinn", "play", "redacted", "ok", "play at 0.0 s") in rows
    assert ("carol", "play", "raw", "ok", "play at 0.0 s") in rows
    assert not [r for r in rows if r[0] == "quinn" and r[2] == "raw"]


def test_the_policy_answers_before_anything_about_the_object(qa_server: QaServer) -> None:
    """A QA reviewer asking for the original gets 403 (logged) whatever the Range says:
    never a 416 that would give away the original's size; a HEAD is logged as a HEAD,
    not as a play, and fetches nothing."""
    rid = qa_server.store()
    quinn = token_for(qa_server, "quinn")
    for rng in ("bytes=99999999-", "bytes=0-", "bytes=-1"):
        reply = call(qa_server, "GET", f"/api/recordings/{rid}/audio/raw", token=quinn,
                     headers={"Range": rng})
        assert reply.status == 403 and "Content-Range" not in reply.headers, rng
    denied = [r for r in qa_server.entries(recording_id=rid)
              if r.actor == "quinn" and r.variant == "raw"]
    assert len(denied) == 3 and all(r.outcome == "denied" for r in denied)
    head = call(qa_server, "HEAD", f"/api/recordings/{rid}/audio/redacted", token=quinn)
    assert head.status == 200 and int(head.headers["Content-Length"]) > 1000
    rows = [r for r in qa_server.entries(recording_id=rid)
            if r.actor == "quinn" and r.variant == "redacted"]
    assert [r.origin.rsplit(": ", 1)[1] for r in rows] == ["size and type only (HEAD)"]
