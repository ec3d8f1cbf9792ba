"""Start the review page: check the port and the access rules, build the scene, print the
address, serve until interrupted (Ctrl-C)."""

from __future__ import annotations

import os
import socket
import sys

from ..errors import TuckerSegmentError
from .access import token_middleware
from .result_folder import ReviewResult


def check_port(host: str, port: int) -> None:
    """A busy port (or no port at all) is one line before the (slow) scene is built."""
    if not 0 <= port <= 65535:
        raise TuckerSegmentError(f"--port {port}: a port number from 0 to 65535 (0: any free port)")
    if port == 0:
        return
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    with socket.socket(family, socket.SOCK_STREAM) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind((host, port))
        except OSError as error:
            raise TuckerSegmentError(
                f"cannot listen on {host}:{port} ({error.strerror}): choose another --port "
                "(0: any free port)"
            ) from None


def has_display() -> bool:
    """Whether a browser window can open here (a desktop session), or only the address."""
    if sys.platform in ("darwin", "win32"):
        return True
    return bool(os.environ.get("DISPLAY") or os.environ.get("WAYLAND_DISPLAY"))


def page_address(host: str, port: int, token: str | None) -> str:
    shown = socket.gethostname() if host in ("0.0.0.0", "::") else host
    shown = f"[{shown}]" if ":" in shown else shown
    return f"http://{shown}:{port}/" + (f"?token={token}" if token else "")


async def _launcher_answer(request: object) -> object:
    """trame's page first asks a session launcher (POST …/paraview/) where its websocket is;
    answered here (this server's own /ws) instead of a 405 in the browser's console."""
    from aiohttp import web

    return web.json_response({"sessionURL": "ws://USE_HOST/ws"})


def _bind(app: object, token: str | None) -> None:
    app.router.add_post("/paraview/", _launcher_answer)
    if token is not None:
        app.middlewares.append(token_middleware(token))


def serve(
    result: ReviewResult,
    host: str = "127.0.0.1",
    port: int = 0,
    token: str | None = None,
    image_format: str = "png",
    open_browser: bool | None = None,
) -> None:
    """Serve the review of ``result`` until interrupted. The caller has checked the address
    (:func:`~.access.access_token` gives ``token``) and the port (:func:`check_port`) before
    any slow work."""
    from .review_page import ReviewPage

    page = ReviewPage(result, image_format=image_format)
    server = page.server
    server.controller.on_server_bind.add(lambda wslink_server: _bind(wslink_server.app, token))

    def announce(**_: object) -> None:
        print(f"review of {result.name}: {page_address(host, server.port, token)}", flush=True)
        if token is not None:
            print("the page needs that address's token; anyone who has it sees the CT", flush=True)

    server.controller.on_server_ready.add(announce)
    sys.argv = sys.argv[:1]  # trame reads its own options from the command line: none here
    server.start(
        port=port,
        host=host,
        open_browser=(token is None and has_display()) if open_browser is None else open_browser,
        show_connection_info=False,
        timeout=0,
    )
