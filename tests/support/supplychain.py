"""Real supply-chain documents and keys for the tests, made the way the tools make them.

- Keys and signatures: `cryptography`, in cosign's formats (specs/SIGNATURE_SPEC.md in
  sigstore/cosign): PEM PKIX public keys; ECDSA signatures ASN.1 DER; base64 in annotations.
- Simple-signing payload: cosign's `payload.Cosign` JSON (critical.identity.docker-reference,
  critical.image.docker-manifest-digest, critical.type, optional).
- DSSE: secure-systems-lab/dsse envelope.md (payloadType, base64 payload, signatures over PAE).
- in-toto Statement v0.1 / v1: in-toto/attestation spec/v1/statement.md.
- cosign vuln predicate: sigstore/cosign specs/COSIGN_VULN_ATTESTATION_SPEC.md.
- Trivy JSON: aquasecurity/trivy pkg/types/report.go (SchemaVersion 2, Results[].Vulnerabilities).
- Grype JSON: anchore/grype grype/presenter/models/document.go (matches, source, descriptor).
- SARIF 2.1.0: OASIS sarif-v2.1.0 schema, with GitHub's `security-severity` rule property as
  Trivy's SARIF output writes it.
- CycloneDX and SPDX: produced by cyclonedx-python-lib and spdx-tools themselves.
- SLSA provenance v0.2 / v1: slsa.dev/provenance/v0.2 and /v1 field names.
"""

from __future__ import annotations

import base64
import hashlib
import io
import json
from datetime import UTC, datetime
from typing import Any

from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
DSSE = "application/vnd.dsse.envelope.v1+json"
IN_TOTO = "application/vnd.in-toto+json"
SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
VULN = "https://cosign.sigstore.dev/attestation/vuln/v1"
SCANNED = datetime(2026, 11, 20, 8, 30, tzinfo=UTC)

PrivateKey = ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey | ed25519.Ed25519PrivateKey


def make_key(kind: str = "p256") -> PrivateKey:
    if kind == "p256":
        return ec.generate_private_key(ec.SECP256R1())
    if kind == "p384":
        return ec.generate_private_key(ec.SECP384R1())
    if kind == "rsa":
        return rsa.generate_private_key(public_exponent=65537, key_size=2048)
    if kind == "ed25519":
        return ed25519.Ed25519PrivateKey.generate()
    raise ValueError(kind)


def public_pem(key: PrivateKey) -> bytes:
    return key.public_key().public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo)


def sign(key: PrivateKey, data: bytes) -> bytes:
    if isinstance(key, ec.EllipticCurvePrivateKey):
        algorithm = hashes.SHA384() if key.curve.name == "secp384r1" else hashes.SHA256()
        return key.sign(data, ec.ECDSA(algorithm))
    if isinstance(key, rsa.RSAPrivateKey):
        return key.sign(data, padding.PKCS1v15(), hashes.SHA256())
    return key.sign(data)


def simple_signing_payload(reference: str, digest: str) -> bytes:
    """cosign's payload, byte for byte as `cosign sign` marshals it (Go's json, no spaces)."""
    payload = {
        "critical": {
            "identity": {"docker-reference": reference},
            "image": {"docker-manifest-digest": digest},
            "type": "cosign container image signature",
        },
        "optional": None,
    }
    return json.dumps(payload, separators=(",", ":")).encode()


def pae(payload_type: str, payload: bytes) -> bytes:
    return b"DSSEv1 %d %s %d %s" % (len(payload_type), payload_type.encode(), len(payload), payload)


def statement(digest: str, predicate_type: str, predicate: dict[str, Any], *, version: str = "v1") -> dict[str, Any]:
    statement_type = "https://in-toto.io/Statement/v1" if version == "v1" else "https://in-toto.io/Statement/v0.1"
    return {
        "_type": statement_type,
        "subject": [{"name": "image", "digest": {"sha256": digest.removeprefix("sha256:")}}],
        "predicateType": predicate_type,
        "predicate": predicate,
    }


def dsse_envelope(payload: dict[str, Any] | bytes, key: PrivateKey | None) -> bytes:
    body = payload if isinstance(payload, bytes) else json.dumps(payload).encode()
    signatures = [] if key is None else [{"keyid": "", "sig": base64.b64encode(sign(key, pae(IN_TOTO, body))).decode()}]
    envelope = {"payloadType": IN_TOTO, "payload": base64.b64encode(body).decode(), "signatures": signatures}
    return json.dumps(envelope).encode()


def trivy_report(digest: str, vulnerabilities: list[dict[str, str]], *, repository: str = "app") -> dict[str, Any]:
    """`vulnerabilities`: dicts with id, severity, package, installed, fixed, title, url."""
    return {
        "SchemaVersion": 2,
        "CreatedAt": SCANNED.isoformat(),
        "ArtifactName": f"{repository}@{digest}",
        "ArtifactType": "container_image",
        "Metadata": {"OS": {"Family": "debian", "Name": "12.5"}, "RepoDigests": [f"{repository}@{digest}"]},
        "Results": [
            {
                "Target": f"{repository} (debian 12.5)",
                "Class": "os-pkgs",
                "Type": "debian",
                "Vulnerabilities": [
                    {
                        "VulnerabilityID": v["id"],
                        "PkgName": v.get("package", "openssl"),
                        "InstalledVersion": v.get("installed", "3.0.11-1"),
                        "FixedVersion": v.get("fixed", ""),
                        "Severity": v["severity"].upper(),
                        "Title": v.get("title", "A flaw"),
                        "PrimaryURL": v.get("url", f"https://avd.aquasec.com/nvd/{v['id'].lower()}"),
                    }
                    for v in vulnerabilities
                ],
            }
        ],
    }


def vuln_predicate(report: dict[str, Any]) -> dict[str, Any]:
    return {
        "invocation": {"parameters": None, "uri": "", "event_id": "", "builder.id": ""},
        "scanner": {
            "uri": "pkg:github/aquasecurity/trivy@v0.57.1",
            "version": "0.57.1",
            "db": {"uri": "", "version": ""},
            "result": report,
        },
        "metadata": {"scanStartedOn": "2026-11-20T08:29:00Z", "scanFinishedOn": SCANNED.isoformat()},
    }


def grype_report(digest: str, vulnerabilities: list[dict[str, str]]) -> dict[str, Any]:
    return {
        "matches": [
            {
                "vulnerability": {
                    "id": v["id"],
                    "dataSource": v.get("url", f"https://nvd.nist.gov/vuln/detail/{v['id']}"),
                    "severity": v["severity"].capitalize(),
                    "urls": [],
                    "description": v.get("title", "A flaw"),
                    "fix": {"versions": [v["fixed"]] if v.get("fixed") else [], "state": "fixed" if v.get("fixed") else "not-fixed"},
                },
                "artifact": {"name": v.get("package", "openssl"), "version": v.get("installed", "3.0.11"), "type": "deb"},
            }
            for v in vulnerabilities
        ],
        "source": {"type": "image", "target": {"userInput": "app", "manifestDigest": digest, "repoDigests": []}},
        "descriptor": {"name": "grype", "version": "0.84.0", "timestamp": SCANNED.isoformat()},
    }


def sarif_report(vulnerabilities: list[dict[str, str]]) -> dict[str, Any]:
    scores = {"critical": "9.8", "high": "7.5", "medium": "5.3", "low": "2.1"}
    return {
        "version": "2.1.0",
        "$schema": "https://json.schemastore.org/sarif-2.1.0.json",
        "runs": [
            {
                "tool": {
                    "driver": {
                        "name": "Trivy",
                        "version": "0.57.1",
                        "rules": [
                            {
                                "id": v["id"],
                                "shortDescription": {"text": v.get("title", "A flaw")},
                                "helpUri": v.get("url", f"https://avd.aquasec.com/nvd/{v['id'].lower()}"),
                                "properties": {"security-severity": scores[v["severity"]], "tags": ["vulnerability"]},
                            }
                            for v in vulnerabilities
                        ],
                    }
                },
                "results": [
                    {
                        "ruleId": v["id"],
                        "level": "error",
                        "message": {
                            "text": f"Package: {v.get('package', 'openssl')}\nInstalled Version: "
                            f"{v.get('installed', '3.0.11')}\nVulnerability {v['id']}\nFixed Version: {v.get('fixed', '')}"
                        },
                    }
                    for v in vulnerabilities
                ],
            }
        ],
    }


def cyclonedx_sbom(packages: list[tuple[str, str]], vulnerabilities: list[dict[str, str]] | None = None) -> bytes:
    """A CycloneDX 1.5 JSON document written by cyclonedx-python-lib."""
    from cyclonedx.model import XsUri
    from cyclonedx.model.bom import Bom
    from cyclonedx.model.component import Component, ComponentType
    from cyclonedx.model.vulnerability import (
        BomTarget,
        Vulnerability,
        VulnerabilityRating,
        VulnerabilitySeverity,
        VulnerabilitySource,
    )
    from cyclonedx.output.json import JsonV1Dot5
    from packageurl import PackageURL

    bom = Bom()
    components = {}
    for name, version in packages:
        component = Component(
            name=name,
            version=version,
            type=ComponentType.LIBRARY,
            purl=PackageURL(type="deb", namespace="debian", name=name, version=version),
            bom_ref=f"{name}@{version}",
        )
        bom.components.add(component)
        components[name] = component
    for v in vulnerabilities or []:
        target = components[v.get("package", packages[0][0])]
        bom.vulnerabilities.add(
            Vulnerability(
                id=v["id"],
                source=VulnerabilitySource(name="NVD", url=XsUri(v.get("url", f"https://nvd.nist.gov/vuln/detail/{v['id']}"))),
                ratings=[VulnerabilityRating(severity=VulnerabilitySeverity(v["severity"]))],
                description=v.get("title", "A flaw"),
                affects=[BomTarget(ref=target.bom_ref.value)],
            )
        )
    return JsonV1Dot5(bom).output_as_string().encode()


def spdx_sbom(packages: list[tuple[str, str]]) -> bytes:
    """An SPDX 2.3 JSON document written by spdx-tools."""
    from spdx_tools.spdx.model import (
        Actor,
        ActorType,
        CreationInfo,
        Document,
        ExternalPackageRef,
        ExternalPackageRefCategory,
        Package,
    )
    from spdx_tools.spdx.writer.json.json_writer import write_document_to_stream

    info = CreationInfo(
        spdx_version="SPDX-2.3",
        spdx_id="SPDXRef-DOCUMENT",
        name="app",
        document_namespace="https://example.com/spdx/app",
        creators=[Actor(ActorType.TOOL, "syft-1.18.1")],
        created=SCANNED.replace(tzinfo=None),
    )
    document = Document(
        creation_info=info,
        packages=[
            Package(
                spdx_id=f"SPDXRef-Package-{index}",
                name=name,
                download_location="NOASSERTION",
                version=version,
                external_references=[
                    ExternalPackageRef(ExternalPackageRefCategory.PACKAGE_MANAGER, "purl", f"pkg:deb/debian/{name}@{version}")
                ],
            )
            for index, (name, version) in enumerate(packages)
        ],
    )
    stream = io.StringIO()
    write_document_to_stream(document, stream, validate=False)
    return stream.getvalue().encode()


def slsa_v02(repository_url: str, commit: str) -> dict[str, Any]:
    return {
        "builder": {"id": "https://github.com/actions/runner"},
        "buildType": "https://mobyproject.org/buildkit@v1",
        "invocation": {"configSource": {"uri": f"git+{repository_url}@refs/heads/main", "digest": {"sha1": commit}}},
        "metadata": {"buildStartedOn": "2026-11-20T08:00:00Z", "buildFinishedOn": "2026-11-20T08:10:00Z"},
        "materials": [],
    }


def slsa_v1(repository_url: str, commit: str) -> dict[str, Any]:
    return {
        "buildDefinition": {
            "buildType": "https://actions.github.io/buildtypes/workflow/v1",
            "externalParameters": {"workflow": {"ref": "refs/heads/main", "repository": repository_url}},
            "resolvedDependencies": [{"uri": f"git+{repository_url}@refs/heads/main", "digest": {"gitCommit": commit}}],
        },
        "runDetails": {
            "builder": {"id": "https://github.com/actions/runner/github-hosted"},
            "metadata": {"invocationId": "1", "startedOn": "2026-11-20T08:00:00Z", "finishedOn": "2026-11-20T08:12:00Z"},
        },
    }


def as_bytes(document: dict[str, Any]) -> bytes:
    return json.dumps(document).encode()


def digest_of(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


# Pushing them next to an image, as cosign, oras and BuildKit lay them out ------------------------

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"


def _descriptor(media_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
    return {"mediaType": media_type, "size": len(data), "digest": digest_of(data), **extra}


def push_cosign(pusher, repository: str, subject: str, suffix: str, layers: list[tuple[str, bytes, dict[str, str]]]) -> str:
    """A cosign `sha256-<hex>.<suffix>` manifest: cosign's placeholder image config and one
    layer per (media type, payload, annotations). Returns the manifest's digest."""
    config = json.dumps(
        {
            "architecture": "",
            "created": "0001-01-01T00:00:00Z",
            "history": [{"created": "0001-01-01T00:00:00Z"}],
            "os": "",
            "rootfs": {"type": "layers", "diff_ids": [digest_of(data) for _, data, _ in layers]},
            "config": {},
        },
        separators=(",", ":"),
    ).encode()
    for blob in [config, *(data for _, data, _ in layers)]:
        pusher.upload_blob(repository, blob)
    manifest = {
        "schemaVersion": 2,
        "mediaType": OCI_MANIFEST,
        "config": _descriptor(OCI_CONFIG, config),
        "layers": [
            _descriptor(media_type, data, **({"annotations": annotations} if annotations else {}))
            for media_type, data, annotations in layers
        ],
    }
    raw = json.dumps(manifest, separators=(",", ":")).encode()
    tag = f"sha256-{subject.removeprefix('sha256:')}.{suffix}"
    return pusher.push_raw_manifest(repository, tag, raw, OCI_MANIFEST)


def push_signature(pusher, repository: str, subject: str, key: PrivateKey, reference: str, *, signed_digest: str | None = None) -> str:
    """`cosign sign --key`: a simple-signing payload for `signed_digest` (default: the subject)."""
    payload = simple_signing_payload(reference, signed_digest or subject)
    signature = base64.b64encode(sign(key, payload)).decode()
    return push_cosign(pusher, repository, subject, "sig", [(SIMPLE_SIGNING, payload, {SIGNATURE_ANNOTATION: signature})])


def push_attestation(pusher, repository: str, subject: str, body: dict[str, Any], key: PrivateKey | None) -> str:
    """`cosign attest --key`: the DSSE envelope of an in-toto statement as a `.att` layer."""
    envelope = dsse_envelope(body, key)
    return push_cosign(pusher, repository, subject, "att", [(DSSE, envelope, {"predicateType": body["predicateType"]})])


def push_referrer(pusher, repository: str, subject, artifact_type: str, payload: bytes) -> str:
    """An OCI 1.1 artifact with `subject`, plus the referrers tag schema's index (`sha256-<hex>`)
    that clients keep on registries without the referrers API. Returns the artifact's digest."""
    artifact = pusher.push_artifact(repository, None, artifact_type=artifact_type, payload=payload, subject=subject)
    tag = subject.digest.replace(":", "-")
    response = pusher.session.get(
        f"{pusher.base_url}/v2/{repository}/manifests/{tag}", headers={"Accept": OCI_INDEX}, timeout=10
    )
    index = response.json() if response.status_code == 200 else {"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": []}
    index["manifests"].append(_descriptor(OCI_MANIFEST, artifact.raw, artifactType=artifact_type))
    pusher.push_raw_manifest(repository, tag, json.dumps(index).encode(), OCI_INDEX)
    return artifact.digest


def push_buildkit_index(pusher, repository: str, tag: str, statements: dict[str, list[dict[str, Any]]], unique: str) -> dict[str, Any]:
    """An OCI index as `docker buildx build --sbom --provenance` pushes it: a platform image per
    key of `statements` (os/arch) and, for each, an attestation manifest (platform
    unknown/unknown, annotated with the image's digest) whose in-toto layers are the statements
    made for that image's digest. Returns {"index": digest, "images": {platform: digest}}."""
    entries = []
    images = {}
    for platform, make_statements in statements.items():
        os_name, arch = platform.split("/")
        image = pusher.push_image(repository, None, fmt="oci", os=os_name, arch=arch, unique=f"{unique}{platform}")
        images[platform] = image.digest
        entries.append(_descriptor(OCI_MANIFEST, image.raw, platform={"architecture": arch, "os": os_name}))
        layers = [json.dumps(s).encode() for s in make_statements(image.digest)]
        config = json.dumps({"architecture": "unknown", "os": "unknown", "config": {}, "rootfs": {"type": "layers", "diff_ids": [digest_of(layer) for layer in layers]}}).encode()
        for blob in [config, *layers]:
            pusher.upload_blob(repository, blob)
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": _descriptor(OCI_CONFIG, config),
            "layers": [
                _descriptor(IN_TOTO, layer, annotations={"in-toto.io/predicate-type": json.loads(layer)["predicateType"]})
                for layer in layers
            ],
        }
        raw = json.dumps(manifest).encode()
        pusher.push_raw_manifest(repository, digest_of(raw), raw, OCI_MANIFEST)
        entries.append(
            _descriptor(
                OCI_MANIFEST,
                raw,
                platform={"architecture": "unknown", "os": "unknown"},
                annotations={"vnd.docker.reference.digest": image.digest, "vnd.docker.reference.type": "attestation-manifest"},
            )
        )
    raw = json.dumps({"schemaVersion": 2, "mediaType": OCI_INDEX, "manifests": entries}).encode()
    return {"index": pusher.push_raw_manifest(repository, tag, raw, OCI_INDEX), "images": images}


def keyless_certificate(identity: str, issuer: str) -> tuple[PrivateKey, str]:
    """A key and a certificate shaped like Fulcio's: the identity in the SAN (a workflow URI),
    the OIDC issuer in Sigstore's extension 1.3.6.1.4.1.57264.1.1. Self-signed: no trust root."""
    from datetime import timedelta

    from cryptography import x509
    from cryptography.x509.oid import NameOID

    key = make_key()
    name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "sigstore.dev")])
    now = datetime.now(UTC)
    certificate = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([]))
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=1))
        .not_valid_after(now + timedelta(minutes=10))
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(identity)]), critical=True)
        .add_extension(
            x509.UnrecognizedExtension(x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1"), issuer.encode()), critical=False
        )
        .sign(key, hashes.SHA256())
    )
    return key, certificate.public_bytes(serialization.Encoding.PEM).decode()
