"""Real registries for the test session: one per variant, started only when a test asks for it."""

from __future__ import annotations

import itertools
import re
from collections.abc import Callable, Iterator

import pytest
from hypothesis import settings as hypothesis_settings

from tests.support.deployment import manage
from tests.support.images import ImagePusher, TokenAuth
from tests.support.registry_server import RegistryServer, start_registry
from tests.support.token_server import TokenServer, start_token_server

BASIC_USERS = {"alice": "alice-pass"}
TOKEN_USERS = {
    "admin": ("admin-pass", {"pull", "push", "delete", "catalog"}),
    "reader": ("reader-pass", {"pull", "catalog"}),
}
# Distribution allows 255 characters; short names keep failure output readable.
MAX_SLUG = 40

_repo_counter = itertools.count(1)

# Property tests share a loaded 2-core machine with real registries: no per-example deadline,
# and no example database written into the work tree.
hypothesis_settings.register_profile("registry-browser", deadline=None, database=None)
hypothesis_settings.load_profile("registry-browser")


@pytest.fixture(scope="session")
def registry(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("registry"))
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry_nodelete(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("registry-nodelete"), delete_enabled=False)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def basic_credentials() -> tuple[str, str]:
    return "alice", BASIC_USERS["alice"]


@pytest.fixture(scope="session")
def registry_basic(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    server = start_registry(tmp_path_factory.mktemp("registry-basic"), auth="htpasswd", htpasswd_users=BASIC_USERS)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def admin_credentials() -> tuple[str, str]:
    """Token-registry user allowed pull, push, delete and catalog."""
    return "admin", TOKEN_USERS["admin"][0]


@pytest.fixture(scope="session")
def reader_credentials() -> tuple[str, str]:
    """Token-registry user allowed pull and catalog only."""
    return "reader", TOKEN_USERS["reader"][0]


@pytest.fixture(scope="session")
def token_server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[TokenServer]:
    server = start_token_server(tmp_path_factory.mktemp("token-server"), TOKEN_USERS)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def registry_token(tmp_path_factory: pytest.TempPathFactory, token_server: TokenServer) -> Iterator[RegistryServer]:
    server = start_registry(
        tmp_path_factory.mktemp("registry-token"),
        auth="token",
        token_realm=token_server.realm,
        token_service=token_server.service,
        token_issuer=token_server.issuer,
        token_cert=token_server.cert_path,
    )
    yield server
    server.stop()


@pytest.fixture(scope="session")
def pusher(registry: RegistryServer) -> ImagePusher:
    return ImagePusher(registry.url)


@pytest.fixture(scope="session")
def nodelete_pusher(registry_nodelete: RegistryServer) -> ImagePusher:
    return ImagePusher(registry_nodelete.url)


@pytest.fixture(scope="session")
def basic_pusher(registry_basic: RegistryServer, basic_credentials: tuple[str, str]) -> ImagePusher:
    return ImagePusher(registry_basic.url, basic_credentials)


@pytest.fixture(scope="session")
def token_pusher(registry_token: RegistryServer, admin_credentials: tuple[str, str]) -> ImagePusher:
    """Pushes as admin. Its token requests show up in token_server.requests: call
    token_server.reset_counts() after pushing if a test counts the client's requests."""
    return ImagePusher(registry_token.url, TokenAuth(*admin_credentials))


@pytest.fixture(scope="session")
def static_root(tmp_path_factory: pytest.TempPathFactory) -> str:
    """A STATIC_ROOT holding what the image's collectstatic step writes, for dashboard
    processes running with DEBUG off (their system check refuses a missing manifest)."""
    root = tmp_path_factory.mktemp("static-root")
    database_url = f"sqlite:///{root / 'unused.sqlite3'}"
    manage(database_url, "collectstatic", "--noinput", DEBUG="false", SECRET_KEY="collectstatic-" + "x" * 40, STATIC_ROOT=str(root))
    return str(root)


@pytest.fixture
def make_repo_name(request: pytest.FixtureRequest) -> Callable[..., str]:
    """Factory of repository names unique within the session, derived from the test name.

    The prefix is prepended as-is, so "team-a/" gives a nested name.
    """

    def make(prefix: str = "") -> str:
        test_name = request.node.name.removeprefix("test_")
        slug = re.sub(r"[^a-z0-9]+", "-", test_name.lower()).strip("-")
        return f"{prefix}t{next(_repo_counter)}-{slug[:MAX_SLUG]}".rstrip("-")

    return make


@pytest.fixture
def repo_name(make_repo_name: Callable[..., str]) -> str:
    return make_repo_name("")
