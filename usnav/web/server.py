"""``usnav web``: the surgeon's picture in any browser, served by usnav.

One asyncio server (the ``websockets`` package) answers both the page's plain HTTP requests
(the static files shipped in ``usnav/web/static``: no CDN, no build step) and the WebSocket at
``/ws`` over which the :class:`~usnav.web.bridge.Bridge` sends its newest picture.

Safety:

- bound to 127.0.0.1 by default; any other address needs an access token, or the server
  refuses to start;
- with a token, the page and the WebSocket must carry it as ``?token=``; a wrong or missing
  token gets 403 and nothing else (the script and style sheet, the same for everyone, are
  served without it);
- without a token (loopback only), requests must name a loopback host (``Host`` header), so a
  web page elsewhere cannot reach the display through DNS rebinding;
- TLS when a certificate and key are given (``https://`` and ``wss://``);
- each page gets the newest picture when it is ready for one: a slow, stuck or closed tab
  never makes the bridge or the pipeline wait; a picture older than its validity is never
  sent, so a page opened after the pipeline stopped is not shown its last LIVE picture;
- a request with more than one ``Host`` header is refused (403), whatever it names.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import hmac
import ipaddress
import logging
import ssl
import threading
import time
from dataclasses import dataclass
from http import HTTPStatus
from importlib import resources
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

from pydantic import BaseModel, ConfigDict, Field
from websockets.asyncio.server import ServerConnection, serve
from websockets.datastructures import Headers
from websockets.exceptions import ConnectionClosed
from websockets.http11 import Request, Response

from usnav.defaults import DISPLAY_ENDPOINT, WEB_PORT
from usnav.errors import InputError, UsnavError
from usnav.viewer.mri import MriContext
from usnav.viewer.state import ViewerOptions
from usnav.web.bridge import Bridge, Picture

log = logging.getLogger(__name__)

_STATIC = {
    "/": ("index.html", "text/html; charset=utf-8"),
    "/index.html": ("index.html", "text/html; charset=utf-8"),
    "/app.js": ("app.js", "text/javascript; charset=utf-8"),
    "/style.css": ("style.css", "text/css; charset=utf-8"),
}
_CSP = (
    "default-src 'self'; img-src 'self' blob: data:; connect-src 'self'; "
    "style-src 'self'; script-src 'self'; frame-ancestors 'none'"
)
LOOPBACK_NAMES = ("localhost",)
#: The methods the page's files answer; anything else gets 405 (the WebSocket takes GET only).
_PAGE_METHODS = ("GET", "HEAD")


class WebOptions(BaseModel):
    """Settings of ``usnav web``.

    Attributes
    ----------
    connect
        The publisher's ZeroMQ endpoint.
    host, port
        Where the page is served (port 0: any free port).
    token
        Access token; required when ``host`` is not a loopback address.
    cert, key
        TLS certificate and private key (PEM); both or neither.
    max_fps
        Upper bound on pictures per second.
    jpeg_quality
        JPEG quality of the pictures, 1–100.
    """

    model_config = ConfigDict(extra="forbid")

    connect: str = DISPLAY_ENDPOINT
    host: str = "127.0.0.1"
    port: int = Field(WEB_PORT, ge=0, le=65535)
    token: str | None = None
    cert: Path | None = None
    key: Path | None = None
    max_fps: float = Field(60.0, gt=0, le=240)
    jpeg_quality: int = Field(80, ge=1, le=100)


def is_loopback(host: str) -> bool:
    """Whether ``host`` (an address or name) is this machine only."""
    name = host.strip("[]").lower()
    if name in LOOPBACK_NAMES:
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


def check_options(options: WebOptions) -> ssl.SSLContext | None:
    """Refuse unsafe or unusable settings; the TLS context when a certificate is given.

    Raises
    ------
    InputError
        Beyond loopback without a token, an empty token, a certificate without its key (or
        the reverse), or a certificate/key that cannot be loaded.
    """
    if options.token is not None and len(options.token) < 8:
        raise InputError("--token", "must be at least 8 characters", "use a long random token")
    if not is_loopback(options.host) and not options.token:
        raise InputError(
            "--host",
            f"{options.host} is reachable beyond this machine and no --token was given",
            "give --token T (and --cert/--key for TLS), or keep the default 127.0.0.1",
        )
    if (options.cert is None) != (options.key is None):
        raise InputError("--cert/--key", "TLS needs both the certificate and its key")
    if options.cert is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    try:
        context.load_cert_chain(str(options.cert), str(options.key))
    except (OSError, ssl.SSLError) as exc:
        raise InputError(options.cert, f"cannot load the certificate and key: {exc}") from exc
    return context


@dataclass
class WebStats:
    """Counters of a running :class:`WebDisplay`.

    Attributes
    ----------
    pages
        Pages connected now.
    opened, refused
        WebSocket connections accepted / refused (wrong token or host) since start.
    sent
        Pictures sent, all pages together.
    """

    pages: int = 0
    opened: int = 0
    refused: int = 0
    sent: int = 0


class WebDisplay:
    """The web display: the bridge, and the HTTP/WebSocket server, in background threads.

    Parameters
    ----------
    options
        Where to listen, the publisher, token and TLS.
    viewer
        The viewer's options (thresholds and picture size).
    mri
        The MRI to show beside the ultrasound, or None.
    curve_server_key, curve_client_secret
        CURVE key files for a publisher beyond loopback.
    """

    def __init__(
        self,
        options: WebOptions | None = None,
        *,
        viewer: ViewerOptions | None = None,
        mri: MriContext | None = None,
        curve_server_key=None,
        curve_client_secret=None,
    ):
        self.options = options or WebOptions()
        self._ssl = check_options(self.options)
        self.stats = WebStats()
        self.bridge = Bridge(
            self.options.connect,
            viewer=viewer,
            mri=mri,
            max_fps=self.options.max_fps,
            jpeg_quality=self.options.jpeg_quality,
            on_picture=self._on_picture,
            curve_server_key=curve_server_key,
            curve_client_secret=curve_client_secret,
        )
        self._loop: asyncio.AbstractEventLoop | None = None
        self._event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._stopping: asyncio.Event | None = None
        self._error: BaseException | None = None
        self._thread = threading.Thread(target=self._serve, name="usnav-web", daemon=True)
        self.port = 0

    # -- lifetime --------------------------------------------------------------------------

    def start(self, timeout_s: float = 10.0) -> WebDisplay:
        """Start serving; returns once the port is listening.

        Raises
        ------
        UsnavError
            The port cannot be bound.
        """
        self._thread.start()
        if not self._ready.wait(timeout_s):
            self.bridge.stop()
            raise UsnavError("usnav web did not start listening in time")
        if self._error is not None:
            error = self._error
            self._thread.join(5)
            self.bridge.stop()  # never started: closes its subscriber
            if isinstance(error, OSError):
                raise UsnavError(
                    f"cannot listen on {self.options.host}:{self.options.port}: "
                    f"{error.strerror or error} — "
                    + (
                        "choose another --port"
                        if error.errno in (errno.EADDRINUSE, errno.EACCES)
                        else "check --host (an address of this machine, e.g. 127.0.0.1)"
                    )
                ) from error
            raise error
        self.bridge.start()
        return self

    @property
    def url(self) -> str:
        """The page's address (with the token, if any)."""
        scheme = "https" if self._ssl is not None else "http"
        host = self.options.host
        if host in ("0.0.0.0", "::", "[::]", ""):  # every interface: a tablet needs a name
            import socket

            host = socket.getfqdn() or socket.gethostname()
        if ":" in host and not host.startswith("["):
            host = f"[{host}]"
        query = f"/?token={self.options.token}" if self.options.token else "/"
        return f"{scheme}://{host}:{self.port}{query}"

    def stop(self) -> None:
        """Stop the server and the bridge (pages see the connection close)."""
        if self._loop is not None and self._stopping is not None:
            with contextlib.suppress(RuntimeError):
                self._loop.call_soon_threadsafe(self._stopping.set)
        if self._thread.is_alive():
            self._thread.join(timeout=5)
        self.bridge.stop()

    def __enter__(self) -> WebDisplay:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def serve_forever(self, stop: threading.Event | None = None) -> None:
        """Block until ``stop`` is set (or the server ends)."""
        while self._thread.is_alive():
            if stop is not None and stop.wait(0.2):
                break
            if stop is None:
                self._thread.join(0.2)
        self.stop()

    # -- server ----------------------------------------------------------------------------

    def _serve(self) -> None:
        try:
            asyncio.run(self._main())
        except BaseException as exc:  # reported to start(); the thread just ends
            self._error = exc
            self._ready.set()

    async def _main(self) -> None:
        self._loop = asyncio.get_running_loop()
        self._event = asyncio.Event()
        self._stopping = asyncio.Event()
        async with serve(
            self._handle,
            self.options.host,
            self.options.port,
            ssl=self._ssl,
            process_request=self._process_request,
            max_size=4096,  # pages send nothing but the handshake
            write_limit=2**16,
            compression=None,  # JPEG does not compress; don't spend CPU on it
            server_header="usnav",
        ) as server:
            self.port = next(iter(server.sockets)).getsockname()[1]
            self._ready.set()
            await self._stopping.wait()

    def _on_picture(self, picture: Picture) -> None:
        """Bridge thread: wake the pages' senders (never blocks)."""
        loop = self._loop
        if loop is not None:
            with contextlib.suppress(RuntimeError):
                loop.call_soon_threadsafe(self._wake)

    def _wake(self) -> None:
        assert self._event is not None
        event, self._event = self._event, asyncio.Event()
        event.set()

    def _authorised(self, request: Request, token_needed: bool = True) -> tuple[bool, str]:
        hosts = request.headers.get_all("Host")
        if len(hosts) > 1:
            # ambiguous (RFC 9112 §3.2): which one a proxy or the browser checked is unknown
            return False, f"{len(hosts)} Host headers"
        query = parse_qs(urlsplit(request.path).query)
        if self.options.token:
            if not token_needed:
                return True, ""
            given = (query.get("token") or [""])[0]
            if not hmac.compare_digest(given.encode("utf-8"), self.options.token.encode("utf-8")):
                return False, "wrong or missing access token"
            return True, ""
        host = hosts[0] if hosts else ""
        name = host.rsplit(":", 1)[0] if not host.startswith("[") else host.split("]")[0] + "]"
        if not is_loopback(name):
            return False, f"host {host!r} is not this machine"
        return True, ""

    def _foreign_origin(self, request: Request) -> str:
        """Why a WebSocket handshake from another site's page is refused ("" when it is not).

        Browsers let any page open a WebSocket to any address and send the Host it asked
        for, so the Host check alone let a page of another site, open in the browser on the
        workstation, read the margin pictures of a token-less loopback ``usnav web`` (cross-
        site WebSocket hijacking). A browser always says the page's Origin: only this
        server's own (``scheme://Host``) is accepted. A program (no Origin) is not a page.
        """
        origins = request.headers.get_all("Origin")
        if not origins:
            return ""
        if len(origins) > 1:
            return f"{len(origins)} Origin headers"
        scheme = "https" if self._ssl is not None else "http"
        own = f"{scheme}://{request.headers.get('Host', '')}".lower()
        if origins[0].lower() != own:
            return f"WebSocket from another site's page (Origin {origins[0]!r}) refused"
        return ""

    def _process_request(self, connection: ServerConnection, request: Request) -> Response | None:
        path = urlsplit(request.path).path
        # the script and style sheet are the package's own files, the same for everyone: they
        # are served without the token (the page's own URL carries it; its sub-requests don't)
        public = path in ("/app.js", "/style.css", "/favicon.ico")
        ok, why = self._authorised(request, token_needed=not public)
        if not ok:
            self.stats.refused += 1
            return _response(HTTPStatus.FORBIDDEN, f"usnav web: {why}\n".encode(), "text/plain")
        if path == "/ws":
            foreign = self._foreign_origin(request)
            if foreign:
                self.stats.refused += 1
                return _response(
                    HTTPStatus.FORBIDDEN, f"usnav web: {foreign}\n".encode(), "text/plain"
                )
            return None  # the WebSocket handshake: websockets answers 405 to all but GET
        if request.method not in _PAGE_METHODS:
            # the page only reads: a POST, PUT or DELETE changes nothing, so say so (405)
            # rather than serve the page as if it had been a GET
            response = _response(
                HTTPStatus.METHOD_NOT_ALLOWED,
                f"usnav web: method {request.method} is not allowed here — use GET\n".encode(),
                "text/plain",
            )
            response.headers["Allow"] = ", ".join(_PAGE_METHODS)
            return response
        if path == "/favicon.ico":
            response = _response(HTTPStatus.NO_CONTENT, b"", "text/plain")
        elif path in _STATIC:
            name, kind = _STATIC[path]
            body = resources.files("usnav.web").joinpath("static", name).read_bytes()
            response = _response(HTTPStatus.OK, body, kind)
        else:
            response = _response(HTTPStatus.NOT_FOUND, b"not found\n", "text/plain")
        if request.method == "HEAD":  # the same headers (Content-Length included), no body
            response.body = b""
        return response

    async def _handle(self, connection: ServerConnection) -> None:
        """One page: send it the newest picture whenever it is ready for one.

        A picture older than its validity is never sent (the one kept while no page watched,
        say, from before the pipeline stopped): the page waits for the bridge's next, which
        it renders from the present state now that a page watches. Each picture goes with
        its age at sending, from which the page counts its validity.
        """
        self.stats.pages += 1
        self.stats.opened += 1
        self.bridge.watchers += 1
        opened = time.monotonic()
        last = 0
        try:
            while True:
                assert self._event is not None
                event = self._event
                picture = self.bridge.latest
                # the first picture is one rendered since the page opened (the bridge renders
                # within a refresh once a page watches): a kept one, still within its validity,
                # may show a pipeline that died in between as LIVE
                fresh = last != 0 or (picture is not None and picture.rendered >= opened)
                if picture is not None and picture.seq != last and picture.is_current() and fresh:
                    await connection.send(picture.message())
                    last = picture.seq
                    self.stats.sent += 1
                    continue
                waiter = asyncio.ensure_future(event.wait())
                closed = asyncio.ensure_future(connection.wait_closed())
                done, _ = await asyncio.wait({waiter, closed}, return_when=asyncio.FIRST_COMPLETED)
                for task in (waiter, closed):
                    if task not in done:
                        task.cancel()
                if closed in done:
                    return
        except ConnectionClosed:
            return
        finally:
            self.stats.pages -= 1
            self.bridge.watchers -= 1


def _response(status: HTTPStatus, body: bytes, kind: str) -> Response:
    headers = Headers(
        {
            "Content-Type": kind,
            "Content-Length": str(len(body)),
            "Cache-Control": "no-store",
            "Content-Security-Policy": _CSP,
            "X-Content-Type-Options": "nosniff",
            "Referrer-Policy": "no-referrer",
            "Connection": "close",
        }
    )
    return Response(status.value, status.phrase, headers, body)
