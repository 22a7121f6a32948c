"""Placeholder: being written."""

from __future__ import annotations

from aiohttp import web

from callvault.qa_service import QaService


class QaPages:
    def __init__(self, service: QaService) -> None:
        self.service = service

    def add_routes(self, app: web.Application) -> None:
        pass
