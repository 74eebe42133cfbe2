"""The harness against real registries: if these fail, every other registry test is suspect."""

from __future__ import annotations

import gzip
import json
import re
import shutil
import subprocess
import time
from collections.abc import Callable, Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import jwt
import pytest
import requests

from tests.support.images import (
    DOCKER_LIST,
    MANIFEST_ACCEPT,
    OCI_INDEX,
    OCI_MANIFEST,
    ImagePusher,
    sha256_digest,
)
from tests.support.registry_server import RegistryServer, start_registry
from tests.support.serving import serving
from tests.support.token_server import TokenServer

# Repository name grammar from the distribution spec.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|[-]*)[a-z0-9]+)*"
REPOSITORY_NAME = re.compile(rf"^{_COMPONENT}(?:/{_COMPONENT})*$")


def fetch(url: str, **kwargs: Any) -> requests.Response:
    response = requests.get(url, headers={"Accept": MANIFEST_ACCEPT}, timeout=10, **kwargs)
    response.raise_for_status()
    return response


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_pushed_image_reads_back_byte_exact(registry: RegistryServer, pusher: ImagePusher, repo_name: str, fmt: str) -> None:
    labels = {"org.opencontainers.image.version": "1.0.0"}
    image = pusher.push_image(repo_name, ["1.0.0", "latest"], fmt=fmt, labels=labels, workdir="/app", cmd=["run"])

    manifest = fetch(f"{registry.url}/v2/{repo_name}/manifests/1.0.0")
    assert manifest.content == image.raw
    assert manifest.headers["Content-Type"] == image.media_type
    assert manifest.headers["Docker-Content-Digest"] == image.digest == sha256_digest(manifest.content)
    assert pusher.tags(repo_name) == ["1.0.0", "latest"]

    config_bytes = fetch(f"{registry.url}/v2/{repo_name}/blobs/{image.config_digest}").content
    config = json.loads(config_bytes)
    assert (config["created"], config["architecture"], config["os"]) == ("2024-01-15T12:00:00Z", "amd64", "linux")
    assert config["config"]["Labels"] == labels
    layers = [fetch(f"{registry.url}/v2/{repo_name}/blobs/{digest}").content for digest in image.layer_digests]
    assert [sha256_digest(gzip.decompress(layer)) for layer in layers] == config["rootfs"]["diff_ids"]
    assert len([entry for entry in config["history"] if not entry.get("empty_layer")]) == len(layers) == 2
    assert image.size == len(image.raw) + len(config_bytes) + sum(map(len, layers))


def test_same_inputs_give_same_digest_and_unique_changes_it(pusher: ImagePusher, repo_name: str) -> None:
    first = pusher.push_image(repo_name, "a")
    again = pusher.push_image(repo_name, "b")
    other = pusher.push_image(repo_name, "c", unique="other")

    assert first.digest == again.digest != other.digest
    assert set(first.layer_digests).isdisjoint(other.layer_digests)


@pytest.mark.parametrize(("fmt", "index_type"), [("docker", DOCKER_LIST), ("oci", OCI_INDEX)])
def test_index_refers_to_children_pushed_by_digest(
    registry: RegistryServer, pusher: ImagePusher, repo_name: str, fmt: str, index_type: str
) -> None:
    index = pusher.push_index(repo_name, fmt=fmt)

    body = json.loads(fetch(f"{registry.url}/v2/{repo_name}/manifests/latest").content)
    assert body["mediaType"] == index.media_type == index_type
    assert [entry["digest"] for entry in body["manifests"]] == [child.digest for child in index.children]
    assert [child.platform for child in index.children] == ["linux/amd64", "linux/arm64/v8"]
    assert body["manifests"][1]["platform"] == {"architecture": "arm64", "os": "linux", "variant": "v8"}
    for child in index.children:
        assert pusher.head_digest(repo_name, child.digest) == child.digest
    assert pusher.tags(repo_name) == ["latest"]


def test_artifact_points_at_its_subject(registry: RegistryServer, pusher: ImagePusher, repo_name: str) -> None:
    image = pusher.push_image(repo_name)
    sbom = pusher.push_artifact(repo_name, "sbom", payload=b'{"packages": []}', subject=image)

    body = json.loads(fetch(f"{registry.url}/v2/{repo_name}/manifests/sbom").content)
    assert body["mediaType"] == OCI_MANIFEST
    assert body["artifactType"] == "application/vnd.example.sbom.v1"
    assert body["subject"]["digest"] == image.digest
    assert pusher.head_digest(repo_name, "sbom") == sbom.digest
    assert pusher.tags(repo_name) == ["latest", "sbom"]


def test_tag_puts_the_same_bytes_under_another_tag(pusher: ImagePusher, repo_name: str) -> None:
    image = pusher.push_image(repo_name, "1.0", fmt="oci")
    pusher.tag(repo_name, image, "stable")

    assert pusher.head_digest(repo_name, "stable") == image.digest
    assert pusher.head_digest(repo_name, "missing") is None


def test_basic_registry_needs_credentials(
    registry_basic: RegistryServer, basic_pusher: ImagePusher, basic_credentials: tuple[str, str], repo_name: str
) -> None:
    anonymous = requests.get(f"{registry_basic.url}/v2/", timeout=10)
    assert anonymous.status_code == 401
    assert anonymous.headers["Www-Authenticate"].startswith("Basic ")
    assert requests.get(f"{registry_basic.url}/v2/", auth=("alice", "wrong"), timeout=10).status_code == 401

    image = basic_pusher.push_image(repo_name)

    manifest = fetch(f"{registry_basic.url}/v2/{repo_name}/manifests/latest", auth=basic_credentials)
    assert manifest.content == image.raw


def test_token_registry_honours_scopes(
    registry_token: RegistryServer,
    token_server: TokenServer,
    token_pusher: ImagePusher,
    admin_credentials: tuple[str, str],
    reader_credentials: tuple[str, str],
    repo_name: str,
) -> None:
    image = token_pusher.push_image(repo_name)
    manifest_url = f"{registry_token.url}/v2/{repo_name}/manifests/{image.digest}"

    challenge = requests.get(f"{registry_token.url}/v2/_catalog", timeout=10)
    assert challenge.status_code == 401
    assert challenge.headers["Www-Authenticate"] == (
        f'Bearer realm="{token_server.realm}",service="{token_server.service}",scope="registry:catalog:*"'
    )

    def token(credentials: tuple[str, str] | None, scope: str) -> str:
        answer = requests.get(
            token_server.realm, params={"service": token_server.service, "scope": scope}, auth=credentials, timeout=10
        )
        answer.raise_for_status()
        return answer.json()["token"]

    def bearer(value: str) -> dict[str, str]:
        return {"Authorization": f"Bearer {value}"}

    token_server.reset_counts()
    catalog_token = token(admin_credentials, "registry:catalog:*")
    assert jwt.get_unverified_header(catalog_token)["kid"]
    catalog = requests.get(f"{registry_token.url}/v2/_catalog", headers=bearer(catalog_token), timeout=10)
    assert repo_name in catalog.json()["repositories"]
    assert token_server.requests == {("admin", "registry:catalog:*"): 1}

    pull_scope = f"repository:{repo_name}:pull"
    assert requests.get(manifest_url, headers=bearer(token(None, pull_scope)), timeout=10).status_code == 401
    reader_pull = requests.get(
        manifest_url, headers={**bearer(token(reader_credentials, pull_scope)), "Accept": image.media_type}, timeout=10
    )
    assert reader_pull.content == image.raw

    delete_scope = f"repository:{repo_name}:delete"
    assert requests.delete(manifest_url, headers=bearer(token(reader_credentials, delete_scope)), timeout=10).status_code == 401
    assert requests.delete(manifest_url, headers=bearer(token(admin_credentials, delete_scope)), timeout=10).status_code == 202

    wrong_password = requests.get(token_server.realm, params={"service": token_server.service}, auth=("admin", "x"), timeout=10)
    assert wrong_password.status_code == 401


def test_nodelete_registry_refuses_deletes(
    registry_nodelete: RegistryServer, nodelete_pusher: ImagePusher, repo_name: str
) -> None:
    image = nodelete_pusher.push_image(repo_name)

    response = requests.delete(f"{registry_nodelete.url}/v2/{repo_name}/manifests/{image.digest}", timeout=10)

    assert response.status_code == 405
    assert response.json()["errors"][0]["code"] == "UNSUPPORTED"
    assert nodelete_pusher.head_digest(repo_name, "latest") == image.digest


def test_stop_start_and_restart_keep_data(registry: RegistryServer, pusher: ImagePusher, repo_name: str) -> None:
    image = pusher.push_image(repo_name)

    registry.stop()
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{registry.url}/v2/", timeout=2)
    registry.start()
    assert pusher.head_digest(repo_name, "latest") == image.digest

    registry.restart()
    assert pusher.head_digest(repo_name, "latest") == image.digest


def test_garbage_collect_removes_only_unreferenced_blobs(
    registry: RegistryServer, pusher: ImagePusher, repo_name: str
) -> None:
    kept = pusher.push_image(repo_name, "kept", unique="kept")
    gone = pusher.push_image(repo_name, "gone", unique="gone")
    requests.delete(f"{registry.url}/v2/{repo_name}/manifests/{gone.digest}", timeout=10).raise_for_status()

    output = registry.garbage_collect()

    assert f"blob eligible for deletion: {gone.layer_digests[0]}" in output

    def blob_status(digest: str) -> int:
        return requests.head(f"{registry.url}/v2/{repo_name}/blobs/{digest}", timeout=10).status_code

    assert blob_status(gone.layer_digests[0]) == 404
    assert blob_status(kept.layer_digests[0]) == 200


@pytest.mark.parametrize("fmt", ["docker", "oci"])
def test_skopeo_sees_pushed_image(registry: RegistryServer, pusher: ImagePusher, repo_name: str, fmt: str) -> None:
    skopeo = shutil.which("skopeo")
    assert skopeo, "install the Debian package skopeo (make test does this)"
    image = pusher.push_image(repo_name, "1.0", fmt=fmt, labels={"team": "core"}, arch="arm64")

    result = subprocess.run(
        [skopeo, "inspect", "--tls-verify=false", f"docker://{registry.host}/{repo_name}:1.0"],
        capture_output=True,
        text=True,
        timeout=30,
    )

    assert result.returncode == 0, result.stderr
    info = json.loads(result.stdout)
    assert info["Digest"] == image.digest
    assert (info["Architecture"], info["Created"], info["Labels"]) == ("arm64", "2024-01-15T12:00:00Z", {"team": "core"})
    assert info["Layers"] == list(image.layer_digests)


class _EventCollector(ThreadingHTTPServer):
    """Collects notification envelopes POSTed by the registry."""

    daemon_threads = True

    def __init__(self) -> None:
        super().__init__(("127.0.0.1", 0), _EventHandler)
        self.envelopes: list[tuple[dict[str, str], dict[str, Any]]] = []

    @property
    def events(self) -> list[dict[str, Any]]:
        return [event for _, envelope in self.envelopes for event in envelope["events"]]


class _EventHandler(BaseHTTPRequestHandler):
    server: _EventCollector

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        self.server.envelopes.append((dict(self.headers), json.loads(body)))
        self.send_response(200)
        self.send_header("Content-Length", "0")
        self.end_headers()

    def log_message(self, format: str, *args: Any) -> None:
        pass


@pytest.fixture
def event_collector() -> Iterator[_EventCollector]:
    with serving(_EventCollector()) as collector:
        yield collector


def wait_for(condition: Callable[[], bool], timeout: float = 5.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def test_notifications_report_pushes_but_not_pulls(
    tmp_path: Path, event_collector: _EventCollector, repo_name: str
) -> None:
    server = start_registry(
        tmp_path / "registry",
        notify_url=f"http://127.0.0.1:{event_collector.server_port}/events",
        notify_headers={"Authorization": "Bearer hook-secret"},
    )
    try:
        pusher = ImagePusher(server.url)
        image = pusher.push_image(repo_name, "1.0")
        pusher.head_digest(repo_name, "1.0")
        fetch(f"{server.url}/v2/{repo_name}/manifests/1.0")
        pusher.tag(repo_name, image, "2.0")
        # The registry delivers one endpoint's events in order, so once the 2.0 push is in,
        # any pull event from the HEAD and GET above would have arrived already.
        wait_for(lambda: any(event["target"].get("tag") == "2.0" for event in event_collector.events))
    finally:
        server.stop()

    manifest_pushes = [
        event for event in event_collector.events if event["target"]["mediaType"] == image.media_type
    ]
    assert [(e["action"], e["target"]["tag"], e["target"]["digest"]) for e in manifest_pushes] == [
        ("push", "1.0", image.digest),
        ("push", "2.0", image.digest),
    ]
    assert {event["action"] for event in event_collector.events} == {"push"}
    assert all(headers["Authorization"] == "Bearer hook-secret" for headers, _ in event_collector.envelopes)


def test_repository_names_are_unique_and_valid(make_repo_name: Callable[..., str], repo_name: str) -> None:
    names = [repo_name, make_repo_name(), make_repo_name("team-a/")]

    assert len(set(names)) == 3
    assert all(REPOSITORY_NAME.match(name) for name in names), names
    assert names[2].startswith("team-a/t")
