"""The registry client against real Distribution 2.8 registries (open, no-delete, htpasswd, token).

Misbehaving registries (retries, timeouts, wrong digests, foreign links) are in test_faults.py.
"""

from __future__ import annotations

import json
import subprocess
import time
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime
from pathlib import Path
from urllib.parse import urlsplit

import pytest

from dashboard.registry import (
    Capabilities,
    Denied,
    ImageIndex,
    ImageManifest,
    InvalidResponse,
    ManifestHead,
    NotFound,
    RegistryClient,
    RegistryError,
    Unauthorized,
    Unavailable,
    Unsupported,
    align_history,
    compute_digest,
    mediatypes,
)
from tests.support.images import ImagePusher, PushedImage
from tests.support.registry_server import RegistryServer, free_port
from tests.support.token_server import TokenServer

TIMEOUT = 30


@pytest.fixture
def client(registry: RegistryServer) -> Iterator[RegistryClient]:
    with RegistryClient(registry.url) as client:
        yield client


def run(*command: str | Path) -> str:
    return subprocess.run([str(c) for c in command], capture_output=True, text=True, timeout=TIMEOUT, check=True).stdout


# Reachability


def test_ping_reports_api_version_and_auth_scheme(
    client: RegistryClient,
    registry_basic: RegistryServer,
    basic_credentials: tuple[str, str],
    registry_token: RegistryServer,
    admin_credentials: tuple[str, str],
) -> None:
    assert client.ping().api_version == "registry/2.0"
    assert client.ping().auth_scheme is None
    for server, (username, password), scheme in [
        (registry_basic, basic_credentials, "basic"),
        (registry_token, admin_credentials, "bearer"),
    ]:
        with RegistryClient(server.url, username=username, password=password) as authenticated:
            assert authenticated.ping().auth_scheme == scheme


def test_unreachable_registry_is_unavailable_quickly() -> None:
    started = time.monotonic()
    with (
        RegistryClient(f"http://127.0.0.1:{free_port()}") as client,
        pytest.raises(Unavailable, match="Cannot connect"),
    ):
        client.ping()
    assert time.monotonic() - started < 2


def test_base_url_must_not_carry_credentials() -> None:
    with pytest.raises(ValueError, match="username and password"):
        RegistryClient("http://alice:secret@127.0.0.1:5000")


# Listing


def test_catalog_pages_follow_the_link_in_registry_order(
    client: RegistryClient, pusher: ImagePusher, repo_name: str
) -> None:
    # Distribution orders by path segment: Python's sorted() would put "a-b" before "a/b".
    names = [f"{repo_name}/{suffix}" for suffix in ("a", "a/b", "a-b", "a.b", "a_b")]
    for name in reversed(names):
        pusher.push_image(name, layers=1)

    pages = list(client.catalog_pages(page_size=2))

    # Other tests share this registry: check our names, not the total.
    assert len(pages) >= 3
    assert all(1 <= len(page) <= 2 for page in pages)
    listed = [name for page in pages for name in page]
    assert len(listed) == len(set(listed))
    assert [name for name in listed if name in names] == names
    assert list(client.catalog(page_size=3)) == listed


@pytest.mark.parametrize("page_size", [0, 1001])
def test_catalog_page_size_must_be_1_to_1000(client: RegistryClient, page_size: int) -> None:
    with pytest.raises(ValueError):
        client.catalog_pages(page_size)
    assert client.request_counts["catalog"] == 0


def test_tags_are_empty_once_every_tag_is_deleted(client: RegistryClient, pusher: ImagePusher, repo_name: str) -> None:
    image = pusher.push_image(repo_name, ["1.0", "latest"])
    assert sorted(client.tags(repo_name)) == ["1.0", "latest"]

    client.delete_manifest(repo_name, image.digest)

    assert client.tags(repo_name) == []  # the registry answers "tags": null
    with pytest.raises(NotFound) as raised:
        client.tags(f"{repo_name}/nosuch")
    assert raised.value.code == "NAME_UNKNOWN"


# Manifests, configs, blobs


def _docker_image(pusher: ImagePusher, repository: str, tags: list[str]) -> PushedImage:
    return pusher.push_image(repository, tags, fmt="docker")


def _oci_image(pusher: ImagePusher, repository: str, tags: list[str]) -> PushedImage:
    return pusher.push_image(repository, tags, fmt="oci")


def _docker_list(pusher: ImagePusher, repository: str, tags: list[str]) -> PushedImage:
    return pusher.push_index(repository, tags, fmt="docker")


def _oci_index(pusher: ImagePusher, repository: str, tags: list[str]) -> PushedImage:
    return pusher.push_index(repository, tags, fmt="oci")


def _artifact(pusher: ImagePusher, repository: str, tags: list[str]) -> PushedImage:
    subject = pusher.push_image(repository, None, fmt="oci")
    return pusher.push_artifact(repository, tags[0], subject=subject)


Push = Callable[[ImagePusher, str, list[str]], PushedImage]


@pytest.mark.parametrize(
    ("push", "kind"),
    [
        (_docker_image, "image"),
        (_oci_image, "image"),
        (_docker_list, "index"),
        (_oci_index, "index"),
        (_artifact, "artifact"),
    ],
    ids=["docker", "oci", "docker-list", "oci-index", "artifact"],
)
def test_head_and_get_manifest(
    client: RegistryClient, pusher: ImagePusher, repo_name: str, push: Push, kind: str
) -> None:
    pushed = push(pusher, repo_name, ["v1"])

    assert client.head_manifest(repo_name, "v1") == ManifestHead(pushed.digest, pushed.media_type, len(pushed.raw))
    for reference in ("v1", pushed.digest):
        fetched = client.get_manifest(repo_name, reference)
        assert (fetched.digest, fetched.media_type, fetched.raw) == (pushed.digest, pushed.media_type, pushed.raw)
        assert fetched.manifest.kind == kind

    manifest = fetched.manifest
    if isinstance(manifest, ImageIndex):
        assert [child.digest for child in manifest.manifests] == [child.digest for child in pushed.children]
        assert [str(child.platform) for child in manifest.manifests] == [child.platform for child in pushed.children]
    else:
        assert isinstance(manifest, ImageManifest)
        assert manifest.config.digest == pushed.config_digest
        assert tuple(layer.digest for layer in manifest.layers) == pushed.layer_digests
    if kind == "artifact":
        assert isinstance(manifest, ImageManifest) and manifest.subject is not None
        assert manifest.artifact_type == "application/vnd.example.sbom.v1"
        assert client.head_manifest(repo_name, manifest.subject.digest).digest == manifest.subject.digest


def test_unknown_manifest_is_not_found(client: RegistryClient, pusher: ImagePusher, repo_name: str) -> None:
    pusher.push_image(repo_name, ["v1"])
    with pytest.raises(NotFound) as raised:
        client.get_manifest(repo_name, "nosuch")
    assert raised.value.code == "MANIFEST_UNKNOWN"
    with pytest.raises(NotFound):
        client.head_manifest(repo_name, compute_digest(b"nothing"))


def test_get_config_and_align_its_history(client: RegistryClient, pusher: ImagePusher, repo_name: str) -> None:
    created = datetime(2023, 5, 6, 7, 8, 9, tzinfo=UTC)
    image = pusher.push_image(
        repo_name,
        ["v1"],
        fmt="oci",
        created=created,
        author="Jane",
        arch="arm64",
        variant="v8",
        labels={"team": "a"},
        env=["A=1"],
        entrypoint=["/entry"],
        cmd=["serve"],
        exposed_ports=["80/tcp"],
        volumes=["/data"],
        user="app",
        workdir="/srv",
        history_commands=["ADD base /", "COPY app /srv"],
    )
    assert image.config_digest is not None

    config = client.get_config(repo_name, image.config_digest)
    manifest = client.get_manifest(repo_name, "v1").manifest

    assert (config.created, config.author, str(config.platform)) == (created, "Jane", "linux/arm64/v8")
    assert (config.env, config.entrypoint, config.cmd) == (("A=1",), ("/entry",), ("serve",))
    assert (config.exposed_ports, config.volumes, config.user, config.working_dir) == (
        ("80/tcp",),
        ("/data",),
        "app",
        "/srv",
    )
    assert config.labels == {"team": "a"}
    assert isinstance(manifest, ImageManifest)
    steps = align_history(manifest.layers, config.history)
    assert [(step.history.created_by, step.layer.digest) for step in steps if step.layer and step.history] == [
        ("ADD base /", image.layer_digests[0]),
        ("COPY app /srv", image.layer_digests[1]),
    ]
    assert len(steps) > 2  # the ENV, LABEL, ... entries sit between and after, without layers


def test_get_blob_is_verified_and_capped(client: RegistryClient, pusher: ImagePusher, repo_name: str) -> None:
    image = pusher.push_image(repo_name, ["v1"], layers=1, layer_size=4096)
    layer = image.layer_digests[0]

    assert compute_digest(client.get_blob(repo_name, layer)) == layer
    with pytest.raises(InvalidResponse, match="too large"):
        client.get_blob(repo_name, layer, max_bytes=100)
    with pytest.raises(NotFound) as raised:
        client.get_blob(repo_name, compute_digest(b"nothing"))
    assert raised.value.code == "BLOB_UNKNOWN"
    # The connection dropped mid-body is not reused.
    assert compute_digest(client.get_blob(repo_name, layer)) == layer


def test_request_counts_by_kind(client: RegistryClient, pusher: ImagePusher, repo_name: str) -> None:
    image = pusher.push_image(repo_name, ["v1"])
    assert image.config_digest is not None

    client.ping()
    client.tags(repo_name)
    client.head_manifest(repo_name, "v1")
    client.get_manifest(repo_name, "v1")
    client.get_config(repo_name, image.config_digest)

    assert client.request_counts == Counter(ping=1, tags=1, head_manifest=1, get_manifest=1, get_blob=1)


# Writing


def test_retag_keeps_the_digest_and_skopeo_agrees(
    client: RegistryClient, registry: RegistryServer, pusher: ImagePusher, repo_name: str
) -> None:
    image = pusher.push_image(repo_name, ["1.0"])  # indented JSON: re-serialising would change the digest
    fetched = client.get_manifest(repo_name, "1.0")

    assert client.put_manifest(repo_name, "stable", fetched.raw, fetched.media_type) == image.digest

    assert client.head_manifest(repo_name, "stable").digest == image.digest
    inspected = json.loads(
        run("skopeo", "inspect", "--tls-verify=false", f"docker://{registry.host}/{repo_name}:stable")
    )
    assert inspected["Digest"] == image.digest


def test_put_manifest_with_the_wrong_media_type_is_refused(
    client: RegistryClient, pusher: ImagePusher, repo_name: str
) -> None:
    image = pusher.push_image(repo_name, ["v1"], fmt="docker")
    with pytest.raises(RegistryError) as raised:
        client.put_manifest(repo_name, "v2", image.raw, mediatypes.OCI_MANIFEST)
    assert (raised.value.status, raised.value.code) == (400, "MANIFEST_INVALID")


def test_image_copied_by_skopeo_from_a_umoci_layout(
    client: RegistryClient, registry: RegistryServer, repo_name: str, tmp_path: Path
) -> None:
    layout = tmp_path / "layout"
    image = f"{layout}:v1"
    (tmp_path / "hello").write_text("hello\n")
    run("umoci", "init", "--layout", layout)
    run("umoci", "new", "--image", image)
    run(
        "umoci",
        "config",
        "--image",
        image,
        "--config.label",
        "built-by=umoci",
        "--config.cmd",
        "/hello",
        "--author",
        "umoci-test",
    )
    run("umoci", "insert", "--rootless", "--image", image, tmp_path / "hello", "/hello")
    run(
        "skopeo",
        "copy",
        "--quiet",
        "--dest-tls-verify=false",
        f"oci:{image}",
        f"docker://{registry.host}/{repo_name}:v1",
    )

    fetched = client.get_manifest(repo_name, "v1")

    # umoci leaves mediaType out of the body; the kind comes from the Content-Type.
    assert "mediaType" not in json.loads(fetched.raw)
    assert fetched.media_type == mediatypes.OCI_MANIFEST
    assert isinstance(fetched.manifest, ImageManifest) and fetched.manifest.kind == "image"
    assert len(fetched.manifest.layers) == 1
    config = client.get_config(repo_name, fetched.manifest.config.digest)
    assert (config.labels, config.cmd, config.author) == ({"built-by": "umoci"}, ("/hello",), "umoci-test")


# Deleting


def test_capabilities(client: RegistryClient, registry_nodelete: RegistryServer) -> None:
    # Distribution 2.8 has no tag delete, with or without digest deletes.
    assert client.capabilities() == Capabilities(delete_enabled=True, tag_delete=False)
    with RegistryClient(registry_nodelete.url) as nodelete:
        assert nodelete.capabilities() == Capabilities(delete_enabled=False, tag_delete=False)


def test_delete_manifest_removes_every_tag_of_the_digest(
    client: RegistryClient, pusher: ImagePusher, repo_name: str
) -> None:
    image = pusher.push_image(repo_name, ["1.0", "latest"])
    other = pusher.push_image(repo_name, ["2.0"], unique="other")

    client.delete_manifest(repo_name, image.digest)

    assert pusher.tags(repo_name) == ["2.0"]
    assert pusher.head_digest(repo_name, "2.0") == other.digest
    with pytest.raises(NotFound):
        client.delete_manifest(repo_name, image.digest)


@pytest.mark.parametrize(
    "push", [_docker_image, _oci_image, _docker_list, _oci_index], ids=["docker", "oci", "docker-list", "oci-index"]
)
def test_delete_tag_leaves_sibling_tags_alone(
    client: RegistryClient, pusher: ImagePusher, repo_name: str, push: Push
) -> None:
    pushed = push(pusher, repo_name, ["keep", "gone", "also-kept"])

    client.delete_tag(repo_name, "gone", pushed.digest)

    assert pusher.tags(repo_name) == ["also-kept", "keep"]
    assert pusher.head_digest(repo_name, "keep") == pushed.digest
    assert pusher.head_digest(repo_name, pushed.digest) == pushed.digest
    for child in pushed.children:
        assert pusher.head_digest(repo_name, child.digest) == child.digest


def test_concurrent_tag_deletes_in_one_repository(client: RegistryClient, pusher: ImagePusher, repo_name: str) -> None:
    # 2.8 answers 500 to a manifest DELETE that reads a tag link while another request writes
    # one in the same repository; the client's writes there take turns.
    doomed = [f"gone-{i}" for i in range(6)]
    image = pusher.push_image(repo_name, ["keep", *doomed])

    with ThreadPoolExecutor(len(doomed)) as pool:
        list(pool.map(lambda tag: client.delete_tag(repo_name, tag, image.digest), doomed))

    assert pusher.tags(repo_name) == ["keep"]
    assert pusher.head_digest(repo_name, "keep") == image.digest


def test_tombstones_are_recognised_and_finishing_a_finished_delete_is_quiet(
    client: RegistryClient, pusher: ImagePusher, repo_name: str
) -> None:
    image = pusher.push_image(repo_name, ["v1"])
    sbom = pusher.push_artifact(repo_name, "sbom")
    tombstone = pusher.push_artifact(repo_name, "stuck", artifact_type=mediatypes.TOMBSTONE_ARTIFACT_TYPE)

    assert [client.is_tombstone(repo_name, pushed.digest) for pushed in (image, sbom, tombstone)] == [
        False,
        False,
        True,
    ]
    client.finish_tag_delete(repo_name, tombstone.digest)
    client.finish_tag_delete(repo_name, tombstone.digest)  # another replica finished it already

    assert pusher.tags(repo_name) == ["sbom", "v1"]
    assert not client.is_tombstone(repo_name, tombstone.digest)


def test_delete_tag_of_an_unknown_tag_changes_nothing(
    client: RegistryClient, pusher: ImagePusher, repo_name: str
) -> None:
    image = pusher.push_image(repo_name, ["v1"])
    with pytest.raises(NotFound):
        client.delete_tag(repo_name, "nosuch", image.digest)
    assert pusher.tags(repo_name) == ["v1"]


def test_deletes_on_a_registry_without_delete_say_how_to_enable_it(
    registry_nodelete: RegistryServer, nodelete_pusher: ImagePusher, repo_name: str
) -> None:
    image = nodelete_pusher.push_image(repo_name, ["v1", "v2"])

    with RegistryClient(registry_nodelete.url) as client:
        for delete in (
            lambda: client.delete_manifest(repo_name, image.digest),
            lambda: client.delete_tag(repo_name, "v1", image.digest),
        ):
            with pytest.raises(Unsupported) as raised:
                delete()
            assert "storage.delete.enabled: true" in str(raised.value)
            assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in str(raised.value)

    assert nodelete_pusher.tags(repo_name) == ["v1", "v2"]


# Basic auth


def test_basic_auth(
    registry_basic: RegistryServer, basic_credentials: tuple[str, str], basic_pusher: ImagePusher, repo_name: str
) -> None:
    basic_pusher.push_image(repo_name, ["v1"])
    username, password = basic_credentials

    with RegistryClient(registry_basic.url, username=username, password=password) as client:
        assert client.tags(repo_name) == ["v1"]
        before = client.request_counts
        client.tags(repo_name)
        client.head_manifest(repo_name, "v1")
        assert client.request_counts - before == Counter(tags=1, head_manifest=1)  # credentials sent up front

    for wrong_username, wrong_password in [(username, "wrong-pass"), (None, None)]:
        with (
            RegistryClient(registry_basic.url, username=wrong_username, password=wrong_password) as client,
            pytest.raises(Unauthorized) as raised,
        ):
            client.tags(repo_name)
        assert "pass" not in str(raised.value)


# Token auth


def test_token_is_fetched_once_per_scope_then_reused(
    registry_token: RegistryServer,
    token_server: TokenServer,
    token_pusher: ImagePusher,
    admin_credentials: tuple[str, str],
    repo_name: str,
) -> None:
    token_pusher.push_image(repo_name, ["v1"])
    token_pusher.push_image(f"{repo_name}/other", ["v1"])
    token_server.reset_counts()
    username, password = admin_credentials

    with RegistryClient(registry_token.url, username=username, password=password) as client:
        for _ in range(3):
            assert client.tags(repo_name) == ["v1"]
            client.head_manifest(repo_name, "v1")
            client.get_manifest(repo_name, "v1")
        assert repo_name in client.catalog()
        assert repo_name in client.catalog()
        assert token_server.requests == Counter(
            {("admin", f"repository:{repo_name}:pull"): 1, ("admin", "registry:catalog:*"): 1}
        )

        # With the token service known, a new scope costs a token request but no 401 round trip.
        before = client.request_counts
        client.tags(f"{repo_name}/other")
        assert client.request_counts - before == Counter(token=1, tags=1)


def test_threads_share_one_token(
    registry_token: RegistryServer,
    token_server: TokenServer,
    token_pusher: ImagePusher,
    admin_credentials: tuple[str, str],
    repo_name: str,
) -> None:
    image = token_pusher.push_image(repo_name, ["v1"])
    token_server.reset_counts()
    username, password = admin_credentials

    with (
        RegistryClient(registry_token.url, username=username, password=password) as client,
        ThreadPoolExecutor(8) as pool,
    ):
        digests = list(pool.map(lambda _: client.head_manifest(repo_name, "v1").digest, range(16)))

    assert digests == [image.digest] * 16
    assert token_server.requests == Counter({("admin", f"repository:{repo_name}:pull"): 1})


def test_admin_deletes_with_token_auth(
    registry_token: RegistryServer, token_pusher: ImagePusher, admin_credentials: tuple[str, str], repo_name: str
) -> None:
    image = token_pusher.push_image(repo_name, ["keep", "gone"])
    username, password = admin_credentials

    with RegistryClient(registry_token.url, username=username, password=password) as client:
        assert client.capabilities() == Capabilities(delete_enabled=True, tag_delete=False)
        client.delete_tag(repo_name, "gone", image.digest)

    assert token_pusher.tags(repo_name) == ["keep"]
    assert token_pusher.head_digest(repo_name, "keep") == image.digest


def test_reader_may_read_but_not_delete(
    registry_token: RegistryServer, token_pusher: ImagePusher, reader_credentials: tuple[str, str], repo_name: str
) -> None:
    image = token_pusher.push_image(repo_name, ["v1", "v2"])
    username, password = reader_credentials

    with RegistryClient(registry_token.url, username=username, password=password) as client:
        assert sorted(client.tags(repo_name)) == ["v1", "v2"]
        with pytest.raises(Denied):
            client.delete_manifest(repo_name, image.digest)
        with pytest.raises(Denied):
            client.delete_tag(repo_name, "v1", image.digest)
        assert client.capabilities() == Capabilities(delete_enabled=None, tag_delete=None)

    with RegistryClient(registry_token.url) as anonymous, pytest.raises(Unauthorized):
        anonymous.tags(repo_name)
    with (
        RegistryClient(registry_token.url, username=username, password="wrong-pass") as wrong,
        pytest.raises(Unauthorized),
    ):
        wrong.tags(repo_name)
    assert token_pusher.tags(repo_name) == ["v1", "v2"]


def test_token_realm_on_another_host_is_refused_unless_allowed(
    registry_token: RegistryServer,
    token_server: TokenServer,
    token_pusher: ImagePusher,
    admin_credentials: tuple[str, str],
    repo_name: str,
) -> None:
    token_pusher.push_image(repo_name, ["v1"])
    token_server.reset_counts()
    username, password = admin_credentials
    # The registry names its realm by IP address; reached as "localhost", that is another host.
    url = f"http://localhost:{registry_token.port}"
    realm_host = urlsplit(token_server.realm).netloc

    for allowed in [(), ("127.0.0.1:1",), ("localhost",)]:
        with (
            RegistryClient(url, username=username, password=password, allowed_realm_hosts=allowed) as client,
            pytest.raises(InvalidResponse, match="another host"),
        ):
            client.tags(repo_name)
    assert not token_server.requests  # credentials never went there

    with RegistryClient(url, username=username, password=password, allowed_realm_hosts=[realm_host]) as client:
        assert client.tags(repo_name) == ["v1"]
    assert token_server.requests == Counter({("admin", f"repository:{repo_name}:pull"): 1})
