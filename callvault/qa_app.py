"""The QA reviewers' web app (issue 6), put together: `build` makes its parts from the
settings and the vault, `mount` adds its pages (`callvault.qa_pages`, under `/qa/`) and
its JSON API (`callvault.qa_api`, under `/api/`) to `serve`'s aiohttp application, with
the strict security headers on every response."""

from __future__ import annotations

from aiohttp import web

from callvault.config import Settings
from callvault.qa_service import QaService
from callvault.web_auth import WebAuth, security_headers
from storage.access import Users
from storage.scorecards import Scorecards
from storage.vault import Vault


def build(settings: Settings, vault: Vault, users: Users | None = None) -> QaService:
    """The QA app's service over `vault`, configured from `settings`."""
    users = users or Users(vault.dsn, lock_after=settings.sign_in_lock_after,
                           lock_seconds=settings.sign_in_lock_seconds)
    auth = WebAuth(vault.dsn, users=users, log=vault.log,
                   idle_seconds=settings.web_session_idle_seconds,
                   absolute_seconds=settings.web_session_max_seconds,
                   api_token_seconds=settings.api_token_seconds,
                   grant_seconds=settings.raw_grant_seconds,
                   secure_cookies=settings.web_secure_cookies,
                   trusted_proxies=settings.trusted_proxies)
    return QaService(vault, Scorecards(vault.dsn, settings.scorecard_questions()), auth)


def mount(app: web.Application, service: QaService) -> None:
    """Add the QA app's pages and API to `app`."""
    from callvault.qa_api import QaApi
    from callvault.qa_pages import QaPages
    app.on_response_prepare.append(security_headers)
    if service.auth.secure:     # served over HTTPS: tell browsers to stay on it
        app.on_response_prepare.append(_hsts)
    QaApi(service).add_routes(app)
    QaPages(service).add_routes(app)

    async def close(_: web.Application) -> None:
        service.close()

    app.on_cleanup.append(close)


async def _hsts(request: web.Request, response: web.StreamResponse) -> None:
    response.headers.setdefault("Strict-Transport-Security", "max-age=31536000")
