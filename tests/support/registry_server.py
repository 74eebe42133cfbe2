"""Run a real Docker Distribution 2.8 process (`/usr/bin/docker-registry`) for tests."""

from __future__ import annotations

import os
import secrets
import signal
import socket
import subprocess
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import bcrypt
import requests
import yaml

REGISTRY_BIN = Path("/usr/bin/docker-registry")
MISSING_BINARY = (
    f"{REGISTRY_BIN} not found: install the Debian package docker-registry (make test does this)"
)
STARTUP_TIMEOUT = 10.0


def free_port() -> int:
    """Return a loopback TCP port that was free a moment ago."""
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def write_registry_config(
    *,
    addr: str,
    storage_dir: str | Path,
    delete_enabled: bool = True,
    auth_config: dict[str, dict[str, str]] | None = None,
    notify_url: str | None = None,
    notify_headers: dict[str, str] | None = None,
    secret: str | None = None,
) -> str:
    """Return the YAML text of a Distribution 2.8 config.

    `auth_config` is the `auth:` block as-is, e.g. {"htpasswd": {"realm": ..., "path": ...}}.
    """
    config: dict[str, Any] = {
        "version": "0.1",
        # Quiet: the log only matters when a registry fails to start or misbehaves.
        "log": {"level": "warn", "formatter": "text", "accesslog": {"disabled": True}},
        "storage": {
            "filesystem": {"rootdirectory": str(storage_dir)},
            "delete": {"enabled": delete_enabled},
            # Purging runs in the background and would race with tests that inspect uploads.
            "maintenance": {"uploadpurging": {"enabled": False}},
            "cache": {"blobdescriptor": "inmemory"},
        },
        "http": {
            "addr": addr,
            "secret": secret or secrets.token_hex(24),
            "headers": {"X-Content-Type-Options": ["nosniff"]},
        },
    }
    if auth_config:
        config["auth"] = auth_config
    if notify_url:
        config["notifications"] = {
            "events": {"includereferences": True},
            "endpoints": [
                {
                    "name": "dashboard",
                    "url": notify_url,
                    "headers": {name: [value] for name, value in (notify_headers or {}).items()},
                    "timeout": "2s",
                    "threshold": 3,
                    "backoff": "1s",
                    # 2.8.2 only honours ignore.actions when ignoredmediatypes is non-empty, and
                    # without it every HEAD a sync makes comes back as a "pull" event.
                    "ignoredmediatypes": ["application/x-registry-browser-none"],
                    "ignore": {"actions": ["pull"]},
                }
            ],
        }
    return yaml.safe_dump(config, sort_keys=False)


@dataclass
class RegistryServer:
    """A registry process bound to one port and one storage directory for its whole life."""

    url: str
    port: int
    root: Path
    _process: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    @property
    def host(self) -> str:
        return f"127.0.0.1:{self.port}"

    @property
    def config_path(self) -> Path:
        return self.root / "config.yml"

    @property
    def log_path(self) -> Path:
        return self.root / "registry.log"

    def start(self) -> None:
        """Start (or start again) on the same port and storage, and wait until /v2/ answers."""
        if self._process is not None:
            raise RuntimeError(f"registry on {self.host} is already running")
        with self.log_path.open("ab") as log:
            # Own session, so a Ctrl-C aimed at pytest does not kill the registry before
            # fixtures get to stop it in order.
            self._process = subprocess.Popen(
                [str(REGISTRY_BIN), "serve", str(self.config_path)],
                stdin=subprocess.DEVNULL,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        self._wait_until_ready()

    def stop(self) -> None:
        if self._process is None:
            return
        process, self._process = self._process, None
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGTERM)
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(process.pid, signal.SIGKILL)
                process.wait()

    def restart(self) -> None:
        self.stop()
        self.start()

    def garbage_collect(self, delete_untagged: bool = False) -> str:
        """Run offline garbage collection and return its output.

        The registry is stopped first because GC works on storage directly, and started
        again afterwards because its in-memory blob cache would still serve deleted blobs.
        """
        command = [str(REGISTRY_BIN), "garbage-collect", str(self.config_path)]
        if delete_untagged:
            command.append("--delete-untagged")
        self.stop()
        try:
            result = subprocess.run(command, capture_output=True, text=True, timeout=60)
        finally:
            self.start()
        output = result.stdout + result.stderr
        if result.returncode != 0:
            raise RuntimeError(f"garbage-collect failed ({result.returncode}):\n{output}")
        return output

    def _wait_until_ready(self) -> None:
        assert self._process is not None
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline:
            if self._process.poll() is not None:
                self._process = None
                raise RuntimeError(f"registry on {self.host} exited at startup:\n{self._log_tail()}")
            try:
                status = requests.get(f"{self.url}/v2/", timeout=1).status_code
            except requests.ConnectionError:
                status = None
            if status in (200, 401):
                return
            time.sleep(0.05)
        self.stop()
        raise RuntimeError(f"registry on {self.host} did not answer within {STARTUP_TIMEOUT}s:\n{self._log_tail()}")

    def _log_tail(self, lines: int = 30) -> str:
        return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])


def start_registry(
    root: Path,
    *,
    auth: str = "none",
    delete_enabled: bool = True,
    htpasswd_users: dict[str, str] | None = None,
    token_realm: str | None = None,
    token_service: str = "registry-test",
    token_issuer: str = "registry-test-issuer",
    token_cert: Path | None = None,
    notify_url: str | None = None,
    notify_headers: dict[str, str] | None = None,
    port: int | None = None,
) -> RegistryServer:
    """Write root/config.yml (storage in root/storage) and start a registry with it.

    auth is "none", "htpasswd" (needs htpasswd_users) or "token" (needs token_realm and
    token_cert, the token server's certificate).
    """
    if not REGISTRY_BIN.exists():
        raise FileNotFoundError(MISSING_BINARY)
    root.mkdir(parents=True, exist_ok=True)
    port = port or free_port()
    config = write_registry_config(
        addr=f"127.0.0.1:{port}",
        storage_dir=root / "storage",
        delete_enabled=delete_enabled,
        auth_config=_auth_config(root, auth, htpasswd_users, token_realm, token_service, token_issuer, token_cert),
        notify_url=notify_url,
        notify_headers=notify_headers,
    )
    server = RegistryServer(url=f"http://127.0.0.1:{port}", port=port, root=root)
    server.config_path.write_text(config)
    server.start()
    return server


def _auth_config(
    root: Path,
    auth: str,
    htpasswd_users: dict[str, str] | None,
    token_realm: str | None,
    token_service: str,
    token_issuer: str,
    token_cert: Path | None,
) -> dict[str, dict[str, str]] | None:
    if auth == "none":
        return None
    if auth == "htpasswd":
        if not htpasswd_users:
            raise ValueError("auth='htpasswd' needs htpasswd_users")
        htpasswd = root / "htpasswd"
        # Cost 5: the registry runs bcrypt on every request, and the default cost 12
        # slows it to a few requests per second.
        htpasswd.write_text(
            "".join(
                f"{user}:{bcrypt.hashpw(password.encode(), bcrypt.gensalt(rounds=5)).decode()}\n"
                for user, password in htpasswd_users.items()
            )
        )
        return {"htpasswd": {"realm": "registry-test", "path": str(htpasswd)}}
    if auth == "token":
        if not token_realm or not token_cert:
            raise ValueError("auth='token' needs token_realm and token_cert")
        return {
            "token": {
                "realm": token_realm,
                "service": token_service,
                "issuer": token_issuer,
                "rootcertbundle": str(token_cert),
            }
        }
    raise ValueError(f"unknown auth {auth!r}: expected 'none', 'htpasswd' or 'token'")
