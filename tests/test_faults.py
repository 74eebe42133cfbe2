"""The registry misbehaving, through a fault proxy in front of the real registry.

Client level: every fault surfaces as the documented error type (retried where retrying is
right). Dashboard level: pages keep answering from the cache, actions fail cleanly and change
nothing, a failed sync leaves the cache as it was, and no foreign host is ever contacted.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dashboard.registry import (
    DigestMismatch,
    InvalidResponse,
    RateLimited,
    RegistryClient,
    Unavailable,
)
from tests.support.fault_proxy import Fault, FaultProxy, ForeignServer
from tests.support.images import ImagePusher, PushedImage
from tests.support.registry_server import RegistryServer

# Short, so faults that make the client wait (latency) keep the tests fast.
CONNECT_TIMEOUT = 1.0
READ_TIMEOUT = 0.5
MANIFEST = r"/manifests/"
TAGS = r"/tags/list$"


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(registry.url)
    yield proxy
    proxy.stop()


@pytest.fixture
def foreign() -> Iterator[ForeignServer]:
    server = ForeignServer()
    yield server
    server.stop()


@pytest.fixture
def image(pusher: ImagePusher, repo_name: str) -> PushedImage:
    # A second repository, so the catalog always has a next page at page size 1.
    pusher.push_image(f"{repo_name}/sibling", layers=1)
    return pusher.push_image(repo_name, ["1.0", "latest"], labels={"team": "faults"})


def client_via(proxy: FaultProxy, **kwargs: object) -> RegistryClient:
    options: dict = {"timeout": (CONNECT_TIMEOUT, READ_TIMEOUT), "retries": 1} | kwargs
    return RegistryClient(proxy.url, **options)


# The proxy itself --------------------------------------------------------------------------


def test_normal_mode_is_transparent(proxy: FaultProxy, image: PushedImage, pusher: ImagePusher) -> None:
    client = client_via(proxy)
    repository = image.repository

    assert sorted(client.tags(repository)) == ["1.0", "latest"]
    head = client.head_manifest(repository, "1.0")
    fetched = client.get_manifest(repository, "latest")
    config = client.get_config(repository, image.config_digest)
    # Two catalog pages of one repository each: the relative Link header crossed the proxy.
    pages = client.catalog_pages(page_size=1)
    first_pages = [next(pages), next(pages)]
    client.delete_tag(repository, "1.0")

    assert (head.digest, head.media_type, head.size) == (image.digest, image.media_type, len(image.raw))
    assert fetched.raw == image.raw and fetched.digest == image.digest
    assert config.labels == {"team": "faults"}
    assert all(len(page) == 1 for page in first_pages) and first_pages[0] != first_pages[1]
    assert pusher.tags(repository) == ["latest"]
    assert pusher.head_digest(repository, "latest") == image.digest
    assert not any(seen.faulted for seen in proxy.seen())


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


def test_a_plain_500_is_not_retried(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("status", status=500))

    with pytest.raises(Unavailable):
        client.get_manifest(image.repository, "latest")

    assert proxy.count("GET") == 1


@pytest.mark.parametrize("status", [429, 502, 503])
def test_writes_are_never_retried(
    proxy: FaultProxy, image: PushedImage, pusher: ImagePusher, status: int
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("status", status=status, methods={"PUT", "DELETE"}))

    with pytest.raises((Unavailable, RateLimited)):
        client.delete_manifest(image.repository, image.digest)
    with pytest.raises((Unavailable, RateLimited)):
        client.put_manifest(image.repository, "copy", image.raw, image.media_type)

    assert proxy.count("DELETE") == 1
    assert proxy.count("PUT") == 1
    assert pusher.tags(image.repository) == ["1.0", "latest"]


# Client: broken connections -----------------------------------------------------------------


def test_an_answer_slower_than_the_read_timeout_is_unavailable(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("latency", delay=READ_TIMEOUT * 4, path=TAGS))

    with pytest.raises(Unavailable, match="did not answer in time"):
        client.tags(image.repository)

    assert proxy.count("GET", TAGS) == 2  # a read timeout on a GET is retried once


@pytest.mark.parametrize("method", ["GET", "DELETE"])
def test_a_reset_connection_is_unavailable_and_only_reads_are_retried(
    proxy: FaultProxy, image: PushedImage, pusher: ImagePusher, method: str
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("reset", methods={method}))

    with pytest.raises(Unavailable):
        if method == "GET":
            client.get_manifest(image.repository, "latest")
        else:
            client.delete_manifest(image.repository, image.digest)

    assert proxy.count(method) == (2 if method == "GET" else 1)
    assert pusher.head_digest(image.repository, "latest") == image.digest


def test_a_truncated_body_is_unavailable(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("truncate", methods={"GET"}, path=MANIFEST))

    with pytest.raises(Unavailable, match="connection broke"):
        client.get_manifest(image.repository, "latest")


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


def test_invalid_json_is_an_invalid_response(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("invalid_json", methods={"GET"}))

    with pytest.raises(InvalidResponse):
        client.get_manifest(image.repository, "latest")
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


def test_a_10_mib_manifest_is_refused_without_reading_it_all(proxy: FaultProxy, image: PushedImage) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("huge", methods={"GET"}, path=MANIFEST))

    with pytest.raises(InvalidResponse, match="too large"):
        client.get_manifest(image.repository, "latest")


def test_a_next_page_on_another_host_is_not_followed(
    proxy: FaultProxy, foreign: ForeignServer, image: PushedImage
) -> None:
    client = client_via(proxy)
    proxy.set_fault(Fault("foreign_link", foreign_url=foreign.url, path=r"/_catalog"))

    with pytest.raises(InvalidResponse, match="another host"):
        list(client.catalog(page_size=1))

    assert foreign.count == 0


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
