"""Hostile and odd registry content, pushed to the real registry: the sync completes, every page
renders, and nothing the registry holds ends up as markup, a link or a running script.

The distribution grammar keeps HTML out of repository names and tags, so the markup goes where
the registry stores free text: labels, env, history, entrypoint, annotations, media types.
"""

from __future__ import annotations

import json
import re
import secrets
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from urllib.parse import urlencode

import pytest
import requests
from django.contrib.auth.models import User
from django.test import Client
from django.urls import reverse
from playwright.sync_api import Page

from dashboard.models import ApiToken, Manifest, Registry, Repository, Tag
from dashboard.registries import client_for, configured_registry
from dashboard.registry import Schema1Manifest, parse_manifest
from dashboard.registry.mediatypes import DOCKER_SCHEMA1_SIGNED
from dashboard.sync import sync_registry
from tests.page_checks import csp_violations
from tests.personas import make_user
from tests.support import supplychain as sc
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.images import OCI_MANIFEST, ImagePusher, PushedImage, _descriptor, sha256_digest
from tests.support.registry_server import RegistryServer
from tests.test_browser import browser, orm_beside_playwright, page  # noqa: F401 - fixtures

pytestmark = pytest.mark.django_db

SCRIPT = "<script>window.__pwned=1</script>"
ATTRIBUTE = '"><img src=x onerror="window.__pwned=1">'
JS_URLS = {
    "org.opencontainers.image.source": "javascript:window.__pwned=1",
    "org.opencontainers.image.url": " JaVaScRiPt:window.__pwned=1",
    "org.opencontainers.image.documentation": "data:text/html,<script>window.__pwned=1</script>",
    "org.opencontainers.image.revision": "\tjavascript:window.__pwned=1",
}
# Written by nobody but an attacker: none may appear in a page as-is.
RAW_MARKUP = ("<script>window.__pwned", "<img src=x", 'onerror="window')
DANGEROUS_LINK = re.compile(r"""(?:href|src|action)\s*=\s*["']?\s*(?:javascript|data|vbscript):""", re.IGNORECASE)
HELM_CONFIG = "application/vnd.cncf.helm.config.v1+json"
HELM_CHART = "application/vnd.cncf.helm.chart.content.v1.tar+gzip"
LONG_LABEL = 64 * 1024
MANY_LABELS = 3000


@dataclass
class Hostile:
    """What was pushed: repository -> tag -> digest, plus the images the checks look at."""

    tags: dict[str, dict[str, str]] = field(default_factory=dict)
    images: dict[str, PushedImage] = field(default_factory=dict)

    def add(self, name: str, image: PushedImage, *tags: str) -> PushedImage:
        self.images[name] = image
        for tag in tags:
            self.tags.setdefault(image.repository, {})[tag] = image.digest
        return image


# The grammar allows 255 characters, but Distribution 2.8.2 on filesystem storage answers 500
# from about 240 (one component) or 249 (nested): these are the longest names it serves.
DEEP_NAME_LENGTH = 240
FLAT_COMPONENT_LENGTH = 230


def _deep_name(root: str) -> str:
    """A DEEP_NAME_LENGTH-character name nested as deep as fits."""
    name = f"{root}/deep"
    level = 0
    while len(name) < DEEP_NAME_LENGTH - 10:
        name += f"/n{level}"
        level += 1
    return name + "/" + "x" * (DEEP_NAME_LENGTH - len(name) - 1)


def _annotated(pusher: ImagePusher, image: PushedImage, tag: str, annotations: dict[str, str]) -> PushedImage:
    """The same OCI image under `tag`, with manifest annotations."""
    manifest = json.loads(image.raw) | {"annotations": annotations}
    raw = json.dumps(manifest, indent=3).encode()
    digest = pusher.push_raw_manifest(image.repository, tag, raw, OCI_MANIFEST)
    return PushedImage(
        image.repository, digest, OCI_MANIFEST, raw, image.config_digest, image.layer_digests, image.size, None, None
    )


def _oci_artifact(
    pusher: ImagePusher, repository: str, tag: str, config: tuple[str, bytes], layer: tuple[str, bytes], **extra: object
) -> PushedImage:
    """An OCI manifest with any config and layer media types (Helm charts, odd tools)."""
    for _, data in (config, layer):
        pusher.upload_blob(repository, data)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(*config),
        "layers": [_descriptor(*layer)],
        **extra,
    }
    raw = json.dumps(manifest, indent=3).encode()
    digest = pusher.push_raw_manifest(repository, tag, raw, OCI_MANIFEST)
    blobs = (sha256_digest(config[1]), (sha256_digest(layer[1]),))
    return PushedImage(repository, digest, OCI_MANIFEST, raw, *blobs, 0, None, None)


@pytest.fixture(scope="module")
def hostile(registry: RegistryServer, pusher: ImagePusher) -> Hostile:
    """Pushed once for the module; tests only read it."""
    root = f"hostile-{secrets.token_hex(3)}"
    pushed = Hostile()
    web, oci, odd, broken = (f"{root}/{part}" for part in ("web", "oci", "artifacts", "broken"))

    pushed.add(
        "evil",
        pusher.push_image(
            web,
            ["1.0", "latest"],
            labels={"description": SCRIPT, "title": ATTRIBUTE, ATTRIBUTE: SCRIPT, "long": "x" * LONG_LABEL} | JS_URLS,
            env=["PATH=/usr/bin", f"SCRIPT={SCRIPT}", f"ATTRIBUTE={ATTRIBUTE}"],
            history_commands=[f"RUN echo '{SCRIPT}'", f"COPY {ATTRIBUTE} /app"],
            entrypoint=[SCRIPT],
            cmd=[ATTRIBUTE],
            user=ATTRIBUTE,
            workdir=SCRIPT,
            exposed_ports=[f"80/tcp{SCRIPT}"],
            volumes=[ATTRIBUTE],
            author=ATTRIBUTE,
            unique=root,
        ),
        "1.0",
        "latest",
    )
    pushed.add("plain", pusher.push_image(web, ["2.0"], unique=f"{root}-plain"), "2.0")
    labels = {f"label.{i}": (SCRIPT if i % 2 else ATTRIBUTE) + str(i) for i in range(MANY_LABELS)}
    pushed.add("labels", pusher.push_image(web, ["many-labels"], labels=labels, unique=f"{root}-labels"), "many-labels")
    deep_tag = "v" + "1" * 127
    pushed.add("deep", pusher.push_image(_deep_name(root), [deep_tag], unique=f"{root}-deep"), deep_tag)
    flat = root.replace("-", "") + "x" * (FLAT_COMPONENT_LENGTH - len(root) + 1)
    pushed.add("flat", pusher.push_image(flat, ["1"], unique=f"{root}-flat"), "1")

    base = pusher.push_image(oci, None, fmt="oci", unique=f"{root}-oci")
    annotations = {ATTRIBUTE: SCRIPT, "org.opencontainers.image.created": f"not a date {SCRIPT}"} | JS_URLS
    pushed.add("annotated", _annotated(pusher, base, "annotated", annotations), "annotated")

    chart = json.dumps({"apiVersion": "v2", "name": f"chart{SCRIPT}", "version": "1.0.0", "description": ATTRIBUTE})
    pushed.add(
        "helm",
        _oci_artifact(pusher, odd, "chart-1.0.0", (HELM_CONFIG, chart.encode()), (HELM_CHART, f"tgz {root}".encode())),
        "chart-1.0.0",
    )
    subject = pushed.add("subject", pusher.push_image(odd, ["app"], unique=f"{root}-subject"), "app")
    sbom = json.dumps({"spdxVersion": "SPDX-2.3", "name": SCRIPT}).encode()
    sbom_artifact = pusher.push_artifact(odd, "sbom", artifact_type="application/spdx+json", payload=sbom, subject=subject)
    pushed.add("sbom", sbom_artifact, "sbom")
    signature_tag = f"sha256-{subject.digest.partition(':')[2]}.sig"
    signature = json.dumps({"critical": {"identity": {"docker-reference": SCRIPT}}}).encode()
    pushed.add(
        "signature",
        pusher.push_artifact(
            odd, signature_tag, artifact_type="application/vnd.dev.cosign.simplesigning.v1+json", payload=signature
        ),
        signature_tag,
    )
    pushed.add(
        "odd-types",
        _oci_artifact(
            pusher,
            odd,
            "odd-types",
            (f"application/vnd.unknown.config+{SCRIPT}", b'{"unknown": true}'),
            (f"text/html{ATTRIBUTE}", f"odd {root}".encode()),
            artifactType=f"application/x-{SCRIPT}",
            annotations={"note": SCRIPT},
        ),
        "odd-types",
    )

    # Supply-chain payloads whose strings come from an attacker: package names, CVE titles,
    # URLs and provenance, in a Trivy report (attested), an SBOM and SLSA provenance.
    supply = pushed.add("supply", pusher.push_image(odd, ["supplied"], unique=f"{root}-supply"), "supplied")
    hostile_findings = [
        {"id": f"CVE-{SCRIPT}", "severity": "critical", "package": ATTRIBUTE, "installed": SCRIPT, "fixed": ATTRIBUTE,
         "title": SCRIPT, "url": JS_URLS["org.opencontainers.image.source"]},
        {"id": ATTRIBUTE, "severity": SCRIPT, "title": ATTRIBUTE, "url": f'https://example.com/{ATTRIBUTE}'},
        {"id": "CVE-2026-9", "severity": "high", "url": JS_URLS["org.opencontainers.image.documentation"]},
    ]
    report = sc.trivy_report(supply.digest, hostile_findings)
    sc.push_attestation(pusher, odd, supply.digest, sc.statement(supply.digest, sc.VULN, sc.vuln_predicate(report)), None)
    provenance = sc.statement(supply.digest, "https://slsa.dev/provenance/v1", sc.slsa_v1("javascript:window.__pwned=1", SCRIPT))
    sbom_layer = ("application/vnd.cyclonedx+json", sc.cyclonedx_sbom([(SCRIPT, ATTRIBUTE), ("plain", "1")]), {})
    sc.push_cosign(pusher, odd, supply.digest, "sbom", [sbom_layer])
    sc.push_referrer(pusher, odd, supply, "application/vnd.in-toto+json", json.dumps(provenance).encode())

    # An index whose arm64 image was deleted, and an image whose config blob was deleted.
    index = pushed.add("index", pusher.push_index(broken, ["multi"], unique=f"{root}-index"), "multi")
    _delete(registry, f"/v2/{broken}/manifests/{index.children[1].digest}")
    orphan = pushed.add("no-config", pusher.push_image(broken, ["no-config"], unique=f"{root}-no-config"), "no-config")
    _delete(registry, f"/v2/{broken}/blobs/{orphan.config_digest}")
    return pushed


def _delete(registry: RegistryServer, path: str) -> None:
    response = requests.delete(f"{registry.url}{path}", timeout=10)
    assert response.status_code == 202, response.text


@pytest.fixture
def site(settings, registry: RegistryServer, hostile: Hostile) -> Registry:
    """The hostile repositories synced into this test's database."""
    settings.REGISTRY_URL = registry.url
    cache = configured_registry()
    for name in hostile.tags:
        summary = sync_registry(cache, client_for(cache), repository=name)
        assert not summary.failed, summary.failed
    return cache


@pytest.fixture
def admin(client: Client, db: None) -> User:
    user = make_user("hostile-admin", superuser=True)
    client.force_login(user)
    return user


def browse_urls(hostile: Hostile, manifest_pages: Collection[str] | None = None) -> list[str]:
    """The catalog, repository, tag and manifest pages of the hostile content, and comparisons;
    `manifest_pages` names the images whose manifest page to include (default: all)."""
    evil = hostile.images["evil"]
    urls = [reverse("dashboard:catalog"), reverse("dashboard:catalog") + "?" + urlencode({"q": SCRIPT})]
    for name, tags in hostile.tags.items():
        urls.append(reverse("dashboard:repository", args=[name]))
        urls.append(reverse("dashboard:repository", args=[name]) + "?" + urlencode({"q": ATTRIBUTE, "sort": "name"}))
        urls.extend(reverse("dashboard:tag", args=[name, tag]) for tag in tags)
    for key, image in hostile.images.items():
        if manifest_pages is None or key in manifest_pages:
            urls.append(reverse("dashboard:manifest", args=[image.repository, image.digest]))
    supply = hostile.images["supply"]
    for route in ("vulnerabilities", "packages"):
        urls.append(reverse(f"dashboard:{route}", args=[supply.repository, supply.digest]))
    compare = reverse("dashboard:compare", args=[evil.repository])
    urls.append(compare + "?" + urlencode({"from": "1.0", "to": "2.0"}))
    urls.append(compare + "?" + urlencode({"from": "2.0", "to": "many-labels"}))
    return urls


def action_urls(hostile: Hostile) -> list[str]:
    """Pages around actions (history, rollback, delete confirmations, pins, audit) for the
    images whose content is the most hostile."""
    urls = [reverse("dashboard:pins"), reverse("dashboard:audit")]
    urls.extend(reverse("dashboard:rollback", args=[name]) for name in hostile.tags)
    for key in ("evil", "annotated", "odd-types", "index", "no-config"):
        image = hostile.images[key]
        tag = next(tag for tag, digest in hostile.tags[image.repository].items() if digest == image.digest)
        urls.append(reverse("dashboard:tag-history", args=[image.repository, tag]))
        urls.append(reverse("dashboard:delete-tag", args=[image.repository, tag]))
        urls.append(reverse("dashboard:delete-version", args=[image.repository, image.digest]))
    return urls


def api_urls(hostile: Hostile) -> list[str]:
    urls = [reverse("dashboard:api-repositories")]
    for name in hostile.tags:
        urls.append(reverse("dashboard:api-tags", args=[name]))
        urls.append(reverse("dashboard:api-pins", args=[name]))
    return urls


def assert_inert(html: str, url: str) -> None:
    for markup in RAW_MARKUP:
        assert markup not in html, f"{url} shows {markup!r} unescaped"
    assert not DANGEROUS_LINK.search(html), f"{url} links to a script URL: {DANGEROUS_LINK.search(html)}"
    assert csp_violations(html) == [], url


# The sync -----------------------------------------------------------------------------------


def test_the_sync_keeps_hostile_content_as_data_and_records_what_is_missing(site: Registry, hostile: Hostile) -> None:
    evil = Manifest.objects.get(repository__name=hostile.images["evil"].repository, digest=hostile.images["evil"].digest)
    labels = evil.config["labels"]
    assert labels["description"] == SCRIPT and labels[ATTRIBUTE] == SCRIPT
    assert len(labels["long"]) == LONG_LABEL
    assert f"SCRIPT={SCRIPT}" in evil.config["env"]
    layer_steps = [step["created_by"] for step in evil.layers if not step["empty"]]
    assert layer_steps == [f"RUN echo '{SCRIPT}'", f"COPY {ATTRIBUTE} /app"]

    many = Manifest.objects.get(digest=hostile.images["labels"].digest, repository__name=hostile.images["labels"].repository)
    assert len(many.config["labels"]) == MANY_LABELS
    deep = hostile.images["deep"].repository
    assert len(deep) == DEEP_NAME_LENGTH and Tag.objects.get(repository__name=deep).name == "v" + "1" * 127
    assert len(hostile.images["flat"].repository) == FLAT_COMPONENT_LENGTH

    kinds = dict(Manifest.objects.filter(repository__name__startswith=deep.partition("/")[0]).values_list("digest", "kind"))
    assert kinds[hostile.images["helm"].digest] == Manifest.Kind.ARTIFACT
    assert kinds[hostile.images["sbom"].digest] == Manifest.Kind.ARTIFACT
    assert kinds[hostile.images["odd-types"].digest] == Manifest.Kind.ARTIFACT

    index = Manifest.objects.get(digest=hostile.images["index"].digest)
    assert hostile.images["index"].children[1].digest in index.fetch_error
    orphan = Manifest.objects.get(digest=hostile.images["no-config"].digest)
    assert "missing" in orphan.fetch_error and orphan.config == {}
    assert not Repository.objects.exclude(last_sync_error="").exists()


# The pages ----------------------------------------------------------------------------------


def test_every_page_renders_hostile_content_as_text(site: Registry, hostile: Hostile, client: Client, admin: User) -> None:
    for url in browse_urls(hostile) + action_urls(hostile):
        response = client.get(url)
        assert response.status_code == 200, url
        assert_inert(response.content.decode(), url)

    evil = hostile.images["evil"]
    shown = client.get(reverse("dashboard:tag", args=[evil.repository, "1.0"])).content.decode()
    # The values are there, as text: escaping, not dropping, is what keeps them harmless.
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in shown
    assert "javascript:window.__pwned=1" in shown

    supply = hostile.images["supply"]
    listed = client.get(reverse("dashboard:vulnerabilities", args=[supply.repository, supply.digest])).content.decode()
    assert "CVE-&lt;script&gt;window.__pwned=1&lt;/script&gt;" in listed
    assert "href=\"https://example.com/" not in listed  # a URL with markup in it is no link
    packages = client.get(reverse("dashboard:packages", args=[supply.repository, supply.digest])).content.decode()
    assert "&lt;script&gt;window.__pwned=1&lt;/script&gt;" in packages


def test_the_api_answers_hostile_content_as_json(site: Registry, hostile: Hostile, client: Client, admin: User) -> None:
    _, token = ApiToken.issue(admin, "hostile")
    for url in api_urls(hostile):
        response = client.get(url, HTTP_AUTHORIZATION=f"Bearer {token}")
        assert response.status_code == 200, url
        assert response["Content-Type"] == "application/json"
        response.json()


def test_fragments_render_hostile_content_as_text(site: Registry, hostile: Hostile, client: Client, admin: User) -> None:
    repository = hostile.images["evil"].repository
    htmx = {"HTTP_HX_REQUEST": "true"}
    fragments = [
        (reverse("dashboard:catalog") + "?" + urlencode({"q": SCRIPT}), "catalog-results"),
        (reverse("dashboard:repository", args=[repository]) + "?" + urlencode({"q": ATTRIBUTE}), "tag-results"),
        (reverse("dashboard:repository", args=[repository]), "tag-results"),
    ]
    for url, target in fragments:
        response = client.get(url, **htmx, HTTP_HX_TARGET=target)
        assert response.status_code == 200, url
        assert_inert(response.content.decode(), url)


@pytest.mark.browser
@pytest.mark.django_db(transaction=True)
def test_no_injected_script_runs_in_a_browser(
    page: Page, live_server, site: Registry, hostile: Hostile, client: Client, admin: User  # noqa: F811 - fixture
) -> None:
    session = client.cookies["sessionid"].value
    page.context.add_cookies([{"name": "sessionid", "value": session, "url": live_server.url}])
    # Tag and manifest pages share a template: a few manifest pages stand for the rest.
    for url in browse_urls(hostile, manifest_pages={"evil", "index", "odd-types", "supply"}):
        response = page.goto(live_server.url + url)
        assert response is not None and response.status == 200, url
        assert page.evaluate("typeof window.__pwned") == "undefined", url


# Legacy schema1 -----------------------------------------------------------------------------

# What `docker push` sent before schema2: signed JWS. Distribution 2.8 refuses schema1 pushes
# (400 MANIFEST_INVALID) unless `compatibility.schema1.enabled` and a signing key are set, so
# these bytes reach the dashboard through a proxy answering for a tag, as an old registry would.
SCHEMA1 = json.dumps(
    {
        "schemaVersion": 1,
        "name": "legacy/app",
        "tag": "old",
        "architecture": f"amd64{SCRIPT}",
        "fsLayers": [{"blobSum": "sha256:" + "a" * 64}],
        "history": [{"v1Compatibility": json.dumps({"id": "x", "container_config": {"Cmd": [SCRIPT]}})}],
        "signatures": [{"header": {"alg": "ES256"}, "signature": "c2ln", "protected": "e30"}],
    },
    indent=3,
).encode()


def test_schema1_is_refused_by_distribution_2_8(pusher: ImagePusher, repo_name: str) -> None:
    """The reason the schema1 tests below go through a proxy; if this starts to pass, push instead."""
    with pytest.raises(RuntimeError, match="400"):
        pusher.push_raw_manifest(repo_name, "old", SCHEMA1, DOCKER_SCHEMA1_SIGNED)


def test_schema1_parses_as_legacy() -> None:
    manifest = parse_manifest(SCHEMA1, DOCKER_SCHEMA1_SIGNED)
    assert isinstance(manifest, Schema1Manifest)
    assert (manifest.kind, manifest.name, manifest.tag) == ("schema1", "legacy/app", "old")


@pytest.fixture
def schema1_proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    proxy = FaultProxy(registry.url)
    yield proxy
    proxy.stop()


def test_a_schema1_tag_is_cached_and_every_page_renders(
    settings, schema1_proxy: FaultProxy, pusher: ImagePusher, repo_name: str, client: Client, admin: User
) -> None:
    pusher.push_image(repo_name, ["old", "new"])  # so the tag list names both
    digest = sha256_digest(SCHEMA1)
    schema1_proxy.set_fault(
        Fault("serve", body=SCHEMA1, content_type=DOCKER_SCHEMA1_SIGNED, path=rf"/manifests/(old|{digest})$")
    )
    settings.REGISTRY_URL = schema1_proxy.url
    cache = configured_registry()

    summary = sync_registry(cache, client_for(cache), repository=repo_name)

    assert not summary.failed
    legacy = Tag.objects.select_related("manifest").get(repository__name=repo_name, name="old").manifest
    assert (legacy.kind, legacy.digest) == (Manifest.Kind.SCHEMA1, digest)
    for url in [
        reverse("dashboard:repository", args=[repo_name]),
        reverse("dashboard:tag", args=[repo_name, "old"]),
        reverse("dashboard:manifest", args=[repo_name, digest]),
        reverse("dashboard:tag-history", args=[repo_name, "old"]),
        reverse("dashboard:compare", args=[repo_name]) + "?from=old&to=new",
    ]:
        response = client.get(url)
        assert response.status_code == 200, url
        assert_inert(response.content.decode(), url)
