"""What the ARI client puts on the wire: a number of record dialled for a call-back must
not sit in a URL (Asterisk's HTTP log, proxies' access logs), so originate sends the
endpoint and caller id in a JSON body. Against a loopback recorder; that Asterisk 22
accepts the body is shown by the call-back test in test_ivr_calls.py."""

from __future__ import annotations

import asyncio
import json
from typing import Any

from aiohttp import web
from pydantic import SecretStr

from telephony.ari.client import AriClient


def test_originate_keeps_the_endpoint_out_of_the_url() -> None:
    seen: list[dict[str, Any]] = []

    async def record(request: web.Request) -> web.Response:
        seen.append({"url": str(request.rel_url), "body": await request.text(),
                     "type": request.content_type})
        return web.json_response({"id": "x"})

    async def main() -> None:
        app = web.Application()
        app.router.add_post("/ari/channels/{id}", record)
        runner = web.AppRunner(app, access_log=None)
        await runner.setup()
        site = web.TCPSite(runner, "127.0.0.1", 0)
        await site.start()
        port = runner.addresses[0][1]
        client = AriClient(f"http://127.0.0.1:{port}", "u", SecretStr("p"))
        try:
            await client.originate("cb-1", "PJSIP/+15558675309@callback-trunk", "callvault",
                                   app_args="callback", timeout=20,
                                   caller_id="+15550001111")
        finally:
            await client.close()
            await runner.cleanup()

    asyncio.run(main())
    assert len(seen) == 1
    url, body = seen[0]["url"], json.loads(seen[0]["body"])
    assert "5558675309" not in url and "5550001111" not in url and "endpoint" not in url
    assert body == {"endpoint": "PJSIP/+15558675309@callback-trunk",
                    "callerId": "+15550001111"}
    assert seen[0]["type"] == "application/json"
    assert "app=callvault" in url and "timeout=20" in url
