"""Attachments found by the sync in a real registry: cosign tags, OCI referrers, BuildKit
attestations; signatures checked with trusted keys; reports counted for the right digest."""

from __future__ import annotations

import base64
import json
import re
from collections.abc import Iterator
from pathlib import Path

import pytest

from dashboard.models import Attachment, Finding, Registry, SbomPackage, TrustedKey, VersionSecurity
from dashboard.registry import RegistryClient
from dashboard.supplychain.documents import Kind
from dashboard.sync import sync_repository
from tests.support import supplychain as sc
from tests.support.fault_proxy import Fault, FaultProxy
from tests.support.images import ImagePusher
from tests.support.registry_server import RegistryServer

pytestmark = pytest.mark.django_db
CRITICAL = [
    {"id": "CVE-2024-1111", "severity": "critical", "package": "openssl", "installed": "3.0.11", "fixed": "3.0.13"},
    {"id": "CVE-2024-2222", "severity": "high", "package": "zlib", "installed": "1.2.13"},
]


@pytest.fixture
def cache(registry: RegistryServer) -> Registry:
    return Registry.objects.create(name="test", url=registry.url)


@pytest.fixture(scope="module")
def release_key():
    return sc.make_key()


@pytest.fixture
def trusted(release_key, tmp_path: Path, settings) -> None:
    """The release key from SIGNATURE_PUBLIC_KEYS, named after its file."""
    path = tmp_path / "release.pub"
    path.write_bytes(sc.public_pem(release_key))
    settings.SIGNATURE_PUBLIC_KEYS = [str(path)]


def sync(cache: Registry, name: str) -> RegistryClient:
    with RegistryClient(cache.url) as client:
        sync_repository(cache, client, name)
    return client


def security(name: str, digest: str) -> VersionSecurity | None:
    return VersionSecurity.objects.filter(repository__name=name, digest=digest).first()


def reference(registry: RegistryServer, name: str) -> str:
    return f"{registry.host}/{name}"


def test_good_signature_is_verified_with_the_key_name(registry, pusher: ImagePusher, cache, repo_name, release_key, trusted):
    image = pusher.push_image(repo_name, "1.0", unique=repo_name)
    sc.push_signature(pusher, repo_name, image.digest, release_key, reference(registry, repo_name))
    sync(cache, repo_name)
    row = security(repo_name, image.digest)
    assert (row.signature_status, row.signature_key) == ("verified", "release")


def test_untrusted_key_is_unverified_until_an_admin_trusts_it(registry, pusher, cache, repo_name, trusted):
    image = pusher.push_image(repo_name, "1.0", unique=repo_name)
    other = sc.make_key("ed25519")
    sc.push_signature(pusher, repo_name, image.digest, other, reference(registry, repo_name))
    sync(cache, repo_name)
    assert security(repo_name, image.digest).signature_status == "unverified"
    TrustedKey.objects.create(name="ci", public_key=sc.public_pem(other).decode())  # re-checks on save
    row = security(repo_name, image.digest)
    assert (row.signature_status, row.signature_key) == ("verified", "ci")


def test_signature_of_another_digest_copied_next_to_this_one_is_invalid(
    registry, pusher, cache, repo_name, release_key, trusted
):
    good = pusher.push_image(repo_name, "1.0", unique=f"{repo_name}-good")
    bad = pusher.push_image(repo_name, "1.1", unique=f"{repo_name}-bad")
    sc.push_signature(pusher, repo_name, good.digest, release_key, reference(registry, repo_name))
    # The good image's .sig manifest, byte for byte, under the bad image's cosign tag.
    signature = pusher.session.get(
        f"{registry.url}/v2/{repo_name}/manifests/sha256-{good.digest[7:]}.sig", headers={"Accept": sc.OCI_MANIFEST}
    )
    pusher.push_raw_manifest(repo_name, f"sha256-{bad.digest[7:]}.sig", signature.content, sc.OCI_MANIFEST)
    sync(cache, repo_name)
    assert security(repo_name, good.digest).signature_status == "verified"
    row = security(repo_name, bad.digest)
    assert (row.signature_status, row.signature_key) == ("invalid", "")
    reasons = Attachment.objects.filter(subject_digest=bad.digest).values_list("signature_reason", flat=True)
    assert [f"Signed for another digest, {good.digest}"] == list(reasons)


def test_signature_for_another_repository_is_invalid(registry, pusher, cache, repo_name, release_key, trusted):
    image = pusher.push_image(repo_name, "1.0", unique=repo_name)
    sc.push_signature(pusher, repo_name, image.digest, release_key, reference(registry, "someone/else"))
    sync(cache, repo_name)
    assert security(repo_name, image.digest).signature_status == "invalid"


def test_tampered_payload(registry, pusher, cache, make_repo_name, release_key, trusted):
    """Edited and pushed again, the payload no longer checks against any key (unverified: an
    unknown key would look the same); edited in the registry's storage, its bytes no longer
    match the digest the signature manifest names (invalid)."""
    edited_name, stored_name = make_repo_name("edited"), make_repo_name("stored")
    for name in (edited_name, stored_name):
        pusher.push_image(name, "1.0", unique=name)
    edited = pusher.push_image(edited_name, "1.0", unique=edited_name)
    payload = sc.simple_signing_payload(reference(registry, edited_name), edited.digest)
    signature = base64.b64encode(sc.sign(release_key, payload)).decode()
    tampered = payload.replace(b'"optional":null', b'"optional":{"by":"mallory"}')
    layer = (sc.SIMPLE_SIGNING, tampered, {sc.SIGNATURE_ANNOTATION: signature})
    sc.push_cosign(pusher, edited_name, edited.digest, "sig", [layer])
    sync(cache, edited_name)
    assert security(edited_name, edited.digest).signature_status == "unverified"

    stored = pusher.push_image(stored_name, "1.0", unique=stored_name)
    sc.push_signature(pusher, stored_name, stored.digest, release_key, reference(registry, stored_name))
    payload = sc.simple_signing_payload(reference(registry, stored_name), stored.digest)
    blob = registry.root / "storage/docker/registry/v2/blobs/sha256" / sc.digest_of(payload)[7:9] / sc.digest_of(payload)[7:] / "data"
    blob.write_bytes(payload.replace(b"critical", b"CRITICAL"))
    sync(cache, stored_name)
    row = security(stored_name, stored.digest)
    assert row.signature_status == "invalid"
    assert Attachment.objects.get(subject_digest=stored.digest).signature_reason == (
        "The signed payload was changed in the registry's storage"
    )


def test_attestations_counted_for_their_own_digest_only(registry, pusher, cache, repo_name, release_key, trusted):
    image = pusher.push_image(repo_name, "1.0", unique=repo_name)
    other = pusher.push_image(repo_name, None, unique=f"{repo_name}-other")
    own = sc.statement(image.digest, sc.VULN, sc.vuln_predicate(sc.trivy_report(image.digest, CRITICAL)))
    sc.push_attestation(pusher, repo_name, image.digest, own, release_key)
    sync(cache, repo_name)
    row = security(repo_name, image.digest)
    assert (row.critical, row.high, row.medium, row.low) == (1, 1, 0, 0)
    assert (row.report.scanner, row.report.scanner_version, row.report.signature_status) == ("trivy", "0.57.1", "verified")
    assert row.report.scanned_at == sc.SCANNED
    assert set(Finding.objects.filter(attachment=row.report).values_list("vulnerability_id", "fixed_in")) == {
        ("CVE-2024-1111", "3.0.13"),
        ("CVE-2024-2222", ""),
    }

    # Another image's report, signed by the same key, copied next to this one: not counted.
    copied_name = repo_name + "-copied"
    copied_image = pusher.push_image(copied_name, "1.0", unique=copied_name)
    foreign = sc.statement(other.digest, sc.VULN, sc.vuln_predicate(sc.trivy_report(other.digest, CRITICAL * 3)))
    sc.push_attestation(pusher, copied_name, copied_image.digest, foreign, release_key)
    sync(cache, copied_name)
    row = security(copied_name, copied_image.digest)
    assert row.report is None
    assert (row.critical, row.high) == (0, 0)
    attachment = Attachment.objects.get(subject_digest=copied_image.digest)
    assert (attachment.about_subject, attachment.signature_status) == (False, "invalid")


def test_referrers_through_the_referrers_tag_schema(registry, pusher, cache, repo_name, trusted):
    image = pusher.push_image(repo_name, "1.0", unique=repo_name)
    sc.push_referrer(pusher, repo_name, image, "application/vnd.cyclonedx+json", sc.cyclonedx_sbom([("openssl", "3.0.11")]))
    sc.push_referrer(pusher, repo_name, image, "application/spdx+json", sc.spdx_sbom([("busybox", "1.36.1")]))
    sc.push_referrer(pusher, repo_name, image, "application/sarif+json", sc.as_bytes(sc.sarif_report(CRITICAL[:1])))
    sc.push_referrer(pusher, repo_name, image, "application/vnd.example+json", b"\x00 not json")
    sync(cache, repo_name)
    rows = Attachment.objects.filter(subject_digest=image.digest)
    assert sorted(rows.values_list("via", "kind", "format")) == [
        ("referrer", "sbom", "CycloneDX JSON"),
        ("referrer", "sbom", "SPDX-2.3 JSON"),
        ("referrer", "unreadable", "unreadable"),
        ("referrer", "vulnerabilities", "SARIF 2.1"),
    ]
    assert rows.get(kind="unreadable").reason.startswith("Not JSON")
    packages = set(SbomPackage.objects.filter(attachment__subject_digest=image.digest).values_list("name", "version"))
    assert {("openssl", "3.0.11"), ("busybox", "1.36.1")} <= packages
    row = security(repo_name, image.digest)
    assert (row.signature_status, row.critical, row.report.scanner) == ("unsigned", 1, "Trivy")


def test_buildkit_attestations_of_an_index_children(registry, pusher, cache, repo_name):
    def statements(digest: str) -> list[dict]:
        report = sc.trivy_report(digest, CRITICAL if digest.endswith(("0", "2", "4", "6", "8", "a", "c", "e")) else CRITICAL[1:])
        spdx = json.loads(sc.spdx_sbom([("openssl", "3.0.11")]))
        return [
            sc.statement(digest, "https://spdx.dev/Document", spdx),
            sc.statement(digest, "https://slsa.dev/provenance/v0.2", sc.slsa_v02("https://github.com/team/app", "ab" * 20)),
            sc.statement(digest, sc.VULN, sc.vuln_predicate(report)),
        ]

    pushed = sc.push_buildkit_index(pusher, repo_name, "1.0", {"linux/amd64": statements, "linux/arm64": statements}, repo_name)
    sync(cache, repo_name)
    for image in pushed["images"].values():
        kinds = sorted(Attachment.objects.filter(subject_digest=image, via="buildkit").values_list("kind", flat=True))
        assert kinds == ["provenance", "sbom", "vulnerabilities"]
        provenance = Attachment.objects.get(subject_digest=image, kind="provenance").provenance
        assert provenance["source_repository"] == "https://github.com/team/app"
    index = security(repo_name, pushed["index"])
    # Each platform's findings, the same CVE in both counted once.
    expected_critical = int(any(d[-1] in "02468ace" for d in pushed["images"].values()))
    assert (index.critical, index.high) == (expected_critical, 1)


def test_oversized_sbom_is_refused_by_its_size_without_downloading(registry, pusher, cache, repo_name, settings):
    settings.ATTACHMENT_MAX_BYTES = 50 * 1024 * 1024 - 1
    image = pusher.push_image(repo_name, "1.0", unique=repo_name)
    big = b"{" + b" " * (50 * 1024 * 1024 - 2) + b"}"
    sc.push_cosign(pusher, repo_name, image.digest, "sbom", [("application/vnd.cyclonedx+json", big, {})])
    client = sync(cache, repo_name)
    attachment = Attachment.objects.get(subject_digest=image.digest)
    assert attachment.kind == "unreadable"
    assert attachment.reason == (
        "52,428,800 bytes, over the 52,428,799-byte limit (ATTACHMENT_MAX_BYTES): not downloaded"
    )
    assert client.request_counts["get_blob"] == 2  # the image's config and the .sbom manifest's config


def test_first_sync_requests_per_artifact_and_none_on_a_resync(registry, pusher, cache, repo_name, release_key, trusted):
    image = pusher.push_image(repo_name, "1.0", unique=repo_name)
    sync(cache, repo_name)
    plain = sync(cache, repo_name).request_counts  # a resync with nothing new
    sc.push_signature(pusher, repo_name, image.digest, release_key, reference(registry, repo_name))
    signed = sync(cache, repo_name).request_counts
    # The .sig tag: one HEAD, its manifest, cosign's placeholder config, the payload.
    assert signed - plain == {"head_manifest": 1, "get_manifest": 1, "get_blob": 2}
    again = sync(cache, repo_name).request_counts
    assert again["get_manifest"] == 0 and again["get_blob"] == 0
    assert security(repo_name, image.digest).signature_status == "verified"


def test_registry_failures_are_read_again_at_the_next_sync(registry, pusher, cache, repo_name, release_key, trusted):
    image = pusher.push_image(repo_name, "1.0", unique=repo_name)
    sc.push_signature(pusher, repo_name, image.digest, release_key, reference(registry, repo_name))
    payload = sc.simple_signing_payload(reference(registry, repo_name), image.digest)
    proxy = FaultProxy(registry.url)
    try:
        proxy.set_fault(Fault("status", status=503, methods={"GET"}, path=re.escape(sc.digest_of(payload)) + "$"))
        with RegistryClient(proxy.url) as client:
            sync_repository(cache, client, repo_name)
    finally:
        proxy.stop()
    attachment = Attachment.objects.get(subject_digest=image.digest)
    assert attachment.retry and "The registry failed" in attachment.reason
    assert security(repo_name, image.digest).signature_status == "unsigned"
    sync(cache, repo_name)
    attachment = Attachment.objects.get(subject_digest=image.digest)
    assert not attachment.retry
    assert security(repo_name, image.digest).signature_status == "verified"


def test_a_referrer_pushed_by_oras(registry, pusher, cache, repo_name, tmp_path, monkeypatch):
    """oras (PyPI), an independent client, pushes a Grype report with `subject` set to the
    image, under a tag of its own (oras-py keeps no referrers tag schema index)."""
    import oras.client
    import oras.oci

    image = pusher.push_image(repo_name, "1.0", unique=repo_name)
    report = tmp_path / "grype.json"
    report.write_bytes(sc.as_bytes(sc.grype_report(image.digest, CRITICAL)))
    monkeypatch.chdir(tmp_path)  # oras-py wants the files under the working directory
    client = oras.client.OrasClient(hostname=registry.host, insecure=True)
    subject = oras.oci.Subject(mediaType=image.media_type, digest=image.digest, size=len(image.raw))
    client.push(
        target=f"{registry.host}/{repo_name}:grype",
        files=["grype.json:application/vnd.anchore.grype+json"],
        subject=subject,
        disable_path_validation=True,
    )
    sync(cache, repo_name)
    attachment = Attachment.objects.get(subject_digest=image.digest)
    assert (attachment.via, attachment.format, attachment.scanner) == ("referrer", "Grype JSON", "grype")
    row = security(repo_name, image.digest)
    assert (row.critical, row.high, row.report_id) == (1, 1, attachment.id)


def test_keyless_signature_shows_who_signed_and_is_not_verified(
    registry, pusher, cache, repo_name, trusted, admin_client, settings
):
    identity = "https://github.com/team/app/.github/workflows/release.yml@refs/heads/main"
    key, certificate = sc.keyless_certificate(identity, "https://token.actions.githubusercontent.com")
    good = pusher.push_image(repo_name, "1.0", unique=f"{repo_name}-1")
    forged = pusher.push_image(repo_name, "2.0", unique=f"{repo_name}-2")
    for image, signer in ((good, key), (forged, sc.make_key())):
        payload = sc.simple_signing_payload(reference(registry, repo_name), image.digest)
        annotations = {
            sc.SIGNATURE_ANNOTATION: base64.b64encode(sc.sign(signer, payload)).decode(),
            "dev.sigstore.cosign/certificate": certificate,
        }
        sc.push_cosign(pusher, repo_name, image.digest, "sig", [(sc.SIMPLE_SIGNING, payload, annotations)])
    sync(cache, repo_name)

    attachment = Attachment.objects.get(subject_digest=good.digest)
    assert (attachment.signer, attachment.signer_issuer) == (identity, "https://token.actions.githubusercontent.com")
    assert attachment.signature_status == "unverified"
    assert attachment.signature_reason == (
        f"Not verified (keyless): signed by {identity}, issuer https://token.actions.githubusercontent.com"
    )
    assert security(repo_name, good.digest).signature_status == "unverified"
    # Signed by another key than the certificate's: the certificate does not vouch for it.
    assert security(repo_name, forged.digest).signature_status == "invalid"
    settings.REGISTRY_URL = registry.url
    page = admin_client.get(f"/repositories/{repo_name}/-/tags/1.0/").content.decode()
    assert "not verified (keyless)</span> signed by <code class=\"wrap\">" + identity in page
