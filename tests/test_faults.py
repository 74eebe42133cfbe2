"""The registry misbehaving, through a fault proxy in front of the real registry.

Client level: every fault surfaces as the documented error type (retried where retrying is
right). Dashboard level: pages keep answering from the cache, actions fail cleanly and change
nothing, a failed sync leaves the cache as it was, and no foreign host is ever contacted.
"""

from __future__ import annotations

import queue
import subprocess
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from django.core.management import CommandError, call_command
from django.test import Client
from django.urls import reverse

from dashboard.models import AuditEntry, Manifest, Registry, Repository, Tag, TagHistory
from dashboard.registries import client_for, configured_registry
from dashboard.registry import (
    DigestMismatch,
    InvalidResponse,
    RateLimited,
    RegistryClient,
    Unauthorized,
    Unavailable,
)
from dashboard.sync import sync_registry
from tests.personas import make_user
from tests.support.fault_proxy import Fault, FaultProxy, ForeignServer, sha256_digest
from tests.support.images import ImagePusher, PushedImage
from tests.support.registry_server import RegistryServer, start_registry
from tests.support.serving import serving

# Short, so faults that make the client wait (latency) keep the tests fast.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 0.5
MANIFEST = r"/manifests/"
TAGS = r"/tags/list$"


@pytest.fixture(scope="module")
def upstream(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RegistryServer]:
    """A registry of this module's own, so full syncs only walk this module's repositories."""
    server = start_registry(tmp_path_factory.mktemp("fault-registry"))
    yield server
    server.stop()


@pytest.fixture(scope="module")
def upstream_pusher(upstream: RegistryServer) -> ImagePusher:
    """Pushes straight to the registry, never through the proxy."""
    return ImagePusher(upstream.url)


@pytest.fixture
def proxy(upstream: RegistryServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(upstream.url)
    yield proxy
    proxy.stop()


@pytest.fixture
def foreign() -> Iterator[ForeignServer]:
    server = ForeignServer()
    yield server
    server.stop()


@pytest.fixture
def image(upstream_pusher: ImagePusher, repo_name: str) -> PushedImage:
    # A second repository, so the catalog always has a next page at page size 1.
    upstream_pusher.push_image(f"{repo_name}/sibling", layers=1)
    return upstream_pusher.push_image(repo_name, ["1.0", "latest"], labels={"team": "faults"})


def client_via(proxy: FaultProxy, **kwargs: object) -> RegistryClient:
    options: dict = {"timeout": (CONNECT_TIMEOUT, READ_TIMEOUT), "retries": 1} | kwargs
    return RegistryClient(proxy.url, **options)


# The proxy itself --------------------------------------------------------------------------


def test_normal_mode_is_transparent(proxy: FaultProxy, image: PushedImage, upstream_pusher: ImagePusher) -> None:
    client = client_via(proxy)
    repository = image.repository

    assert sorted(client.tags(repository)) == ["1.0", "latest"]
    head = client.head_manifest(repository, "1.0")
    fetched = client.get_manifest(repository, "latest")
    config = client.get_config(repository, image.config_digest)
    # Two catalog pages of one repository each: the relative Link header crossed the proxy.
    pages = client.catalog_pages(page_size=1)
    first_pages = [next(pages), next(pages)]
    client.delete_tag(repository, "1.0", image.digest)

    assert (head.digest, head.media_type, head.size) == (image.digest, image.media_type, len(image.raw))
    assert fetched.raw == image.raw and fetched.digest == image.digest
    assert config.labels == {"team": "faults"}
    assert all(len(page) == 1 for page in first_pages) and first_pages[0] != first_pages[1]
    assert upstream_pusher.tags(repository) == ["latest"]
    assert upstream_pusher.head_digest(repository, "latest") == image.digest
    assert not any(seen.faulted for seen in proxy.seen())


def test_credentials_and_challenges_cross_the_proxy(
    registry_basic: RegistryServer, basic_pusher: ImagePusher, basic_credentials: tuple[str, str], repo_name: str
) -> None:
    basic_pusher.push_image(repo_name, ["1.0"])
    proxy = FaultProxy(registry_basic.url)
    try:
        username, password = basic_credentials
        assert client_via(proxy, username=username, password=password).tags(repo_name) == ["1.0"]
        with pytest.raises(Unauthorized):
            client_via(proxy).tags(repo_name)
    finally:
        proxy.stop()


def test_a_fault_only_hits_matching_requests_after_the_allowance(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy, retries=0)
    proxy.set_fault(Fault("status", status=500, methods={"HEAD"}, after=1, times=1))

    client.head_manifest(image.repository, "1.0")  # the allowance
    client.tags(image.repository)  # not a HEAD
    with pytest.raises(Unavailable):
        client.head_manifest(image.repository, "1.0")
    client.head_manifest(image.repository, "1.0")  # `times` used up

    assert [(seen.method, seen.faulted) for seen in proxy.seen()] == [
        ("HEAD", False),
        ("GET", False),
        ("HEAD", True),
        ("HEAD", False),
    ]


# Client: transient answers and retries ------------------------------------------------------


@pytest.mark.parametrize("status", [502, 503, 504])
@pytest.mark.parametrize("method", ["GET", "HEAD"])
def test_gateway_errors_on_reads_are_retried_then_raise_unavailable(
    proxy: FaultProxy, image: PushedImage, status: int, method: str
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("status", status=status, methods={method}))

    with pytest.raises(Unavailable) as raised:
        if method == "GET":
            client.tags(image.repository)
        else:
            client.head_manifest(image.repository, "1.0")

    assert raised.value.status == status
    assert proxy.count(method) == 2  # the request and the one retry configured


def test_one_transient_503_is_absorbed_by_the_retry(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("status", status=503, path=MANIFEST, times=1))

    fetched = client.get_manifest(image.repository, "latest")

    assert fetched.digest == image.digest
    assert [seen.faulted for seen in proxy.seen("GET", MANIFEST)] == [True, False]


@pytest.mark.parametrize("retry_after", [None, "1"])
def test_rate_limiting_is_retried_then_raises_rate_limited(
    proxy: FaultProxy, image: PushedImage, retry_after: str | None
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("status", status=429, retry_after=retry_after, path=TAGS))

    with pytest.raises(RateLimited) as raised:
        client.tags(image.repository)

    assert raised.value.status == 429
    assert raised.value.retry_after == (None if retry_after is None else 1.0)
    assert proxy.count("GET", TAGS) == 2


def test_a_500_on_a_read_is_retried(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("status", status=500, times=1))

    assert client.get_manifest(image.repository, "latest").digest == image.digest
    assert proxy.count("GET") == 2


def test_a_lasting_500_ends_as_unavailable_after_the_retries(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy, retries=2)
    proxy.set_fault(Fault("status", status=500))

    with pytest.raises(Unavailable):
        client.get_manifest(image.repository, "latest")

    assert proxy.count("GET") == 3


@pytest.mark.parametrize("status", [429, 500, 502, 503])
def test_writes_are_never_retried(
    proxy: FaultProxy, image: PushedImage, upstream_pusher: ImagePusher, status: int
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("status", status=status, methods={"PUT", "DELETE"}))

    with pytest.raises((Unavailable, RateLimited)):
        client.delete_manifest(image.repository, image.digest)
    with pytest.raises((Unavailable, RateLimited)):
        client.put_manifest(image.repository, "copy", image.raw, image.media_type)

    assert proxy.count("DELETE") == 1
    assert proxy.count("PUT") == 1
    assert upstream_pusher.tags(image.repository) == ["1.0", "latest"]


# Client: broken connections -----------------------------------------------------------------


def test_an_answer_slower_than_the_read_timeout_is_unavailable(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("latency", delay=READ_TIMEOUT * 4, path=TAGS))

    with pytest.raises(Unavailable, match="did not answer in time"):
        client.tags(image.repository)

    assert proxy.count("GET", TAGS) == 2  # a read timeout on a GET is retried once


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_reset_connection_is_unavailable_and_only_reads_are_retried(
    proxy: FaultProxy, image: PushedImage, upstream_pusher: ImagePusher, method: str
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("reset", methods={method}))

    with pytest.raises(Unavailable):
        if method == "GET":
            client.get_manifest(image.repository, "latest")
        else:
            client.delete_manifest(image.repository, image.digest)

    assert proxy.count(method) == (2 if method == "GET" else 1)
    assert upstream_pusher.head_digest(image.repository, "latest") == image.digest


# A broken answer to a manifest GET: (the fault, the error, what its message says).
MANIFEST_FAULTS: dict[str, tuple[Fault, type[Exception], str]] = {
    "truncated body": (Fault("truncate", methods={"GET"}, path=MANIFEST), Unavailable, "connection broke"),
    "10 MiB manifest": (Fault("huge", methods={"GET"}, path=MANIFEST), InvalidResponse, "too large"),
    "invalid JSON": (Fault("invalid_json", methods={"GET"}, path=MANIFEST), InvalidResponse, "not valid JSON"),
}


@pytest.mark.parametrize("fault_name", MANIFEST_FAULTS)
def test_a_broken_manifest_answer_raises_its_error(proxy: FaultProxy, image: PushedImage, fault_name: str) -> None:
    fault, error, message = MANIFEST_FAULTS[fault_name]
    client = client_via(proxy)
    proxy.set_fault(fault)

    with pytest.raises(error, match=message):
        client.get_manifest(image.repository, "latest")
    assert proxy.count("GET", MANIFEST) == 1  # a broken body is not retried


def test_a_registry_that_disappears_mid_listing_is_unavailable_and_comes_back(
    proxy: FaultProxy, image: PushedImage
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("down", path=r"/_catalog", after=1))
    pages = client.catalog_pages(page_size=1)

    assert len(next(pages)) == 1
    with pytest.raises(Unavailable):
        next(pages)
    with pytest.raises(Unavailable, match="Cannot connect"):
        client.tags(image.repository)

    proxy.clear_fault()
    proxy.accept_connections()
    assert sorted(client.tags(image.repository)) == ["1.0", "latest"]


# Client: content that must not be trusted ---------------------------------------------------


def test_invalid_json_lists_and_configs_are_invalid_responses(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("invalid_json", methods={"GET"}))

    with pytest.raises(InvalidResponse):
        client.tags(image.repository)
    with pytest.raises(InvalidResponse):
        next(client.catalog())
    # The config is fetched by digest: its broken bytes no longer match it.
    with pytest.raises(DigestMismatch):
        client.get_config(image.repository, image.config_digest)


@pytest.mark.parametrize("reference", ["latest", "digest"])
def test_manifest_bytes_not_matching_their_digest_are_refused(
    proxy: FaultProxy, image: PushedImage, reference: str
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("wrong_digest", methods={"GET"}, path=MANIFEST))

    with pytest.raises(DigestMismatch) as raised:
        client.get_manifest(image.repository, image.digest if reference == "digest" else reference)

    assert raised.value.expected == image.digest


def test_a_next_page_on_another_host_is_not_followed(
    proxy: FaultProxy, foreign: ForeignServer, image: PushedImage
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("foreign_link", foreign_url=foreign.url, path=r"/_catalog"))

    with pytest.raises(InvalidResponse, match="another host"):
        list(client.catalog(page_size=1))

    assert foreign.count == 0


def test_a_catalog_whose_links_go_round_is_an_error_not_a_short_catalog(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    # Page A (`?n=1`) links on to page B (`?last=…&n=1`); B's link leads back to A.
    proxy.set_fault(Fault("next_link", link="/v2/_catalog?n=1", path=r"[?&]last="))

    with pytest.raises(InvalidResponse, match="loop"):
        list(client.catalog(page_size=1))

    assert proxy.count("GET", r"/_catalog") == 2


@pytest.mark.parametrize("credentials", [None, ("alice", "secret")])
def test_a_token_realm_on_another_host_gets_no_request(
    proxy: FaultProxy, foreign: ForeignServer, image: PushedImage, credentials: tuple[str, str] | None
) -> None:
    username, password = credentials or (None, None)
    client = client_via(proxy, username=username, password=password)
    proxy.set_fault(Fault("foreign_realm", foreign_url=foreign.url))

    with pytest.raises(InvalidResponse, match="on another host"):
        client.tags(image.repository)
    with pytest.raises(InvalidResponse):
        list(client.catalog())

    assert foreign.count == 0


class _StorageRedirect(BaseHTTPRequestHandler):
    """A registry front on S3-like storage: Basic auth, then a 307 to a pre-signed URL on the
    storage host (`server.storage`) for every blob GET. Records the Authorization it received."""

    server: ThreadingHTTPServer

    def do_GET(self) -> None:
        authorization = self.headers.get("Authorization")
        self.server.received.append(authorization)  # type: ignore[attr-defined]
        if authorization is None:
            self.send_response(401)
            self.send_header("WWW-Authenticate", 'Basic realm="registry"')
        else:
            self.send_response(307)
            storage = self.server.storage  # type: ignore[attr-defined]
            self.send_header("Location", f"{storage}/bucket/blob?X-Amz-Signature=signed")
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def storage_redirect(foreign: ForeignServer) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _StorageRedirect)
    server.daemon_threads = True
    server.storage, server.received = foreign.url, []  # type: ignore[attr-defined]
    with serving(server):
        yield server


def test_a_blob_redirect_to_storage_is_followed_without_our_credentials(
    storage_redirect: ThreadingHTTPServer, foreign: ForeignServer
) -> None:
    stored = requests.get(f"{foreign.url}/probe", timeout=5).content  # what the storage host serves
    client = RegistryClient(f"http://127.0.0.1:{storage_redirect.server_port}", username="alice", password="secret")

    blob = client.get_blob("team/app", sha256_digest(stored))
    with pytest.raises(DigestMismatch):
        client.get_blob("team/app", sha256_digest(b"the bytes we asked for"))

    assert blob == stored
    first, answered = storage_redirect.received[:2]  # type: ignore[attr-defined]
    assert first is None and answered.startswith("Basic ")
    # The storage host got the pre-signed URL and never the registry's Authorization header.
    assert foreign.hits[1:] == ["GET /bucket/blob?X-Amz-Signature=signed auth=False"] * 2


class _BlobRedirects(BaseHTTPRequestHandler):
    """A registry front whose blob GETs are redirected `server.redirects` times in all: through
    /hop/1, /hop/2 … on itself, then to the storage host. Each redirect carries a body of
    `server.padding` bytes; how much of it went out before the client hung up is put on
    `server.sent`."""

    server: ThreadingHTTPServer
    protocol_version = "HTTP/1.1"

    def do_GET(self) -> None:
        server = self.server
        step = int(self.path.rpartition("/hop/")[2]) if "/hop/" in self.path else 0
        last = step + 1 == server.redirects  # type: ignore[attr-defined]
        storage = f"{server.storage}/bucket/blob?X-Amz-Signature=signed"  # type: ignore[attr-defined]
        self.send_response(307)
        self.send_header("Location", storage if last else f"/hop/{step + 1}")
        self.send_header("Content-Length", str(server.padding))  # type: ignore[attr-defined]
        self.end_headers()
        sent, chunk = 0, b"x" * (1024 * 1024)
        try:
            while sent < server.padding:  # type: ignore[attr-defined]
                self.wfile.write(chunk)
                sent += len(chunk)
        except OSError:
            self.close_connection = True  # the client hung up
        server.sent.put(sent)  # type: ignore[attr-defined]

    def log_message(self, format: str, *args: object) -> None:
        pass


@pytest.fixture
def blob_redirects(foreign: ForeignServer) -> Iterator[ThreadingHTTPServer]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _BlobRedirects)
    server.daemon_threads = True
    server.storage, server.redirects, server.padding, server.sent = foreign.url, 1, 0, queue.Queue()  # type: ignore[attr-defined]
    with serving(server):
        yield server


def test_a_redirect_body_is_read_only_up_to_the_blob_size_cap(
    blob_redirects: ThreadingHTTPServer, foreign: ForeignServer
) -> None:
    stored = requests.get(f"{foreign.url}/probe", timeout=5).content
    padding = blob_redirects.padding = 64 * 1024 * 1024  # type: ignore[attr-defined]
    client = RegistryClient(f"http://127.0.0.1:{blob_redirects.server_port}")

    assert client.get_blob("team/app", sha256_digest(stored), max_bytes=1024 * 1024) == stored

    # requests read all 64 MiB of the redirect's body; now the client stops at the 1 MiB cap
    # (what else went out sat in the sockets' buffers when it hung up).
    assert blob_redirects.sent.get(timeout=30) < padding // 4  # type: ignore[attr-defined]
    assert foreign.hits[1:] == ["GET /bucket/blob?X-Amz-Signature=signed auth=False"]


def test_blob_redirects_are_followed_three_times_at_most(blob_redirects: ThreadingHTTPServer, foreign: ForeignServer) -> None:
    stored = requests.get(f"{foreign.url}/probe", timeout=5).content
    client = RegistryClient(f"http://127.0.0.1:{blob_redirects.server_port}")

    blob_redirects.redirects = 3  # type: ignore[attr-defined]
    assert client.get_blob("team/app", sha256_digest(stored)) == stored
    blob_redirects.redirects = 4  # type: ignore[attr-defined]
    with pytest.raises(InvalidResponse, match="redirected more than 3 times"):
        client.get_blob("team/app", sha256_digest(stored))

    assert client.request_counts["get_blob"] == 4 + 4
    assert foreign.hits[1:] == ["GET /bucket/blob?X-Amz-Signature=signed auth=False"]


# Dashboard: refresh and pages ---------------------------------------------------------------

FaultFactory = Callable[[str], Fault]  # the foreign server's URL -> the fault

# Faults a refresh runs into. A new tag is waiting in the registry, so a refresh that got
# through would change the cache; each fault must stop it somewhere along the way.
REFRESH_FAULTS: dict[str, FaultFactory] = {
    "503 on everything": lambda foreign: Fault("status", status=503),
    "429 with Retry-After": lambda foreign: Fault("status", status=429, retry_after="1"),
    "500 on manifests": lambda foreign: Fault("status", status=500, path=MANIFEST),
    "connection reset": lambda foreign: Fault("reset"),
    "slower than the read timeout": lambda foreign: Fault("latency", delay=2.5),
    "truncated manifest": lambda foreign: Fault("truncate", methods={"GET"}, path=MANIFEST),
    "invalid JSON tag list": lambda foreign: Fault("invalid_json", methods={"GET"}, path=TAGS),
    "manifest not matching its digest": lambda foreign: Fault("wrong_digest", methods={"GET"}, path=MANIFEST),
    "10 MiB manifest": lambda foreign: Fault("huge", methods={"GET"}, path=MANIFEST),
    "registry gone after the catalog": lambda foreign: Fault("down", path=TAGS),
    "token realm on another host": lambda foreign: Fault("foreign_realm", foreign_url=foreign),
}


@dataclass
class Scene:
    """The dashboard reading the registry through the proxy (with timeouts that keep faults
    quick), an admin signed in to `client`, and the test's own repository name."""

    cache: Registry
    proxy: FaultProxy
    pusher: ImagePusher  # straight to the registry
    repository: str
    client: Client

    def sync(self, repository: str | None = None) -> None:
        """Sync in normal mode: the whole catalog, or one repository."""
        sync_registry(self.cache, client_for(self.cache), repository=repository)


@pytest.fixture
def scene(
    db: None, settings, proxy: FaultProxy, upstream_pusher: ImagePusher, repo_name: str, client: Client
) -> Scene:
    settings.REGISTRY_URL = proxy.url
    settings.REGISTRY_CONNECT_TIMEOUT = 1
    settings.REGISTRY_READ_TIMEOUT = 1
    settings.REGISTRY_RETRIES = 1
    client.force_login(make_user("ops-admin", superuser=True))
    return Scene(configured_registry(), proxy, upstream_pusher, repo_name, client)


def cache_snapshot() -> dict[str, list]:
    """Every cached row, without the bookkeeping every sync run touches (last seen, last synced,
    last error)."""
    return {
        "repositories": list(
            Repository.objects.order_by("pk").values_list("pk", "name", "tag_count", "total_size", "last_pushed_at")
        ),
        "manifests": list(
            Manifest.objects.order_by("pk").values_list(
                "pk", "repository_id", "digest", "kind", "size", "created", "config", "missing_since", "fetch_error"
            )
        ),
        "tags": list(Tag.objects.order_by("pk").values_list("pk", "repository_id", "name", "manifest_id", "pointed_at")),
        "history": list(
            TagHistory.objects.order_by("pk").values_list("pk", "tag", "digest", "since", "until", "started_by", "ended_by")
        ),
    }


def page_urls(repository: str, tag: str, digest: str) -> list[str]:
    return [
        reverse("dashboard:catalog"),
        reverse("dashboard:repository", args=[repository]),
        reverse("dashboard:tag", args=[repository, tag]),
        reverse("dashboard:manifest", args=[repository, digest]),
    ]


@pytest.mark.parametrize("fault_name", REFRESH_FAULTS)
def test_a_refresh_during_a_fault_changes_nothing_and_every_page_still_answers(
    fault_name: str, scene: Scene, foreign: ForeignServer
) -> None:
    name = scene.repository
    image = scene.pusher.push_image(name, ["1.0", "latest"])
    scene.sync()
    # Unique bytes: a digest cached for another repository would be copied, not fetched.
    scene.pusher.push_image(name, ["2.0"], unique=name)
    before = cache_snapshot()
    scene.proxy.set_fault(REFRESH_FAULTS[fault_name](foreign.url))

    catalog_refresh = scene.client.post(reverse("dashboard:catalog-refresh"), follow=True)
    repository_refresh = scene.client.post(reverse("dashboard:repository-refresh", args=[name]), follow=True)
    fragment_refresh = scene.client.post(
        reverse("dashboard:repository-refresh", args=[name]), HTTP_HX_REQUEST="true", HTTP_HX_TARGET="tag-results"
    )

    for response in (catalog_refresh, repository_refresh, fragment_refresh):
        assert response.status_code == 200
        assert "Showing the data cached before" in response.content.decode()
    assert cache_snapshot() == before
    assert Repository.objects.get(registry=scene.cache, name=name).last_sync_error
    for url in page_urls(name, "1.0", image.digest):
        page = scene.client.get(url)
        assert page.status_code == 200, url
        assert name in page.content.decode()
    repository_page = scene.client.get(reverse("dashboard:repository", args=[name])).content.decode()
    assert "The last sync of this repository failed" in repository_page
    assert foreign.count == 0


def test_a_catalog_link_to_another_host_stops_the_refresh_there(scene: Scene, foreign: ForeignServer) -> None:
    scene.pusher.push_image(scene.repository, ["1.0"])
    scene.sync()
    scene.pusher.push_image(f"{scene.repository}/new", ["1.0"])
    before = cache_snapshot()
    scene.proxy.set_fault(Fault("foreign_link", foreign_url=foreign.url, path=r"/_catalog"))

    response = scene.client.post(reverse("dashboard:catalog-refresh"), follow=True)

    assert response.status_code == 200
    assert "another host" in response.content.decode()
    assert cache_snapshot() == before
    assert foreign.count == 0


def test_a_catalog_link_loop_stops_the_refresh_and_prunes_nothing(scene: Scene) -> None:
    scene.pusher.push_image(scene.repository, ["1.0"])
    scene.sync()
    scene.pusher.push_image(f"{scene.repository}/new", ["1.0"])
    before = cache_snapshot()
    # Every catalog page links on to one that lists nothing and links to itself: read as the
    # end of the catalog, the walk would look complete and the sync would prune from it.
    scene.proxy.set_fault(Fault("next_link", link="/v2/_catalog?last=zzzz&n=1000", path=r"/_catalog"))

    response = scene.client.post(reverse("dashboard:catalog-refresh"), follow=True)

    assert response.status_code == 200
    assert "go round in a loop" in response.content.decode()
    assert cache_snapshot() == before


# Dashboard: actions -------------------------------------------------------------------------

# Faults an action runs into; None takes the registry away altogether.
ACTION_FAULTS: dict[str, Fault | None] = {
    "503 on writes": Fault("status", status=503, methods={"PUT", "DELETE", "POST"}),
    "connection reset": Fault("reset"),
    "registry gone": None,
}


def apply_fault(proxy: FaultProxy, fault: Fault | None) -> None:
    if fault is None:
        proxy.refuse_connections()
    else:
        proxy.set_fault(fault)


def failed_audits(repository: str, action: str) -> list[AuditEntry]:
    return list(AuditEntry.objects.filter(repository=repository, action=action, outcome=AuditEntry.Outcome.FAILED))


@pytest.mark.parametrize("fault_name", ACTION_FAULTS)
def test_a_tag_delete_the_registry_fails_changes_nothing_and_is_audited(fault_name: str, scene: Scene) -> None:
    name = scene.repository
    image = scene.pusher.push_image(name, ["1.0", "latest"])
    scene.sync(name)
    before = cache_snapshot()
    apply_fault(scene.proxy, ACTION_FAULTS[fault_name])

    response = scene.client.post(reverse("dashboard:delete-tag", args=[name, "1.0"]), {"digest": image.digest})

    assert response.status_code == 502
    assert "registry" in response.content.decode().lower()
    assert scene.pusher.tags(name) == ["1.0", "latest"]
    assert scene.pusher.head_digest(name, "1.0") == image.digest
    assert cache_snapshot() == before
    assert len(failed_audits(name, "delete_tag")) == 1


@pytest.mark.parametrize("fault_name", ACTION_FAULTS)
def test_a_restore_the_registry_fails_changes_nothing_and_is_audited(fault_name: str, scene: Scene) -> None:
    name = scene.repository
    old = scene.pusher.push_image(name, ["latest"], unique="old")
    scene.sync(name)
    new = scene.pusher.push_image(name, ["latest"], unique="new")
    scene.sync(name)
    before = cache_snapshot()
    apply_fault(scene.proxy, ACTION_FAULTS[fault_name])

    response = scene.client.post(
        reverse("dashboard:restore", args=[name]), {"tag": "latest", "digest": old.digest, "expected": new.digest}
    )

    assert response.status_code == 502
    assert "registry" in response.content.decode().lower()
    assert scene.pusher.head_digest(name, "latest") == new.digest
    assert cache_snapshot() == before
    assert len(failed_audits(name, "restore")) == 1


def test_a_tag_delete_failing_at_its_last_step_leaves_the_tag_where_it_was(scene: Scene) -> None:
    """Distribution 2.8 cannot delete a tag: the client moves it onto a throwaway manifest and
    deletes that by digest. When that last DELETE fails, the tag must not be left on the
    throwaway manifest."""
    name = scene.repository
    image = scene.pusher.push_image(name, ["1.0", "latest"])
    scene.sync(name)
    scene.proxy.set_fault(Fault("status", status=503, methods={"DELETE"}, path=r"/manifests/sha256:"))

    response = scene.client.post(reverse("dashboard:delete-tag", args=[name, "1.0"]), {"digest": image.digest})

    assert response.status_code == 502
    assert scene.pusher.head_digest(name, "1.0") == image.digest
    assert len(failed_audits(name, "delete_tag")) == 1


def test_a_tag_delete_cut_off_after_its_tombstone_is_finished_by_the_retry(
    scene: Scene, upstream: RegistryServer
) -> None:
    """The registry goes away between the tombstone PUT and its DELETE, so putting the tag back
    fails too: the tag is left on the tombstone. The sync must not cache the tombstone, and
    deleting the tag again (with the digest the page still shows) finishes the delete."""
    name = scene.repository
    image = scene.pusher.push_image(name, ["1.0", "latest"])
    scene.sync()
    before = cache_snapshot()
    url = reverse("dashboard:delete-tag", args=[name, "1.0"])
    scene.proxy.set_fault(Fault("down", methods={"DELETE"}, path=r"/manifests/sha256:"))

    assert scene.client.post(url, {"digest": image.digest}).status_code == 502

    tombstone = scene.pusher.head_digest(name, "1.0")
    assert tombstone not in (None, image.digest)
    assert len(failed_audits(name, "delete_tag")) == 1
    scene.proxy.clear_fault()
    scene.proxy.accept_connections()
    scene.sync()
    # The tag still shows where it was; the tombstone is no version, size or rollback target.
    assert cache_snapshot() == before
    assert not Manifest.objects.filter(digest=tombstone).exists()
    assert scene.client.get(reverse("dashboard:tag", args=[name, "1.0"])).status_code == 200

    retry = scene.client.post(url, {"digest": image.digest}, follow=True)

    assert retry.status_code == 200
    assert "finished an earlier delete" in retry.content.decode()
    assert scene.pusher.tags(name) == ["latest"]
    assert scene.pusher.head_digest(name, tombstone) is None
    assert scene.pusher.head_digest(name, "latest") == image.digest
    inspect = subprocess.run(
        ["skopeo", "inspect", "--tls-verify=false", f"docker://{upstream.host}/{name}:1.0"],
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert inspect.returncode != 0 and "manifest unknown" in inspect.stderr.lower()
    entry = AuditEntry.objects.filter(repository=name, action="delete_tag").latest("id")
    assert (entry.outcome, entry.digest_before) == (AuditEntry.Outcome.OK, image.digest)
    assert tombstone in entry.reason
    assert sorted(Tag.objects.filter(repository__name=name).values_list("name", flat=True)) == ["latest"]
    assert TagHistory.objects.get(repository__name=name, tag="1.0").until is not None


# Dashboard: names outside the grammar -------------------------------------------------------


@pytest.mark.parametrize(
    "path, body",
    [
        (TAGS, b'{"name": "x", "tags": ["1.0", "<script>window.__pwned=1</script>", "../../etc"]}'),
        (r"/_catalog", b'{"repositories": ["<img src=x onerror=alert(1)>", "UPPER/Case", "a//b"]}'),
    ],
    ids=["tags", "catalog"],
)
def test_names_no_registry_may_hold_are_refused_not_crashed_on(path: str, body: bytes, scene: Scene) -> None:
    name = scene.repository
    scene.pusher.push_image(name, ["1.0"])
    scene.sync()
    before = cache_snapshot()
    scene.proxy.set_fault(Fault("body", body=body, methods={"GET"}, path=path))

    catalog_refresh = scene.client.post(reverse("dashboard:catalog-refresh"), follow=True)
    recorded = Repository.objects.get(registry=scene.cache, name=name).last_sync_error
    repository_refresh = scene.client.post(reverse("dashboard:repository-refresh", args=[name]), follow=True)

    assert "not a valid" in recorded
    for response in (catalog_refresh, repository_refresh):
        assert response.status_code == 200
        html = response.content.decode()
        assert "<script>window" not in html and "<img src=x" not in html
    assert not Repository.objects.filter(name__contains="<").exists()
    assert not Tag.objects.filter(name__contains="<").exists()
    assert cache_snapshot()["manifests"] == before["manifests"]


def test_the_sync_command_reports_an_unreachable_registry_as_a_command_error(scene: Scene) -> None:
    scene.pusher.push_image(scene.repository, ["1.0"])
    scene.sync()
    before = cache_snapshot()
    scene.proxy.refuse_connections()

    with pytest.raises(CommandError, match="Sync failed: Cannot connect"):
        call_command("sync_registry")

    assert cache_snapshot() == before
    scene.cache.refresh_from_db()
    assert scene.cache.reachable is False and scene.cache.unreachable_since is not None
