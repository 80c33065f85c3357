"""The dashboard's HTTP server: the page at `/`, the run as JSON at `/api/run`.

Standard library only (`http.server`, one thread per request, daemon threads), so nothing is
installed for it. The page polls `/api/run` about once a second; a request never touches the
network: it reads the SDK handle's snapshot and history (kept current by the handle's own
watcher) and the recorder, which a watcher thread here feeds every state the handle sees, so
no phase is missed between two polls. When the run is lost (coordinator gone, RPC down) the
last snapshot stays served, marked disconnected.

GET only; it serves nothing but this run's page and figures. It binds 127.0.0.1 unless told
otherwise (`--listen`).
"""

from __future__ import annotations

import concurrent.futures
import json
import logging
import socket
import threading
import time
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from importlib import resources
from pathlib import Path
from typing import Any

from psyche_client.dashboard.events import ClientEvents
from psyche_client.dashboard.recorder import RunRecorder
from psyche_client.dashboard.snapshot import build_snapshot
from psyche_client.errors import UserError
from psyche_client.p2p.addr import AddressError, is_wildcard, join_host_port, parse_host_port
from psyche_client.sdk import loop as sdk_loop

log = logging.getLogger("psyche.dashboard")

DEFAULT_LISTEN = "127.0.0.1:8765"
EVENTS_REFRESH_S = 0.5


class DashboardAddressError(UserError, ValueError):
    """`--listen` is not PORT or HOST:PORT, or cannot be bound."""


def parse_listen(text: str) -> tuple[str, int]:
    """PORT (binds 127.0.0.1) or HOST:PORT (`:PORT` is 127.0.0.1 too)."""
    text = text.strip()
    if text.isdigit():
        text = f"127.0.0.1:{text}"
    try:
        hp = parse_host_port(text, allow_names=False, empty_host="127.0.0.1", what="--listen")
    except AddressError as e:
        raise DashboardAddressError(str(e)) from None
    return hp.host, hp.port


def page_html() -> bytes:
    return resources.files("psyche_client.dashboard").joinpath("page.html").read_bytes()


class _Http(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = False  # "port in use" must be an error, not a shared port


class _Http6(_Http):
    address_family = socket.AF_INET6


class DashboardServer:
    """Serves one run's dashboard; `start()` binds and starts, `stop()` ends it (idempotent)."""

    def __init__(
        self,
        handle: Any,
        events: ClientEvents | None = None,
        backend: str = "",
        owns_handle: bool = False,
    ) -> None:
        self.handle = handle
        self.owns_handle = owns_handle
        """`stop()` also closes the handle (when `start_dashboard` connected it)."""
        self.events = events or ClientEvents()
        self.backend = backend or ("tcp" if ":" in handle.address else "solana")
        self.recorder = RunRecorder()
        self.error: str | None = None
        self.httpd: _Http | None = None
        self._stop = threading.Event()
        self._http_thread: threading.Thread | None = None
        self._watcher: concurrent.futures.Future[None] | None = None
        self._events_at = 0.0
        self._events_lock = threading.Lock()
        self.recorder.observe(handle.state())

    # ---- serving ------------------------------------------------------------------------------

    def start(self, listen: str = DEFAULT_LISTEN) -> DashboardServer:
        host, port = parse_listen(listen)
        try:
            self.httpd = (_Http6 if ":" in host else _Http)((host, port), _handler(self))
        except OSError as e:
            reason = e.strerror or str(e)
            where = join_host_port(host, port)
            raise DashboardAddressError(
                f"cannot serve the dashboard on {where}: {reason}"
            ) from None
        self._http_thread = threading.Thread(
            target=self.httpd.serve_forever, name="dashboard-http", daemon=True
        )
        self._http_thread.start()
        self._watcher = sdk_loop.submit(self._watch())
        return self

    @property
    def port(self) -> int:
        assert self.httpd is not None, "not started"
        return int(self.httpd.server_address[1])

    @property
    def url(self) -> str:
        """Where a browser on this machine opens the page."""
        assert self.httpd is not None, "not started"
        host = str(self.httpd.server_address[0])
        if is_wildcard(host):
            host = "::1" if ":" in host else "127.0.0.1"
        return f"http://{join_host_port(host, self.port)}/"

    def stop(self) -> None:
        self._stop.set()
        if self._watcher is not None:
            self._watcher.cancel()
        if self.httpd is not None and self._http_thread is not None:
            self.httpd.shutdown()
            self.httpd.server_close()
            self._http_thread.join(5)
            self._http_thread = None
        if self.owns_handle:
            self.handle.close()

    def serve_until_interrupted(self) -> None:
        """Block until Ctrl-C (the CLI's main thread)."""
        try:
            while not self._stop.wait(0.5):
                pass
        except KeyboardInterrupt:
            pass

    # ---- watching -----------------------------------------------------------------------------

    async def _watch(self) -> None:
        """Feed the recorder every state the handle sees, until the run ends or is lost
        (runs on the SDK loop, next to the handle's own pump)."""
        try:
            async for status in self.handle.watch():
                self.recorder.observe(self.handle.state())
                if status.finished:
                    return
        except ConnectionError as e:
            self.error = str(e)
        except RuntimeError:  # the handle was closed
            pass

    # ---- the document -------------------------------------------------------------------------

    def snapshot(self) -> dict[str, Any]:
        with self._events_lock:
            if time.monotonic() - self._events_at >= EVENTS_REFRESH_S:
                self.events.refresh()
                self._events_at = time.monotonic()
        state = self.handle.state()
        self.recorder.observe(state)
        return build_snapshot(
            address=self.handle.address,
            backend=self.backend,
            status=self.handle.status(),
            state=state,
            history=self.handle.history(),
            recorder=self.recorder,
            events=self.events,
            error=self.link_error(),
        )

    def link_error(self) -> str | None:
        """Why the shown state may be stale: the watch ended with an error, or (TCP) the
        connection is down and reconnecting (the SDK retries forever: a coordinator may
        restart). None while connected, and once the run has finished. A Solana source
        retries its polls silently."""
        if self.error is not None:
            return self.error
        if self.handle.status().finished:
            return None  # the run is over: its coordinator may go away, nothing is missed
        connected = getattr(getattr(self.handle.source, "conn", None), "_connected", None)
        if connected is not None and not connected.is_set() and not self.handle.closed:
            return f"connection to the coordinator {self.handle.address} is down; reconnecting"
        return None


def _handler(dash: DashboardServer) -> type[BaseHTTPRequestHandler]:
    class Handler(BaseHTTPRequestHandler):
        server_version = "psyche-dashboard"

        def do_GET(self) -> None:  # noqa: N802 - the stdlib's name
            path = self.path.split("?", 1)[0]
            if path in ("/", "/index.html"):
                self._send(200, "text/html; charset=utf-8", page_html())
            elif path == "/api/run":
                try:
                    body = json.dumps(dash.snapshot(), allow_nan=False).encode()
                except Exception as e:  # noqa: BLE001 - reported to the page, not a dead server
                    log.warning("dashboard snapshot failed: %r", e)
                    err = {"error": f"snapshot failed: {e!r}", "connected": False}
                    self._send(500, "application/json", json.dumps(err).encode())
                    return
                self._send(200, "application/json", body)
            elif path == "/favicon.ico":
                self._send(204, "text/plain", b"")
            else:
                self._send(404, "text/plain; charset=utf-8", b"not found\n")

        def _send(self, code: int, ctype: str, body: bytes) -> None:
            self.send_response(code)
            self.send_header("Content-Type", ctype)
            self.send_header("Content-Length", str(len(body)))
            self.send_header("Cache-Control", "no-store")
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: Any) -> None:  # noqa: A002 - stdlib's name
            log.debug("%s " + format, self.address_string(), *args)

    return Handler


def start_dashboard(
    target: str,
    *,
    rpc: str | None = None,
    listen: str = DEFAULT_LISTEN,
    events: list[Path] | None = None,
    events_dirs: list[Path] | None = None,
    timeout_s: float = 15.0,
) -> DashboardServer:
    """Connect to a run (host:port, or a Solana run id / account with `rpc`) and serve its
    dashboard; the server owns the handle (`stop()` closes both). One-line `UserError`s."""
    import psyche_client.sdk as sdk

    parse_listen(listen)  # a bad --listen fails before any connection is tried
    handle = sdk.connect(target, rpc, timeout_s=timeout_s)
    try:
        return DashboardServer(handle, ClientEvents(events, events_dirs), owns_handle=True).start(
            listen
        )
    except BaseException:
        handle.close()
        raise
