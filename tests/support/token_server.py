"""An in-process Docker token server (the registry's `auth.token` realm) for tests."""

from __future__ import annotations

import base64
import binascii
import collections
import datetime as dt
import hashlib
import json
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlparse

import jwt
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import NameOID


class InvalidCredentials(Exception):
    pass


def libtrust_key_id(public_key: rsa.RSAPublicKey) -> str:
    """The key ID docker/libtrust computes, which Distribution matches the JWT `kid` against.

    base32 of the first 30 bytes of sha256(DER SubjectPublicKeyInfo), in ':'-joined groups of 4.
    """
    der = public_key.public_bytes(serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo)
    encoded = base64.b32encode(hashlib.sha256(der).digest()[:30]).decode().rstrip("=")
    return ":".join(encoded[i : i + 4] for i in range(0, len(encoded), 4))


class TokenServer:
    """Issues RS256 tokens; each user gets the requested actions that are in its allowed set.

    Allowed actions are registry actions ("pull", "push", "delete") plus "catalog" for
    `registry:catalog:*`. Anonymous requests get a token with an empty access list, so the
    registry answers 401 as it would for insufficient scope.
    """

    def __init__(
        self, root: Path, users: dict[str, tuple[str, set[str]]], service: str, issuer: str, expires_in: int
    ) -> None:
        self.service = service
        self.issuer = issuer
        self.expires_in = expires_in
        self.requests: collections.Counter[tuple[str, str]] = collections.Counter()
        self._users = users
        self._lock = threading.Lock()
        self._key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
        self._key_id = libtrust_key_id(self._key.public_key())
        root.mkdir(parents=True, exist_ok=True)
        self.cert_path = root / "token.crt"
        self.cert_path.write_bytes(_self_signed_cert(self._key, issuer).public_bytes(serialization.Encoding.PEM))
        self._httpd = _TokenHTTPServer(self)
        self.realm = f"http://127.0.0.1:{self._httpd.server_port}/token"
        # A short poll interval makes stop() return quickly instead of after up to half a second.
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="token-server", daemon=True
        )
        self._thread.start()

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        self._thread.join()

    def reset_counts(self) -> None:
        with self._lock:
            self.requests.clear()

    def issue(self, username: str, password: str | None, service: str, scopes: list[str]) -> dict[str, Any]:
        """Count the request (rejected ones too) and return the token response body.

        Raises InvalidCredentials for an unknown user or a wrong password.
        """
        with self._lock:
            self.requests[(username, " ".join(sorted(scopes)))] += 1
        allowed: set[str] = set()
        if username:
            known = self._users.get(username)
            if known is None or known[0] != password:
                raise InvalidCredentials(username)
            allowed = known[1]
        access = [grant for scope in scopes if (grant := _grant(scope, allowed))]
        now = int(time.time())
        claims = {
            "iss": self.issuer,
            "sub": username,
            "aud": service,
            "exp": now + self.expires_in,
            # Slack for clock skew between this process and the registry's idea of "now".
            "nbf": now - 10,
            "iat": now,
            "jti": uuid.uuid4().hex,
            "access": access,
        }
        # Without `kid` (or `x5c`) the registry rejects the token as invalid.
        token = jwt.encode(claims, self._key, algorithm="RS256", headers={"kid": self._key_id})
        return {
            "token": token,
            "access_token": token,
            "expires_in": self.expires_in,
            "issued_at": dt.datetime.fromtimestamp(now, dt.timezone.utc).isoformat(),
        }


def start_token_server(
    root: Path,
    users: dict[str, tuple[str, set[str]]],
    *,
    service: str = "registry-test",
    issuer: str = "registry-test-issuer",
    expires_in: int = 300,
) -> TokenServer:
    """Start a token server on a free loopback port; its certificate goes to root/token.crt.

    users maps a name to (password, allowed actions), e.g. {"reader": ("pw", {"pull", "catalog"})}.
    """
    return TokenServer(root, users, service, issuer, expires_in)


def _grant(scope: str, allowed: set[str]) -> dict[str, Any] | None:
    # "repository:team/app:pull,push" or "registry:catalog:*"
    resource_type, _, rest = scope.partition(":")
    name, _, actions = rest.rpartition(":")
    if resource_type == "registry" and name == "catalog":
        granted = ["*"] if "catalog" in allowed else []
    elif resource_type == "repository":
        granted = [action for action in actions.split(",") if action in allowed]
    else:
        granted = []
    return {"type": resource_type, "name": name, "actions": granted} if granted else None


def _self_signed_cert(key: rsa.RSAPrivateKey, common_name: str) -> x509.Certificate:
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])
    now = dt.datetime.now(dt.timezone.utc)
    return (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(days=1))
        .not_valid_after(now + dt.timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )


class _TokenHTTPServer(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, token_server: TokenServer) -> None:
        super().__init__(("127.0.0.1", 0), _TokenHandler)
        self.token_server = token_server


class _TokenHandler(BaseHTTPRequestHandler):
    server: _TokenHTTPServer

    def do_GET(self) -> None:
        url = urlparse(self.path)
        if url.path != "/token":
            self._reply(404, {"errors": [{"code": "NOT_FOUND", "message": "not found"}]})
            return
        query = parse_qs(url.query)
        service = query.get("service", [""])[0]
        # A client may send several scope parameters or one holding space-separated scopes.
        scopes = [scope for value in query.get("scope", []) for scope in value.split()]
        try:
            username, password = self._basic_credentials()
            body = self.server.token_server.issue(username, password, service, scopes)
        except InvalidCredentials:
            self._reply(401, {"errors": [{"code": "UNAUTHORIZED", "message": "invalid credentials"}]})
            return
        self._reply(200, body)

    def _basic_credentials(self) -> tuple[str, str | None]:
        header = self.headers.get("Authorization", "")
        if not header:
            return "", None
        scheme, _, encoded = header.partition(" ")
        try:
            username, separator, password = base64.b64decode(encoded, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise InvalidCredentials(header) from None
        if scheme.lower() != "basic" or not separator or not username:
            raise InvalidCredentials(header)
        return username, password

    def _reply(self, status: int, body: dict[str, Any]) -> None:
        data = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        if status == 401:
            self.send_header("WWW-Authenticate", 'Basic realm="registry-test-token"')
        self.end_headers()
        self.wfile.write(data)

    def log_message(self, format: str, *args: Any) -> None:
        # Keep pytest output clean; tests assert on TokenServer.requests instead.
        pass
