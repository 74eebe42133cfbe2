"""dashboard.supplychain on bytes: every format it reads, junk it refuses, signatures it checks."""

from __future__ import annotations

import base64
import json

import pytest

from dashboard.supplychain.documents import Kind, parse_envelope, read_document
from dashboard.supplychain.signatures import (
    Status,
    TrustedKey,
    Verdict,
    check_envelope,
    check_simple_signing,
    load_public_key,
    strongest,
)
from tests.support import supplychain as sc

DIGEST = "sha256:" + "a" * 64
OTHER = "sha256:" + "b" * 64
REFERENCE = "registry.example.com:5000/team/app"
FINDINGS = [
    {"id": "CVE-2024-0001", "severity": "critical", "package": "openssl", "installed": "3.0.11", "fixed": "3.0.13"},
    {"id": "CVE-2024-0002", "severity": "high", "package": "zlib", "fixed": ""},
    {"id": "CVE-2024-0003", "severity": "high"},
    {"id": "CVE-2024-0004", "severity": "low"},
]


def trusted(key, name: str = "release") -> TrustedKey:
    return TrustedKey(name, load_public_key(sc.public_pem(key)))


# Documents ---------------------------------------------------------------------------------------


def test_trivy_json():
    document = read_document(sc.as_bytes(sc.trivy_report(DIGEST, FINDINGS)))
    assert document.kind == Kind.VULNERABILITIES
    assert document.scanner == "trivy"
    assert document.scanned_at == sc.SCANNED
    assert document.subjects == (DIGEST,)
    assert document.severity_counts() == {"critical": 1, "high": 2, "medium": 0, "low": 1, "unknown": 0}
    first = document.vulnerabilities[0]
    assert (first.id, first.package, first.installed, first.fixed_in) == ("CVE-2024-0001", "openssl", "3.0.11", "3.0.13")
    assert first.url == "https://avd.aquasec.com/nvd/cve-2024-0001"


def test_cosign_vuln_attestation_in_a_dsse_envelope():
    predicate = sc.vuln_predicate(sc.trivy_report(DIGEST, FINDINGS))
    for version in ("v1", "v0.1"):
        envelope = sc.dsse_envelope(sc.statement(DIGEST, sc.VULN, predicate, version=version), None)
        document = read_document(envelope)
        assert document.kind == Kind.VULNERABILITIES
        assert document.format == "cosign vuln attestation (Trivy JSON)"
        assert (document.scanner, document.scanner_version) == ("trivy", "0.57.1")
        assert document.subjects == (DIGEST,)
        assert document.predicate_type == sc.VULN
        assert document.severity_counts()["high"] == 2


def test_grype_json():
    document = read_document(sc.as_bytes(sc.grype_report(OTHER, FINDINGS)))
    assert (document.scanner, document.scanner_version) == ("grype", "0.84.0")
    assert document.subjects == (OTHER,)
    assert not document.is_about(DIGEST)
    assert document.vulnerabilities[0].fixed_in == "3.0.13"
    assert document.vulnerabilities[0].url == "https://nvd.nist.gov/vuln/detail/CVE-2024-0001"


def test_sarif_severities_from_security_severity():
    document = read_document(sc.as_bytes(sc.sarif_report(FINDINGS)))
    assert document.format == "SARIF 2.1"
    assert (document.scanner, document.scanner_version) == ("Trivy", "0.57.1")
    assert document.severity_counts() == {"critical": 1, "high": 2, "medium": 0, "low": 1, "unknown": 0}
    assert document.vulnerabilities[0].package == "openssl"
    assert document.vulnerabilities[0].fixed_in == "3.0.13"


def test_cyclonedx_from_the_library_with_and_without_vulnerabilities():
    packages = [("openssl", "3.0.11"), ("zlib", "1.2.13")]
    sbom = read_document(sc.cyclonedx_sbom(packages))
    assert sbom.kind == Kind.SBOM
    assert {(p.name, p.version) for p in sbom.packages} == set(packages)
    assert "pkg:deb/debian/openssl@3.0.11" in {p.purl for p in sbom.packages}
    report = read_document(sc.cyclonedx_sbom(packages, FINDINGS[:2]))
    assert report.kind == Kind.VULNERABILITIES
    assert {(v.id, v.severity, v.package) for v in report.vulnerabilities} == {
        ("CVE-2024-0001", "critical", "openssl"),
        ("CVE-2024-0002", "high", "zlib"),
    }


def test_spdx_from_the_library():
    document = read_document(sc.spdx_sbom([("openssl", "3.0.11"), ("busybox", "1.36.1")]))
    assert document.kind == Kind.SBOM
    assert document.format == "SPDX-2.3 JSON"
    assert (document.scanner, document.scanner_version) == ("syft", "1.18.1")
    assert {(p.name, p.version, p.purl) for p in document.packages} >= {
        ("openssl", "3.0.11", "pkg:deb/debian/openssl@3.0.11")
    }


def test_sbom_attestation_statement():
    spdx = json.loads(sc.spdx_sbom([("openssl", "3.0.11")]))
    document = read_document(sc.as_bytes(sc.statement(DIGEST, "https://spdx.dev/Document", spdx)))
    assert document.kind == Kind.SBOM
    assert document.subjects == (DIGEST,)


@pytest.mark.parametrize(
    ("predicate_type", "predicate", "builder", "built"),
    [
        ("https://slsa.dev/provenance/v0.2", sc.slsa_v02, "https://github.com/actions/runner", "08:10"),
        ("https://slsa.dev/provenance/v1", sc.slsa_v1, "https://github.com/actions/runner/github-hosted", "08:12"),
    ],
)
def test_slsa_provenance(predicate_type, predicate, builder, built):
    body = sc.statement(DIGEST, predicate_type, predicate("https://github.com/team/app", "c0ffee" * 6 + "abcd"))
    document = read_document(sc.as_bytes(body))
    assert document.kind == Kind.PROVENANCE
    provenance = document.provenance
    assert provenance.builder == builder
    assert provenance.source_repository == "https://github.com/team/app"
    assert provenance.commit == "c0ffee" * 6 + "abcd"
    assert provenance.built_at.strftime("%H:%M") == built


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "Not JSON"),
        (b"\xff\xfe junk", "Not JSON"),
        (b'{"SchemaVersion": 2, "Results": [', "Not JSON"),  # truncated
        (b"[1, 2]", "Not a JSON object"),
        (b'{"hello": "world"}', "Not a format"),
        (b'{"payloadType": "application/vnd.in-toto+json", "payload": "%%%", "signatures": []}', "not base64"),
        (b'{"payloadType": "text/plain", "payload": "aGk=", "signatures": []}', "not an in-toto statement"),
        (b'{"_type": "https://in-toto.io/Statement/v1", "predicate": 3}', "without a predicate"),
        (b"[" * 100_000 + b"]" * 100_000, ""),
    ],
)
def test_junk_is_unreadable_with_a_reason(data, reason):
    document = read_document(data)
    assert document.kind == Kind.UNREADABLE
    assert reason in document.reason
    assert document.reason


def test_wrong_types_read_as_absent_fields():
    junk = {"SchemaVersion": 2, "Results": [{"Vulnerabilities": [{"VulnerabilityID": ["x"], "Severity": 7}, "nope"]}, 3]}
    document = read_document(sc.as_bytes(junk))
    assert document.kind == Kind.VULNERABILITIES
    assert [(v.id, v.severity) for v in document.vulnerabilities] == [("", "unknown"), ("", "unknown")]


def test_oversized_payload_is_not_parsed():
    document = read_document(b" " * 2048, max_bytes=1024)
    assert document.kind == Kind.UNREADABLE
    assert "1,024 bytes" in document.reason


def test_only_https_urls_are_kept():
    hostile = [
        {"id": "CVE-1", "severity": "high", "url": "javascript:alert(1)"},
        {"id": "CVE-2", "severity": "high", "url": "http://example.com/x"},
        {"id": "CVE-3", "severity": "high", "url": 'https://example.com/"onmouseover="alert(1)'},
        {"id": "CVE-4", "severity": "high", "url": "https://example.com/ok"},
    ]
    document = read_document(sc.as_bytes(sc.trivy_report(DIGEST, hostile)))
    assert [v.url for v in document.vulnerabilities] == ["", "", "", "https://example.com/ok"]


# Signatures --------------------------------------------------------------------------------------


@pytest.mark.parametrize("kind", ["p256", "p384", "rsa", "ed25519"])
def test_good_simple_signing_signature_is_verified(kind):
    key = sc.make_key(kind)
    payload = sc.simple_signing_payload(REFERENCE, DIGEST)
    verdict = check_simple_signing(payload, sc.sign(key, payload), [trusted(key)], digest=DIGEST, references={REFERENCE})
    assert verdict == Verdict(Status.VERIFIED, "release", verdict.reason)


def test_untrusted_key_is_unverified():
    payload = sc.simple_signing_payload(REFERENCE, DIGEST)
    signature = sc.sign(sc.make_key(), payload)
    verdict = check_simple_signing(payload, signature, [trusted(sc.make_key())], digest=DIGEST, references={REFERENCE})
    assert verdict.status == Status.UNVERIFIED
    assert verdict.key == ""


def test_tampered_payload_does_not_verify():
    key = sc.make_key()
    payload = sc.simple_signing_payload(REFERENCE, OTHER)
    signature = sc.sign(key, payload)
    tampered = payload.replace(OTHER.encode(), DIGEST.encode())
    verdict = check_simple_signing(tampered, signature, [trusted(key)], digest=DIGEST, references={REFERENCE})
    assert verdict.status == Status.UNVERIFIED


def test_signature_for_another_digest_or_repository_is_invalid():
    key = sc.make_key()
    keys = [trusted(sc.make_key(), "other"), trusted(key)]
    payload = sc.simple_signing_payload(REFERENCE, OTHER)
    verdict = check_simple_signing(payload, sc.sign(key, payload), keys, digest=DIGEST, references={REFERENCE})
    assert (verdict.status, verdict.key) == (Status.INVALID, "release")
    assert OTHER in verdict.reason
    payload = sc.simple_signing_payload("evil.example.com/team/app", DIGEST)
    verdict = check_simple_signing(payload, sc.sign(key, payload), keys, digest=DIGEST, references={REFERENCE})
    assert verdict.status == Status.INVALID
    assert "another repository" in verdict.reason


def test_signed_junk_is_invalid():
    key = sc.make_key()
    verdict = check_simple_signing(b"junk", sc.sign(key, b"junk"), [trusted(key)], digest=DIGEST, references={REFERENCE})
    assert verdict.status == Status.INVALID


def test_dsse_envelope_signed_over_pae():
    key = sc.make_key("ed25519")
    body = sc.statement(DIGEST, sc.VULN, sc.vuln_predicate(sc.trivy_report(DIGEST, [])))
    envelope = parse_envelope(sc.dsse_envelope(body, key))
    assert check_envelope(envelope, [trusted(key)], digest=DIGEST).status == Status.VERIFIED
    assert check_envelope(envelope, [trusted(key)], digest=OTHER).status == Status.INVALID
    assert check_envelope(envelope, [trusted(sc.make_key("ed25519"))], digest=DIGEST).status == Status.UNVERIFIED
    unsigned = parse_envelope(sc.dsse_envelope(body, None))
    assert check_envelope(unsigned, [trusted(key)], digest=DIGEST).status == Status.UNSIGNED
    # The signature covers PAE, not the bare payload: one over the payload alone does not check.
    raw = json.loads(sc.dsse_envelope(body, None))
    raw["signatures"] = [{"keyid": "", "sig": base64.b64encode(sc.sign(key, base64.b64decode(raw["payload"]))).decode()}]
    bare = parse_envelope(json.dumps(raw).encode())
    assert check_envelope(bare, [trusted(key)], digest=DIGEST).status == Status.UNVERIFIED


def test_one_verified_signature_wins():
    verdicts = [Verdict(Status.UNVERIFIED), Verdict(Status.VERIFIED, "release"), Verdict(Status.INVALID, "release")]
    assert strongest(verdicts).status == Status.VERIFIED
    assert strongest([Verdict(Status.UNVERIFIED), Verdict(Status.INVALID)]).status == Status.INVALID
    assert strongest([]).status == Status.UNSIGNED


@pytest.mark.parametrize(
    "pem",
    [
        b"not a key",
        b"-----BEGIN PUBLIC KEY-----\nAAAA\n-----END PUBLIC KEY-----\n",
    ],
)
def test_junk_keys_are_refused(pem):
    with pytest.raises(ValueError, match="PEM public key"):
        load_public_key(pem)


def test_small_rsa_keys_are_refused():
    from cryptography.hazmat.primitives.asymmetric import rsa

    small = rsa.generate_private_key(public_exponent=65537, key_size=1024)
    with pytest.raises(ValueError, match="supported"):
        load_public_key(sc.public_pem(small))
