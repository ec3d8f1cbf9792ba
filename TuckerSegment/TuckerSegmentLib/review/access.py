"""Who may open the review page: this machine only by default; elsewhere, with a token.

A review page shows a patient's CT. Bound to 127.0.0.1 (the default) only this machine's users
reach it. Listening on any other address needs ``--allow-remote`` and then every request must
carry a random access token, printed once: ``?token=…`` on the first page load, which sets an
HttpOnly cookie for the page's own assets and websocket.
"""

from __future__ import annotations

import ipaddress
import secrets
from typing import Any

from ..errors import TuckerSegmentError

COOKIE = "tuckersegment_review"
LOCAL_HOSTS = {"127.0.0.1", "localhost", "::1"}

REFUSED_PAGE = """<!doctype html><html><head><meta charset="utf-8">
<title>TuckerSegment review: access token needed</title></head><body>
<h1>Access token needed</h1><p>This review page needs the access token that
<code>tucker-segment review</code> printed when it started: open the full address it printed
(ending in <code>?token=…</code>).</p></body></html>"""


def is_local(host: str) -> bool:
    if host in LOCAL_HOSTS:
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def access_token(host: str, allow_remote: bool) -> str | None:
    """None on this machine's loopback; a fresh token for any other address, which must be
    asked for explicitly."""
    if is_local(host):
        return None
    if not allow_remote:
        raise TuckerSegmentError(
            f"--host {host} would show the CT to other machines: add --allow-remote to listen "
            "there (the page then needs the access token printed at start)"
        )
    return secrets.token_urlsafe(24)


def token_middleware(token: str) -> Any:
    """An aiohttp middleware that refuses every request without the token (query or cookie)."""
    from aiohttp import web

    @web.middleware
    async def check(request: web.Request, handler: Any) -> web.StreamResponse:
        given = request.query.get("token") or request.cookies.get(COOKIE) or ""
        if not secrets.compare_digest(given.encode(), token.encode()):
            return web.Response(status=403, text=REFUSED_PAGE, content_type="text/html")
        response = await handler(request)
        if request.query.get("token") and not request.cookies.get(COOKIE):
            response.set_cookie(COOKIE, token, httponly=True, samesite="Strict")
        return response

    return check
