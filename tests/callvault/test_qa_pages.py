"""The QA app's pages over HTTP (aiohttp client, real PostgreSQL and SeaweedFS): sign-in
with its cookies, CSRF and lockout, sign-out and idle expiry, the strict CSP with no inline
script or style, the recordings list's filters and pages, the scorecard form and the
compliance officer's "Play original" control that QA reviewers never get."""
# ruff: noqa: F811  (the fixtures imported below are test parameters of the same name)

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from html.parser import HTMLParser
from typing import Any
from urllib.parse import parse_qs, urlsplit

import aiohttp

from storage.db import connect
from tests.callvault.qa_fixture import (  # noqa: F401
    PASSWORD,
    SEEDED_ACCOUNT,
    QaServer,
    qa_server,
    qa_server_secure,
)
from tests.storage.vault_fixture import QA, new_recording

CSRF_INPUT = re.compile(r'name="csrf" value="([^"]+)"')
CSRF_META = re.compile(r'<meta name="csrf-token" content="([^"]+)">')
TITLE = re.compile(r"<title>(.*?)</title>", re.S)
ROW = re.compile(r'<tr data-recording-id="([0-9a-f-]{36})">')


def run(test: Callable[[], Awaitable[None]]) -> None:
    asyncio.run(test())


def client(server: QaServer) -> aiohttp.ClientSession:
    # unsafe=True: the jar would otherwise ignore cookies of an IP address host
    return aiohttp.ClientSession(base_url=server.base,
                                 cookie_jar=aiohttp.CookieJar(unsafe=True))


async def sign_in(http: aiohttp.ClientSession, user: str, password: str = PASSWORD,
                  **extra: str) -> aiohttp.ClientResponse:
    async with http.get("/qa/sign-in") as form:
        assert form.status == 200
        token = _match(CSRF_INPUT, await form.text())
    async with http.post("/qa/sign-in", data={"user": user, "password": password,
                                              "csrf": token, **extra},
                         allow_redirects=False) as resp:
        await resp.read()
        return resp


async def signed_in(server: QaServer, user: str = "quinn") -> aiohttp.ClientSession:
    http = client(server)
    resp = await sign_in(http, user)
    assert resp.status == 303, await resp.text()
    return http


async def page(http: aiohttp.ClientSession, path: str) -> tuple[int, str, aiohttp.ClientResponse]:
    async with http.get(path, allow_redirects=False) as resp:
        return resp.status, await resp.text(), resp


def _match(pattern: re.Pattern[str], text: str) -> str:
    m = pattern.search(text)
    assert m is not None, f"{pattern.pattern} not in the page"
    return m.group(1)


def _cookie_header(resp: aiohttp.ClientResponse, name: str) -> str:
    headers = [h for h in resp.headers.getall("Set-Cookie", []) if h.startswith(name + "=")]
    assert len(headers) == 1, resp.headers.getall("Set-Cookie", [])
    return headers[0]


class _Tags(HTMLParser):
    """Every start tag with its attributes, to check for inline script and style."""

    def __init__(self) -> None:
        super().__init__()
        self.tags: list[tuple[str, dict[str, str | None]]] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        self.tags.append((tag, dict(attrs)))


def assert_no_inline_code(resp: aiohttp.ClientResponse, html: str) -> None:
    csp = resp.headers.get("Content-Security-Policy", "")
    assert "script-src 'self'" in csp and "unsafe-inline" not in csp, csp
    assert "style-src 'self'" in csp
    parser = _Tags()
    parser.feed(html)
    assert parser.tags, "no HTML"
    for tag, attrs in parser.tags:
        assert "style" not in attrs, f"style= on <{tag}>"
        assert tag != "style", "a <style> element"
        assert not any(name.startswith("on") for name in attrs), f"an event handler on <{tag}>"
        if tag == "script":
            assert attrs.get("src", "").startswith("/qa/static/"), attrs  # type: ignore[union-attr]


# ------------------------------------------------------------------------------- sign-in

def test_sign_in_sets_a_strict_http_only_session_cookie(qa_server: QaServer) -> None:
    async def go() -> None:
        async with client(qa_server) as http:
            resp = await sign_in(http, "quinn")
            assert resp.status == 303 and resp.headers["Location"] == "/qa/recordings"
            cookie = _cookie_header(resp, "callvault_session").lower()
            assert "httponly" in cookie and "samesite=strict" in cookie and "path=/" in cookie
            status, html, _ = await page(http, "/qa/recordings")
            assert status == 200 and "quinn" in html and "Sign out" in html
            status, _, redirect = await page(http, "/qa/sign-in")   # already signed in
            assert status == 303 and redirect.headers["Location"] == "/qa/recordings"
            status, _, redirect = await page(http, "/")
            assert status == 303 and redirect.headers["Location"] == "/qa/recordings"
    run(go)


def test_secure_deployment_uses_host_prefixed_secure_cookies(
        qa_server_secure: QaServer) -> None:
    """As deployed: __Host- cookies, Secure, no Domain (sent back by hand here: a client
    keeps Secure cookies from plain http to itself)."""
    async def go() -> None:
        async with aiohttp.ClientSession(base_url=qa_server_secure.base,
                                         cookie_jar=aiohttp.DummyCookieJar()) as http:
            async with http.get("/qa/sign-in") as form:
                signin = _cookie_header(form, "__Host-callvault_signin")
                token = _match(CSRF_INPUT, await form.text())
            assert "Secure" in signin and "Domain" not in signin
            async with http.post("/qa/sign-in", allow_redirects=False,
                                 data={"user": "quinn", "password": PASSWORD, "csrf": token},
                                 headers={"Cookie": f"__Host-callvault_signin={token}"}) as resp:
                assert resp.status == 303
                cookie = _cookie_header(resp, "__Host-callvault_session")
            low = cookie.lower()
            assert ("secure" in low and "httponly" in low and "samesite=strict" in low
                    and "path=/" in low and "domain" not in low)
            session = cookie.split(";", 1)[0]
            async with http.get("/qa/recordings", allow_redirects=False,
                                headers={"Cookie": session}) as listing:
                assert listing.status == 200
            async with http.get("/qa/recordings", allow_redirects=False,
                                headers={"Cookie": session.replace("__Host-", "")}) as plain:
                assert plain.status == 303   # the unprefixed name is not the session
    run(go)


def test_wrong_password_is_a_401_page_without_a_session(qa_server: QaServer) -> None:
    async def go() -> None:
        async with client(qa_server) as http:
            resp = await sign_in(http, "quinn", "not the password")
            assert resp.status == 401
            assert not [h for h in resp.headers.getall("Set-Cookie", [])
                        if h.startswith("callvault_session=")]
            status, html, _ = await page(http, "/qa/sign-in")
            assert status == 200
            async with http.post("/qa/sign-in", allow_redirects=False,
                                 data={"user": "quinn", "password": "nope",
                                       "csrf": _match(CSRF_INPUT, html)}) as again:
                text = await again.text()
                assert again.status == 401 and "wrong user name or password" in text
                # nothing typed comes back: the user field may hold a mistyped password
                assert 'value="quinn"' not in text and "nope" not in text
            status, _, redirect = await page(http, "/qa/recordings")
            assert status == 303 and redirect.headers["Location"].startswith("/qa/sign-in")
    run(go)


def test_five_failures_lock_the_account_even_for_the_right_password(
        qa_server: QaServer) -> None:
    async def go() -> None:
        async with client(qa_server) as http:
            for _ in range(5):
                assert (await sign_in(http, "carol", "guess " + uuid.uuid4().hex)).status in (
                    401, 429)
            locked = await sign_in(http, "carol", PASSWORD)
            assert locked.status == 429
            assert int(locked.headers["Retry-After"]) > 0
            assert not [h for h in locked.headers.getall("Set-Cookie", [])
                        if h.startswith("callvault_session=")]
        async with client(qa_server) as other:   # a new browser is locked out too
            assert (await sign_in(other, "carol")).status == 429
    run(go)
    denied = [e for e in qa_server.entries(action="sign_in") if e.outcome == "denied"]
    assert any(e.actor == "carol" and "locked" in (e.detail or "") for e in denied), denied
    assert not any(e.actor == "carol" and e.outcome == "allowed"
                   for e in qa_server.entries(action="sign_in"))


def test_sign_in_without_its_csrf_token_is_refused(qa_server: QaServer) -> None:
    async def go() -> None:
        async with client(qa_server) as http:   # no form fetched: no cookie, no field
            async with http.post("/qa/sign-in", allow_redirects=False,
                                 data={"user": "quinn", "password": PASSWORD}) as resp:
                assert resp.status == 403 and "expired" in await resp.text()
            status, html, _ = await page(http, "/qa/sign-in")
            assert status == 200 and CSRF_INPUT.search(html)
            async with http.post("/qa/sign-in", allow_redirects=False,    # cookie, no field
                                 data={"user": "quinn", "password": PASSWORD}) as resp:
                assert resp.status == 403
            async with http.post("/qa/sign-in", allow_redirects=False,    # another site's
                                 data={"user": "quinn", "password": PASSWORD,
                                       "csrf": _match(CSRF_INPUT, html)},
                                 headers={"Origin": "https://evil.example"}) as resp:
                assert resp.status == 403
        async with client(qa_server) as fresh, fresh.post(        # field, no cookie
                "/qa/sign-in", allow_redirects=False,
                data={"user": "quinn", "password": PASSWORD,
                      "csrf": _match(CSRF_INPUT, html)}) as resp:
            assert resp.status == 403
    run(go)
    assert not any(e.outcome == "allowed" for e in qa_server.entries(action="sign_in"))


def test_only_qa_and_compliance_may_sign_in(qa_server: QaServer) -> None:
    async def go() -> None:
        async with client(qa_server) as http:
            resp = await sign_in(http, "alex")
            assert resp.status == 403
        async with client(qa_server) as http:
            assert (await sign_in(http, "carol")).status == 303
    run(go)


def test_next_is_our_own_page_only(qa_server: QaServer) -> None:
    rid = qa_server.store()

    async def go() -> None:
        async with client(qa_server) as http:
            status, _, resp = await page(http, f"/qa/recordings/{rid}")
            assert status == 303
            where = urlsplit(resp.headers["Location"])
            assert where.path == "/qa/sign-in"
            assert parse_qs(where.query) == {"next": [f"/qa/recordings/{rid}"]}
            status, html, _ = await page(http, resp.headers["Location"])
            assert f'name="next" value="/qa/recordings/{rid}"' in html
            back = await sign_in(http, "quinn", next=f"/qa/recordings/{rid}")
            assert back.headers["Location"] == f"/qa/recordings/{rid}"
        async with client(qa_server) as http:
            away = await sign_in(http, "quinn", next="https://evil.example/qa/recordings")
            assert away.headers["Location"] == "/qa/recordings"
    run(go)


# ------------------------------------------------------------------------ sign-out, expiry

def test_sign_out_revokes_the_session(qa_server: QaServer) -> None:
    async def go() -> None:
        http = await signed_in(qa_server)
        async with http:
            _, html, _ = await page(http, "/qa/recordings")
            token = _match(CSRF_META, html)
            old = {c.key: c.value for c in http.cookie_jar}
            async with http.post("/qa/sign-out", allow_redirects=False) as refused:
                assert refused.status == 403          # no CSRF token
            assert (await page(http, "/qa/recordings"))[0] == 200
            async with http.post("/qa/sign-out", data={"csrf": token},
                                 allow_redirects=False) as out:
                assert out.status == 303 and out.headers["Location"] == "/qa/sign-in"
                cleared = _cookie_header(out, "callvault_session")
                assert "Max-Age=0" in cleared or "expires=" in cleared.lower()
        async with aiohttp.ClientSession(base_url=qa_server.base,
                                         cookie_jar=aiohttp.DummyCookieJar()) as replay, \
                replay.get("/qa/recordings", allow_redirects=False, headers={
                    "Cookie": f"callvault_session={old['callvault_session']}"}) as resp:
            assert resp.status == 303
            assert resp.headers["Location"].startswith("/qa/sign-in")
    run(go)
    assert [e.actor for e in qa_server.entries(action="sign_out")] == ["quinn"]


def test_an_idle_session_ends(qa_server: QaServer) -> None:
    idle = qa_server.service.auth.idle_seconds

    async def go() -> None:
        http = await signed_in(qa_server)
        async with http:
            assert (await page(http, "/qa/recordings"))[0] == 200
            with connect(qa_server.dsn) as conn:
                n = conn.execute("UPDATE web_sessions SET last_seen_at = last_seen_at"
                                 " - make_interval(secs => %s) WHERE user_name = 'quinn'"
                                 " AND revoked_at IS NULL", (idle + 5,)).rowcount
                conn.commit()
            assert n == 1
            status, _, resp = await page(http, "/qa/recordings")
            assert status == 303 and resp.headers["Location"].startswith("/qa/sign-in")
    run(go)


# ------------------------------------------------------------------------------- the CSP

def test_every_page_has_the_strict_csp_and_no_inline_code(qa_server: QaServer) -> None:
    rid = qa_server.store()

    async def go() -> None:
        async with client(qa_server) as anonymous:
            status, html, resp = await page(anonymous, "/qa/sign-in")
            assert status == 200
            assert_no_inline_code(resp, html)
            refused = await sign_in(anonymous, "quinn", "wrong password")
            assert refused.status == 401
            assert_no_inline_code(refused, await refused.text())
        for user in ("quinn", "carol"):
            http = await signed_in(qa_server, user)
            async with http:
                for path, expected in (("/qa/recordings", 200), (f"/qa/recordings/{rid}", 200),
                                       ("/qa/recordings?verdict=maybe", 400),
                                       (f"/qa/recordings/{uuid.uuid4()}", 404),
                                       ("/qa/recordings/not-an-id", 404)):
                    status, html, resp = await page(http, path)
                    assert status == expected, (path, status)
                    assert_no_inline_code(resp, html)
                    assert resp.headers["X-Frame-Options"] == "DENY"
                    # the header's no-referrer would make the browser send `Origin: null`
                    # with every form, which the CSRF check must refuse; same-origin still
                    # sends no Referer to any other site
                    assert '<meta name="referrer" content="same-origin">' in html
                    assert resp.content_type == "text/html"
            async with aiohttp.ClientSession(base_url=qa_server.base) as anon:
                async with anon.get("/qa/static/player.js") as js:
                    assert js.status == 200 and "javascript" in js.content_type
                    assert "script-src 'self'" in js.headers["Content-Security-Policy"]
                async with anon.get("/qa/static/app.css") as css:
                    assert css.status == 200 and css.content_type == "text/css"
                async with anon.get("/qa/static/..%2Fqa_pages.py") as escape:
                    assert escape.status in (403, 404)
    run(go)


def test_titles_and_urls_carry_no_cpni(qa_server: QaServer) -> None:
    rid = qa_server.store(agent="agent9")

    async def go() -> None:
        http = await signed_in(qa_server)
        async with http:
            status, html, _ = await page(http, f"/qa/recordings/{rid}")
            assert status == 200
            title = _match(TITLE, html)
            assert title == f"Recording {str(rid)[:8]} — callvault QA"
            assert len(re.findall(r"\d", title)) <= 8
            assert SEEDED_ACCOUNT not in html and SEEDED_ACCOUNT.replace(" ", "") not in html
            links = [u for u in re.findall(r'(?:href|src|action)="([^"]+)"', html)
                     if u != "data:,"]
            assert links and all(re.fullmatch(r"[/\w.?=&%-]*", u) for u in links), links
            # (the recording's random id may hold a run of digits: it is not CPNI)
            assert all(not re.search(r"\d{9,}", u.replace(str(rid), "")) for u in links)
            status, html, _ = await page(http, "/qa/recordings?agent=agent9")
            assert _match(TITLE, html) == "Recordings — callvault QA"
    run(go)


# ------------------------------------------------------------------------------- the list

def test_list_filters_narrow_the_results(qa_server: QaServer) -> None:
    good = qa_server.store(agent="agent1", seconds=3.0, verified=True)
    bad = qa_server.store(agent="agent2", seconds=5.0, verified=False)
    none = qa_server.store(agent="agent3", seconds=4.0, verified=None)
    qa_server.service.scorecards.save(
        QA, bad, {q.id: 3 for q in qa_server.service.scorecards.questions}, "fine")

    async def rows(http: aiohttp.ClientSession, query: str) -> list[uuid.UUID]:
        status, html, _ = await page(http, "/qa/recordings?" + query)
        assert status == 200, html
        return [uuid.UUID(r) for r in ROW.findall(html)]

    async def go() -> None:
        http = await signed_in(qa_server)
        async with http:
            assert set(await rows(http, "")) == {good, bad, none}
            assert await rows(http, "agent=agent2") == [bad]
            assert await rows(http, "verdict=verified") == [good]
            assert await rows(http, "verdict=not_verified") == [bad]
            assert await rows(http, "verdict=none") == [none]
            assert await rows(http, "qa_status=reviewed") == [bad]
            assert set(await rows(http, "qa_status=unreviewed")) == {good, none}
            assert await rows(http, "min_seconds=3.5&max_seconds=4.5") == [none]
            assert await rows(http, "sort=duration&order=asc") == [good, none, bad]
            assert await rows(http, "sort=agent&order=desc") == [none, bad, good]
            assert await rows(http, "since=2000-01-01&until=2001-01-01") == []
            today = datetime.now(UTC).date()
            assert len(await rows(http, f"until={today.isoformat()}")) == 3  # inclusive
            _, html, _ = await page(http, "/qa/recordings?agent=agent2")
            assert 'value="agent2"' in html and "not verified" in html
            assert f'href="/qa/recordings/{bad}"' in html
    run(go)


BAD_FILTERS = (
    "verdict=maybe", "since=yesterday", "until=2026-02-30", "min_seconds=abc",
    "max_seconds=-1", "min_seconds=10&max_seconds=5", "since=2026-05-02&until=2026-05-01",
    "sort=id;drop", "order=sideways", "page=0", "page=x", "qa_status=done",
    "agent=%3Cscript%3E", "min_seconds=nan", "max_seconds=1e999")


def test_a_bad_filter_is_a_clear_400(qa_server: QaServer) -> None:
    async def go() -> None:
        http = await signed_in(qa_server)
        async with http:
            for query in BAD_FILTERS:
                status, html, _ = await page(http, "/qa/recordings?" + query)
                assert status == 400, (query, status)
                assert 'id="filter-error"' in html and "Cannot list recordings" in html
                assert "<script>" not in html     # what was typed comes back escaped
    run(go)


def test_pages_of_25_keep_the_filters(qa_server: QaServer) -> None:
    for i in range(27):
        new_recording(qa_server.dsn, agent="bulk", status="stored", duration_seconds=10 + i)
    new_recording(qa_server.dsn, agent="other", status="stored", duration_seconds=1)
    new_recording(qa_server.dsn, agent="bulk", status="processing", duration_seconds=1)

    async def go() -> None:
        http = await signed_in(qa_server)
        async with http:
            status, html, _ = await page(http, "/qa/recordings?agent=bulk&sort=duration")
            assert status == 200
            assert len(ROW.findall(html)) == 25 and "page 1 of 2" in html
            nxt = _match(re.compile(r'rel="next" href="([^"]+)"'), html).replace("&amp;", "&")
            assert "agent=bulk" in nxt and "sort=duration" in nxt and "page=2" in nxt
            status, html, _ = await page(http, nxt)
            assert status == 200 and len(ROW.findall(html)) == 2 and "page 2 of 2" in html
            assert 'rel="next"' not in html and 'rel="prev"' in html
    run(go)


# ------------------------------------------------------------------------------ scorecard

def test_scorecard_form_saves_and_refuses_bad_input(qa_server: QaServer) -> None:
    rid = qa_server.store()
    questions = qa_server.service.scorecards.questions
    answers = {f"q_{q.id}": str(min(q.points, 4)) for q in questions}

    async def go() -> None:
        http = await signed_in(qa_server)
        async with http:
            status, html, _ = await page(http, f"/qa/recordings/{rid}")
            token = _match(CSRF_META, html)
            assert _match(CSRF_INPUT, html) == token
            url = f"/qa/recordings/{rid}/scorecard"
            async with http.post(url, data={**answers, "notes": "x"},
                                 allow_redirects=False) as resp:
                assert resp.status == 403
            async with http.post(url, data={**answers, "csrf": "x" * 43},
                                 allow_redirects=False) as resp:
                assert resp.status == 403
            async with http.post(url, data={**answers, "csrf": token},
                                 headers={"Origin": "https://evil.example"},
                                 allow_redirects=False) as resp:
                assert resp.status == 403
            assert qa_server.service.scorecards.get(rid, "quinn") is None

            over = {**answers, f"q_{questions[0].id}": str(questions[0].points + 1)}
            async with http.post(url, data={**over, "csrf": token},
                                 allow_redirects=False) as resp:
                text = await resp.text()
                assert resp.status == 400 and f"takes 0-{questions[0].points} points" in text
            async with http.post(url, data={**answers, "csrf": token,
                                            "notes": "caller read 4716 2231 9087 out"},
                                 allow_redirects=False) as resp:
                text = await resp.text()
                assert resp.status == 400 and "may not contain phone" in text
                assert "4716 2231 9087" not in text   # refused for the number: not typed back
            async with http.post(url, data={**answers, "csrf": token,
                                            "notes": "good greeting at 0:03"},
                                 allow_redirects=False) as resp:
                assert resp.status == 303
                assert resp.headers["Location"] == f"/qa/recordings/{rid}?saved=1"
            status, html, _ = await page(http, f"/qa/recordings/{rid}?saved=1")
            assert status == 200 and "Scorecard saved" in html
            assert "good greeting at 0:03" in html
            q0 = questions[0]
            assert re.search(rf'name="q_{q0.id}"[^>]*>.*?<option value="{min(q0.points, 4)}"'
                             r" selected>", html, re.S)
        # another reviewer sees it read-only
        other = await signed_in(qa_server, "carol")
        async with other:
            status, html, _ = await page(other, f"/qa/recordings/{rid}")
            assert "Other reviewers" in html and "quinn" in html
            assert "good greeting at 0:03" in html
    run(go)
    card = qa_server.service.scorecards.get(rid, "quinn")
    assert card is not None and card.notes == "good greeting at 0:03"


# ------------------------------------------------------------------------ play original

def test_play_original_is_for_compliance_only(qa_server: QaServer) -> None:
    rid = qa_server.store()
    reason = "QA dispute ticket QA-1234 review"

    async def go() -> None:
        qa = await signed_in(qa_server, "quinn")
        async with qa:
            status, html, _ = await page(qa, f"/qa/recordings/{rid}")
            assert status == 200
            assert "Play original" not in html and "/original" not in html
            assert 'id="original"' not in html
            token = _match(CSRF_META, html)
            async with qa.post(f"/qa/recordings/{rid}/original",
                               data={"csrf": token, "reason": reason},
                               allow_redirects=False) as resp:
                assert resp.status == 403 and "may not" in await resp.text()
            status, html, _ = await page(qa, f"/qa/recordings/{rid}?original=1")
            assert 'id="original"' not in html and "banner-original" not in html

        carol = await signed_in(qa_server, "carol")
        async with carol:
            status, html, _ = await page(carol, f"/qa/recordings/{rid}")
            assert "Play original" in html and 'id="original"' not in html
            token = _match(CSRF_META, html)
            url = f"/qa/recordings/{rid}/original"
            async with carol.post(url, data={"reason": reason},
                                  allow_redirects=False) as resp:
                assert resp.status == 403
            async with carol.post(url, data={"csrf": token, "reason": "because"},
                                  allow_redirects=False) as resp:
                text = await resp.text()
                assert resp.status == 400 and 'id="original-error"' in text
                assert "at least 10 characters" in text and 'id="original"' not in text
            async with carol.post(url, data={"csrf": token, "reason": reason},
                                  allow_redirects=False) as resp:
                assert resp.status == 303
                assert resp.headers["Location"] == f"/qa/recordings/{rid}?original=1"
            status, html, _ = await page(carol, f"/qa/recordings/{rid}?original=1")
            assert status == 200
            # preload none: no byte moves (and no play is logged) until it is played
            assert 'id="original" controls preload="none"' in html
            assert f'src="/api/recordings/{rid}/audio/raw"' in html
            assert 'class="banner-original"' in html and reason in html
    run(go)
    rows = qa_server.entries(recording_id=rid)
    raw = [(r.actor, r.outcome, r.reason) for r in rows if r.variant == "raw"]
    assert ("carol", "allowed", reason) in raw
    assert any(a == "quinn" and o == "denied" for a, o, _ in raw)
    assert any(a == "carol" and o == "denied" for a, o, _ in raw)   # the short reason


def test_player_page_carries_what_the_script_needs(qa_server: QaServer) -> None:
    rid = qa_server.store(channels=2)

    async def go() -> None:
        http = await signed_in(qa_server)
        async with http:
            status, html, _ = await page(http, f"/qa/recordings/{rid}")
            assert status == 200
            attrs: dict[str, Any] = {}
            parser = _Tags()
            parser.feed(html)
            for _tag, a in parser.tags:
                if a.get("id") in ("qa-player", "player"):
                    attrs[str(a["id"])] = a
            assert attrs["player"]["src"] == f"/api/recordings/{rid}/audio/redacted"
            assert attrs["player"]["preload"] == "none" and "controls" in attrs["player"]
            root = attrs["qa-player"]
            assert root["data-transcript-url"] == f"/api/recordings/{rid}/transcript"
            assert root["data-waveform-url"] == f"/api/recordings/{rid}/waveform"
            assert root["data-channels"] == "2"
            assert "Keyboard shortcuts" in html and "<kbd>j</kbd>" in html
    run(go)
