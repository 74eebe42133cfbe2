"""A fault-injecting HTTP proxy in front of a real registry, and a "foreign" server that counts
every request it gets (a host the dashboard must never contact).

Normal mode forwards requests and answers byte for byte, headers included, so the client
cannot tell the proxy from the registry. A fault (set per test, thread-safe) replaces or
mangles the answers of matching requests:

    proxy.set_fault(Fault("status", status=503, methods={"GET"}, path=r"/tags/list$"))
    proxy.set_fault(Fault("reset", after=3))   # the first 3 matching requests pass
    proxy.set_fault(Fault("status", status=503, times=1))   # only one answer is a 503
    proxy.set_fault(Fault("hook", action=push_hotfix, times=1))   # another client acts first
    proxy.clear_fault()
"""

from __future__ import annotations

import hashlib
import http.client
import json
import re
import socket
import struct
import threading
import time
from collections.abc import Callable, Collection
from contextlib import AbstractContextManager, nullcontext
from dataclasses import dataclass, field, replace
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import urlsplit

# Never copied from one connection to the other: they describe a single hop.
HOP_BY_HOP = frozenset(
    {"connection", "keep-alive", "proxy-connection", "transfer-encoding", "te", "trailer", "upgrade", "content-length"}
)
KINDS = frozenset(
    {
        "latency",  # wait `delay` seconds, then forward
        "reset",  # close the connection with a TCP RST, no answer
        "status",  # answer `status` (with `retry_after` when set) without forwarding
        "truncate",  # forward, but send half the body under the full Content-Length, then close
        "invalid_json",  # forward, but replace the body with broken JSON (digest header to match)
        "body",  # forward, but replace the body with `body` (digest header to match)
        "wrong_digest",  # forward, but change the body so it no longer matches Docker-Content-Digest
        "huge",  # answer a valid 10 MiB manifest (with its own correct digest)
        "serve",  # answer `body` as a manifest of `content_type` (with its own correct digest)
        "foreign_link",  # forward, adding a Link rel="next" to `foreign_url`
        "next_link",  # forward, with `link` (relative or absolute) as the Link rel="next"
        "foreign_realm",  # answer 401 with a Bearer challenge whose realm is `foreign_url`
        "down",  # reset this connection and refuse every later one until accept_connections()
        "hook",  # call `action()` (another client acting between two requests), then forward
    }
)
HUGE_SIZE = 10 * 1024 * 1024
INVALID_JSON = b'{"schemaVersion": 2, "mediaType": "application/vnd.oci.image.manifest.v1+json", "config": {'
UPSTREAM_TIMEOUT = 30


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


@dataclass(frozen=True)
class Fault:
    """What to do to the requests matching `methods` (None: any) and the regex `path` (searched
    in the path and query); the first `after` matching requests pass untouched, and at most
    `times` of them (None: all) get the fault."""

    kind: str
    status: int = 503
    retry_after: str | None = None
    delay: float = 2.0
    foreign_url: str = ""
    link: str = ""
    body: bytes = b""
    content_type: str = "application/vnd.oci.image.manifest.v1+json"
    action: Callable[[], object] | None = None
    methods: Collection[str] | None = None
    path: str | None = None
    after: int = 0
    times: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in KINDS:
            raise ValueError(f"unknown fault {self.kind!r}: expected one of {sorted(KINDS)}")
        if self.kind in ("foreign_link", "foreign_realm") and not self.foreign_url:
            raise ValueError(f"fault {self.kind!r} needs foreign_url")
        if self.kind == "next_link" and not self.link:
            raise ValueError("fault 'next_link' needs link")
        if self.kind == "hook" and self.action is None:
            raise ValueError("fault 'hook' needs action")

    def matches(self, method: str, path: str) -> bool:
        if self.methods is not None and method not in self.methods:
            return False
        return self.path is None or re.search(self.path, path) is not None


@dataclass(frozen=True)
class Seen:
    """One request the proxy received, whether a fault hit it, and (once answered) the status
    it got: None until then, and for connections a fault cut."""

    method: str
    path: str
    faulted: bool
    body: bytes = b""
    status: int | None = None
    agent: str = ""  # the client's User-Agent


@dataclass
class _FaultState:
    fault: Fault | None = None
    matched: int = 0
    applied: int = 0
    seen: list[Seen] = field(default_factory=list)


class FaultProxy:
    """Listens on a free loopback port and forwards to `upstream` (http://host:port).

    With `serialize`, requests reach the registry one at a time in the order `seen()` lists
    them, so that list is the order in which the registry applied them."""

    def __init__(self, upstream: str, *, serialize: bool = False) -> None:
        parts = urlsplit(upstream)
        if parts.scheme != "http" or not parts.hostname or not parts.port:
            raise ValueError(f"upstream must be http://host:port, got {upstream!r}")
        self.upstream_host = parts.hostname
        self.upstream_port = parts.port
        self._lock = threading.Lock()
        self._turns: AbstractContextManager[object] = threading.Lock() if serialize else nullcontext()
        self._state = _FaultState()
        self._connections: set[socket.socket] = set()
        self._httpd: _ProxyServer | None = None
        self._thread: threading.Thread | None = None
        self.port = 0
        self.accept_connections()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Faults

    def set_fault(self, fault: Fault | None) -> None:
        """Replace the current fault (None: forward everything) and restart its counters."""
        with self._lock:
            self._state.fault = fault
            self._state.matched = 0
            self._state.applied = 0

    def clear_fault(self) -> None:
        self.set_fault(None)

    def seen(self, method: str | None = None, path: str | None = None) -> list[Seen]:
        """Requests received so far, optionally only those of `method` whose path matches the regex."""
        with self._lock:
            requests = list(self._state.seen)
        return [
            r for r in requests if (method is None or r.method == method) and (path is None or re.search(path, r.path))
        ]

    def count(self, method: str | None = None, path: str | None = None) -> int:
        return len(self.seen(method, path))

    def _decide(self, method: str, path: str, body: bytes, agent: str) -> tuple[Fault | None, int]:
        """Record the request; return the fault to apply to it, if any, and its record's index."""
        with self._lock:
            fault = self._state.fault
            apply = False
            if fault is not None and fault.matches(method, path):
                self._state.matched += 1
                within = fault.times is None or self._state.applied < fault.times
                apply = self._state.matched > fault.after and within
                self._state.applied += apply
            self._state.seen.append(Seen(method, path, apply, body, agent=agent))
            return (fault if apply else None), len(self._state.seen) - 1

    def _answered(self, index: int, status: int) -> None:
        with self._lock:
            self._state.seen[index] = replace(self._state.seen[index], status=status)

    # Listening

    def refuse_connections(self) -> None:
        """Stop listening and cut open connections: the registry looks gone (connection refused)."""
        with self._lock:
            httpd, self._httpd = self._httpd, None
            thread, self._thread = self._thread, None
            connections, self._connections = self._connections, set()
        if httpd is not None:
            httpd.shutdown()
            httpd.server_close()
        for connection in connections:
            _close(connection, reset=True)
        if thread is not None:
            thread.join()

    def accept_connections(self) -> None:
        """Listen again, on the same port once one was chosen."""
        with self._lock:
            if self._httpd is not None:
                return
            self._httpd = _ProxyServer(("127.0.0.1", self.port), self)
            self.port = self._httpd.server_port
            # A short poll interval makes refuse_connections() return quickly.
            thread = self._thread = threading.Thread(
                target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="fault-proxy", daemon=True
            )
        thread.start()

    def stop(self) -> None:
        self.refuse_connections()

    def _track(self, connection: socket.socket, opened: bool) -> None:
        with self._lock:
            if opened:
                self._connections.add(connection)
            else:
                self._connections.discard(connection)

    def _is_listening(self) -> bool:
        with self._lock:
            return self._httpd is not None


class _ProxyServer(ThreadingHTTPServer):
    daemon_threads = True
    block_on_close = False
    allow_reuse_address = True

    def __init__(self, address: tuple[str, int], proxy: FaultProxy) -> None:
        super().__init__(address, _ProxyHandler)
        self.proxy = proxy


@dataclass
class _Answer:
    status: int
    reason: str
    headers: list[tuple[str, str]]
    body: bytes

    def header(self, name: str) -> str | None:
        return next((v for k, v in self.headers if k.lower() == name.lower()), None)

    def replace_header(self, name: str, value: str | None) -> None:
        self.headers = [(k, v) for k, v in self.headers if k.lower() != name.lower()]
        if value is not None:
            self.headers.append((name, value))


class _ProxyHandler(BaseHTTPRequestHandler):
    server: _ProxyServer
    # HTTP/1.1 so the client keeps connections alive, as it would with the registry.
    protocol_version = "HTTP/1.1"
    _index: int  # of this request's Seen record

    def setup(self) -> None:
        super().setup()
        self.server.proxy._track(self.connection, opened=True)

    def finish(self) -> None:
        try:
            super().finish()
        except OSError:
            pass  # the client (or a fault) already closed the connection
        self.server.proxy._track(self.connection, opened=False)

    def handle_one_request(self) -> None:
        try:
            super().handle_one_request()
        except OSError:
            # The client gave up (timeout) or a fault reset the socket: nothing left to answer.
            self.close_connection = True

    def do_GET(self) -> None:
        self._handle()

    do_HEAD = do_POST = do_PUT = do_PATCH = do_DELETE = do_GET

    def _handle(self) -> None:
        proxy = self.server.proxy
        body = self._request_body()
        if not proxy._is_listening():
            _close(self.connection, reset=True)
            self.close_connection = True
            return
        with proxy._turns:
            self._answer(body)

    def _answer(self, body: bytes | None) -> None:
        proxy = self.server.proxy
        fault, self._index = proxy._decide(self.command, self.path, body or b"", self.headers.get("User-Agent", ""))
        kind = fault.kind if fault else None
        if fault is not None and kind in ("reset", "down"):
            if kind == "down":
                # Before the reset, so the client's next connection is already refused. Handlers
                # run on their own threads, so waiting for serve_forever to stop cannot deadlock.
                proxy.refuse_connections()
            _close(self.connection, reset=True)
            self.close_connection = True
            return
        if fault is not None and kind == "status":
            self._send(_error_answer(fault.status, fault.retry_after))
            return
        if fault is not None and kind == "foreign_realm":
            self._send(_foreign_challenge(fault.foreign_url, self.path))
            return
        if fault is not None and kind in ("huge", "serve"):
            self._send(_huge_manifest() if kind == "huge" else _manifest_answer(fault.body, fault.content_type))
            return
        if fault is not None and kind == "latency":
            time.sleep(fault.delay)
        if fault is not None and fault.action is not None:
            fault.action()
        answer = self._forward(body)
        if fault is not None:
            _mangle(answer, fault)
        self._send(answer, truncate=kind == "truncate")

    def _request_body(self) -> bytes | None:
        length = self.headers.get("Content-Length")
        if length is not None:
            return self.rfile.read(int(length))
        if self.headers.get("Transfer-Encoding", "").lower() == "chunked":
            return self._read_chunked()
        return None

    def _read_chunked(self) -> bytes:
        chunks = []
        while True:
            size = int(self.rfile.readline().split(b";", 1)[0].strip(), 16)
            if size == 0:
                # Trailer section, ended by an empty line.
                while self.rfile.readline() not in (b"\r\n", b"\n", b""):
                    pass
                return b"".join(chunks)
            chunks.append(self.rfile.read(size))
            self.rfile.readline()

    def _forward(self, body: bytes | None) -> _Answer:
        proxy = self.server.proxy
        upstream = http.client.HTTPConnection(proxy.upstream_host, proxy.upstream_port, timeout=UPSTREAM_TIMEOUT)
        try:
            # Host stays the proxy's, so the registry builds Location URLs that point back here.
            headers = {k: v for k, v in self.headers.items() if k.lower() not in HOP_BY_HOP}
            if body is not None:
                headers["Content-Length"] = str(len(body))
            upstream.request(self.command, self.path, body=body, headers=headers)
            response = upstream.getresponse()
            data = response.read()
            return _Answer(response.status, response.reason, response.getheaders(), data)
        finally:
            upstream.close()

    def _send(self, answer: _Answer, *, truncate: bool = False) -> None:
        """Send the answer; `truncate` declares the whole body, sends half of it and hangs up."""
        self.server.proxy._answered(self._index, answer.status)
        self.send_response(answer.status, answer.reason)
        for name, value in answer.headers:
            if name.lower() not in HOP_BY_HOP:
                self.send_header(name, value)
        body = answer.body
        if truncate:
            length, body = str(len(body) + 1000), body[: len(body) // 2]
        else:
            # A HEAD answer announces the length of the body a GET would have had.
            length = (answer.header("Content-Length") if self.command == "HEAD" else None) or str(len(body))
        self.send_header("Content-Length", length)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)
        self.wfile.flush()
        if truncate:
            _close(self.connection, reset=False)
            self.close_connection = True

    def log_message(self, format: str, *args: Any) -> None:
        # Tests assert on proxy.seen() instead of reading a log.
        pass


def _close(connection: socket.socket, *, reset: bool) -> None:
    try:
        if reset:
            # Linger on with a zero timeout: close() sends RST instead of a polite FIN.
            connection.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        else:
            connection.shutdown(socket.SHUT_RDWR)
        connection.close()
    except OSError:
        pass  # already closed by the other side


def _error_answer(status: int, retry_after: str | None) -> _Answer:
    code = {429: "TOOMANYREQUESTS", 401: "UNAUTHORIZED"}.get(status, "UNAVAILABLE")
    body = json.dumps({"errors": [{"code": code, "message": f"injected {status}", "detail": None}]}).encode()
    headers = [("Content-Type", "application/json; charset=utf-8")]
    if retry_after is not None:
        headers.append(("Retry-After", retry_after))
    return _Answer(status, http.client.responses.get(status, "Injected"), headers, body)


def _foreign_challenge(foreign_url: str, path: str) -> _Answer:
    repository = re.match(r"/v2/(.+?)/(?:manifests|tags|blobs)/", path)
    scope = f"repository:{repository.group(1)}:pull" if repository else "registry:catalog:*"
    answer = _error_answer(401, None)
    answer.headers.append(
        ("WWW-Authenticate", f'Bearer realm="{foreign_url.rstrip("/")}/token",service="registry",scope="{scope}"')
    )
    return answer


def _huge_manifest() -> _Answer:
    """A well-formed OCI manifest padded past 10 MiB with annotation text."""
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "digest": sha256_digest(b"{}"), "size": 2},
        "layers": [],
        "annotations": {"padding": "x" * HUGE_SIZE},
    }
    return _manifest_answer(json.dumps(manifest).encode(), "application/vnd.oci.image.manifest.v1+json")


def _manifest_answer(body: bytes, content_type: str) -> _Answer:
    """What the registry answers for a manifest, GET or HEAD (_send leaves out a HEAD's body)."""
    headers = [
        ("Content-Type", content_type),
        ("Content-Length", str(len(body))),
        ("Docker-Content-Digest", sha256_digest(body)),
        ("Docker-Distribution-Api-Version", "registry/2.0"),
    ]
    return _Answer(200, "OK", headers, body)


def _mangle(answer: _Answer, fault: Fault) -> None:
    """Change a forwarded answer in place for the content faults."""
    if fault.kind == "foreign_link":
        answer.replace_header("Link", f'<{fault.foreign_url.rstrip("/")}/v2/_catalog?last=a&n=1>; rel="next"')
    elif fault.kind == "next_link":
        answer.replace_header("Link", f'<{fault.link}>; rel="next"')
    elif fault.kind in ("invalid_json", "body"):
        answer.body = fault.body if fault.kind == "body" else INVALID_JSON
        # A matching digest, so the client gets as far as parsing (by-tag reads trust the header).
        if answer.header("Docker-Content-Digest"):
            answer.replace_header("Docker-Content-Digest", sha256_digest(answer.body))
    elif fault.kind == "wrong_digest":
        answer.body = answer.body + b"\n"


class ForeignServer:
    """Answers 200 to anything on another loopback address and counts the requests; tests
    assert it stays at 0. 127.0.0.2 is a different host name from the registry's 127.0.0.1."""

    def __init__(self, address: str = "127.0.0.2") -> None:
        self.hits: list[str] = []
        self._lock = threading.Lock()
        self._httpd = ThreadingHTTPServer((address, 0), _ForeignHandler)
        self._httpd.daemon_threads = True
        self._httpd.foreign = self  # type: ignore[attr-defined]
        self.url = f"http://{address}:{self._httpd.server_port}"
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="foreign-server", daemon=True
        )
        self._thread.start()

    @property
    def count(self) -> int:
        with self._lock:
            return len(self.hits)

    def record(self, line: str) -> None:
        with self._lock:
            self.hits.append(line)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()


class _ForeignHandler(BaseHTTPRequestHandler):
    def do_GET(self) -> None:
        line = f"{self.command} {self.path} auth={'Authorization' in self.headers}"
        self.server.foreign.record(line)  # type: ignore[attr-defined]
        body = json.dumps({"token": "foreign", "repositories": ["stolen"]}).encode()
        self.send_response(200)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    do_HEAD = do_POST = do_PUT = do_DELETE = do_GET

    def log_message(self, format: str, *args: Any) -> None:
        pass
