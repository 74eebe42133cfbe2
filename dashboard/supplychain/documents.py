"""Read one attached payload (a report, an SBOM, an attestation, a signature payload) into a Document.

`read_document` never raises: junk, truncated, oversized and unknown payloads come back as a
Document of kind UNREADABLE with the reason. Only the few fields the dashboard shows are read,
each with a type check, so a tool's extras or a newer spec version do not matter.

Shapes, from each format's published schema or specification:
- DSSE envelope: github.com/secure-systems-lab/dsse (envelope.md), `payload` in standard base64;
- in-toto Statement v0.1 and v1: github.com/in-toto/attestation (spec/v1/statement.md);
- cosign simple signing and the vuln predicate: github.com/sigstore/cosign
  (specs/SIGNATURE_SPEC.md, specs/COSIGN_VULN_ATTESTATION_SPEC.md);
- Trivy JSON (`SchemaVersion` 2): aquasecurity/trivy pkg/types/report.go;
- Grype JSON: anchore/grype grype/presenter/models/document.go;
- CycloneDX 1.4-1.6 JSON, SPDX 2.3 JSON, SARIF 2.1.0, SLSA provenance v0.2 and v1.
"""

from __future__ import annotations

import base64
import binascii
import json
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from typing import Any

DEFAULT_MAX_BYTES = 16 * 1024 * 1024
SIMPLE_SIGNING_TYPE = "cosign container image signature"
IN_TOTO_PAYLOAD_TYPE = "application/vnd.in-toto+json"
VULN_PREDICATE = "https://cosign.sigstore.dev/attestation/vuln/v1"
SLSA_V02 = "https://slsa.dev/provenance/v0.2"
SLSA_V1 = "https://slsa.dev/provenance/v1"
SEVERITIES = ("critical", "high", "medium", "low", "unknown")
# Words tools use beside the five the dashboard counts.
_SEVERITY_ALIASES = {"moderate": "medium", "negligible": "low", "info": "low", "none": "low", "important": "high"}
_DIGEST = re.compile(r"sha256:[a-f0-9]{64}")


class Kind(StrEnum):
    VULNERABILITIES = "vulnerabilities"
    SBOM = "sbom"
    PROVENANCE = "provenance"
    SIGNATURE = "signature"
    OTHER = "other"  # readable, but a predicate the dashboard does not show
    UNREADABLE = "unreadable"


@dataclass(frozen=True)
class Vulnerability:
    id: str
    severity: str  # one of SEVERITIES
    package: str = ""
    installed: str = ""
    fixed_in: str = ""
    title: str = ""
    url: str = ""  # https only, else ""


@dataclass(frozen=True)
class Package:
    name: str
    version: str = ""
    purl: str = ""


@dataclass(frozen=True)
class Provenance:
    builder: str = ""
    build_type: str = ""
    source_repository: str = ""
    commit: str = ""
    built_at: datetime | None = None


@dataclass(frozen=True)
class Document:
    kind: Kind
    format: str
    # The digests the document says it is about (an in-toto subject, a report's image digest);
    # empty when it does not say.
    subjects: tuple[str, ...] = ()
    predicate_type: str = ""
    scanner: str = ""
    scanner_version: str = ""
    scanned_at: datetime | None = None
    vulnerabilities: tuple[Vulnerability, ...] = ()
    packages: tuple[Package, ...] = ()
    provenance: Provenance | None = None
    docker_reference: str = ""  # simple signing only
    reason: str = ""  # why UNREADABLE

    def is_about(self, digest: str) -> bool:
        """False when the document names other digests only: a report copied from another image."""
        return not self.subjects or digest in self.subjects

    def severity_counts(self) -> dict[str, int]:
        counts = dict.fromkeys(SEVERITIES, 0)
        for vulnerability in self.vulnerabilities:
            counts[vulnerability.severity] += 1
        return counts


@dataclass(frozen=True)
class Envelope:
    payload_type: str
    payload: bytes
    signatures: tuple[tuple[str, bytes], ...]  # (keyid, signature)


class Unreadable(ValueError):
    """The payload is not what it claims to be; the message says why."""


def unreadable(reason: str) -> Document:
    return Document(Kind.UNREADABLE, "unreadable", reason=reason)


def read_document(data: bytes, *, max_bytes: int = DEFAULT_MAX_BYTES) -> Document:
    """The Document `data` holds, or an UNREADABLE one saying why."""
    if len(data) > max_bytes:
        return unreadable(f"Larger than the {max_bytes:,} bytes the dashboard reads")
    try:
        return _read_object(load_json_object(data))
    except Unreadable as error:
        return unreadable(str(error))
    except RecursionError:
        return unreadable("Nested too deeply to read")


def load_json_object(data: bytes) -> dict[str, Any]:
    try:
        value = json.loads(data)
    except (UnicodeDecodeError, json.JSONDecodeError) as error:
        raise Unreadable(f"Not JSON ({_first_line(error)})") from error
    if not isinstance(value, dict):
        raise Unreadable("Not a JSON object")
    return value


def parse_envelope(data: bytes | Mapping[str, Any]) -> Envelope:
    """A DSSE envelope; raises Unreadable."""
    obj = load_json_object(data) if isinstance(data, bytes) else data
    signatures = []
    for entry in _list(obj, "signatures"):
        if isinstance(entry, dict) and isinstance(entry.get("sig"), str):
            signatures.append((_str(entry, "keyid"), _base64(entry["sig"], "signature")))
    if not isinstance(obj.get("payloadType"), str) or not isinstance(obj.get("payload"), str):
        raise Unreadable("A DSSE envelope without payloadType or payload")
    return Envelope(obj["payloadType"], _base64(obj["payload"], "payload"), tuple(signatures))


def _read_object(obj: dict[str, Any]) -> Document:
    if "payloadType" in obj and "payload" in obj:
        envelope = parse_envelope(obj)
        if envelope.payload_type != IN_TOTO_PAYLOAD_TYPE:
            raise Unreadable(f"A DSSE envelope of {envelope.payload_type[:100]!r}, not an in-toto statement")
        return _read_object(load_json_object(envelope.payload))
    if _str(obj, "_type").startswith("https://in-toto.io/Statement/"):
        return _read_statement(obj)
    if _str(_dict(obj, "critical"), "type") == SIMPLE_SIGNING_TYPE:
        return _read_simple_signing(obj)
    reader = _report_reader(obj)
    if reader is None:
        raise Unreadable("Not a format the dashboard reads")
    return reader(obj)


def _report_reader(obj: dict[str, Any]) -> Callable[[dict[str, Any]], Document] | None:
    if obj.get("bomFormat") == "CycloneDX":
        return _read_cyclonedx
    if _str(obj, "spdxVersion").startswith("SPDX-2"):
        return _read_spdx
    if _str(obj, "version").startswith("2.1") and isinstance(obj.get("runs"), list):
        return _read_sarif
    if "SchemaVersion" in obj and ("Results" in obj or "ArtifactName" in obj):
        return _read_trivy
    if isinstance(obj.get("matches"), list) and ("descriptor" in obj or "source" in obj):
        return _read_grype
    return None


# cosign simple signing -------------------------------------------------------------------------


def _read_simple_signing(obj: dict[str, Any]) -> Document:
    critical = _dict(obj, "critical")
    digest = _str(_dict(critical, "image"), "docker-manifest-digest")
    if not _DIGEST.fullmatch(digest):
        raise Unreadable("A simple-signing payload without a docker-manifest-digest")
    reference = _str(_dict(critical, "identity"), "docker-reference")
    return Document(Kind.SIGNATURE, "cosign simple signing", subjects=(digest,), docker_reference=reference)


# in-toto ---------------------------------------------------------------------------------------


def _read_statement(obj: dict[str, Any]) -> Document:
    subjects = tuple(
        f"sha256:{digest}"
        for subject in _list(obj, "subject")
        if re.fullmatch(r"[a-f0-9]{64}", digest := _str(_dict(subject, "digest"), "sha256"))
    )
    predicate_type = _str(obj, "predicateType")
    predicate = obj.get("predicate")
    if not isinstance(predicate, dict):
        raise Unreadable("An in-toto statement without a predicate object")
    document = _read_predicate(predicate_type, predicate)
    return Document(**{**document.__dict__, "subjects": subjects, "predicate_type": predicate_type})


def _read_predicate(predicate_type: str, predicate: dict[str, Any]) -> Document:
    if predicate_type == VULN_PREDICATE:
        return _read_vuln_predicate(predicate)
    if predicate_type.startswith(SLSA_V02):
        return _read_slsa_v02(predicate)
    if predicate_type.startswith(SLSA_V1):
        return _read_slsa_v1(predicate)
    if predicate_type.startswith("https://cyclonedx.org/"):
        return _read_cyclonedx(predicate)
    if predicate_type.startswith("https://spdx.dev/"):
        return _read_spdx(predicate)
    return Document(Kind.OTHER, "in-toto attestation")


def _read_vuln_predicate(predicate: dict[str, Any]) -> Document:
    scanner = _dict(predicate, "scanner")
    result = scanner.get("result")
    reader = _report_reader(result) if isinstance(result, dict) else None
    if reader is None:
        raise Unreadable("A cosign vuln attestation whose scanner.result is not a report the dashboard reads")
    report = reader(result)
    # pkg:github/aquasecurity/trivy@v0.50.1 -> trivy
    name = _str(scanner, "uri").split("@", 1)[0].rsplit("/", 1)[-1] or report.scanner
    finished = _timestamp(_dict(predicate, "metadata"), "scanFinishedOn")
    return Document(
        **{
            **report.__dict__,
            "format": f"cosign vuln attestation ({report.format})",
            "scanner": name,
            "scanner_version": _str(scanner, "version") or report.scanner_version,
            "scanned_at": finished or report.scanned_at,
        }
    )


def _read_slsa_v02(predicate: dict[str, Any]) -> Document:
    source = _dict(_dict(predicate, "invocation"), "configSource")
    commit = _commit(_dict(source, "digest"))
    repository = _str(source, "uri")
    if not repository:  # some builders only list the checkout among the materials
        for material in _list(predicate, "materials"):
            if _str(material, "uri").startswith("git+"):
                repository, commit = _str(material, "uri"), _commit(_dict(material, "digest"))
                break
    provenance = Provenance(
        builder=_str(_dict(predicate, "builder"), "id"),
        build_type=_str(predicate, "buildType"),
        source_repository=_git_repository(repository),
        commit=commit,
        built_at=_timestamp(_dict(predicate, "metadata"), "buildFinishedOn"),
    )
    return Document(Kind.PROVENANCE, "SLSA provenance v0.2", provenance=provenance)


def _read_slsa_v1(predicate: dict[str, Any]) -> Document:
    definition = _dict(predicate, "buildDefinition")
    run = _dict(predicate, "runDetails")
    repository = commit = ""
    for dependency in _list(definition, "resolvedDependencies"):
        if _str(dependency, "uri").startswith("git+"):
            repository, commit = _str(dependency, "uri"), _commit(_dict(dependency, "digest"))
            break
    metadata = _dict(run, "metadata")
    provenance = Provenance(
        builder=_str(_dict(run, "builder"), "id"),
        build_type=_str(definition, "buildType"),
        source_repository=_git_repository(repository),
        commit=commit,
        built_at=_timestamp(metadata, "finishedOn") or _timestamp(metadata, "startedOn"),
    )
    return Document(Kind.PROVENANCE, "SLSA provenance v1", provenance=provenance)


def _commit(digest: dict[str, Any]) -> str:
    return _str(digest, "gitCommit") or _str(digest, "sha1")


def _git_repository(uri: str) -> str:
    """`git+https://github.com/org/app@refs/heads/main` -> `https://github.com/org/app`."""
    uri = uri.removeprefix("git+")
    scheme, separator, rest = uri.partition("://")
    return f"{scheme}{separator}{rest.split('@', 1)[0]}" if separator else uri


# Vulnerability reports -------------------------------------------------------------------------


def _read_trivy(obj: dict[str, Any]) -> Document:
    vulnerabilities = []
    packages = []
    for result in _list(obj, "Results"):
        for entry in _list(result, "Vulnerabilities"):
            vulnerabilities.append(
                Vulnerability(
                    id=_str(entry, "VulnerabilityID"),
                    severity=severity(_str(entry, "Severity")),
                    package=_str(entry, "PkgName"),
                    installed=_str(entry, "InstalledVersion"),
                    fixed_in=_str(entry, "FixedVersion"),
                    title=_str(entry, "Title"),
                    url=https_url(_str(entry, "PrimaryURL")),
                )
            )
        packages += [
            Package(_str(entry, "Name"), _str(entry, "Version"), _str(_dict(entry, "Identifier"), "PURL"))
            for entry in _list(result, "Packages")
        ]
    metadata = _dict(obj, "Metadata")
    repo_digests = [value.rpartition("@")[2] for value in _list(metadata, "RepoDigests") if isinstance(value, str)]
    return Document(
        Kind.VULNERABILITIES,
        "Trivy JSON",
        subjects=tuple(digest for digest in repo_digests if _DIGEST.fullmatch(digest)),
        scanner="trivy",
        scanned_at=_timestamp(obj, "CreatedAt"),
        vulnerabilities=tuple(vulnerabilities),
        packages=tuple(package for package in packages if package.name),
    )


def _read_grype(obj: dict[str, Any]) -> Document:
    vulnerabilities = []
    for match in _list(obj, "matches"):
        vulnerability = _dict(match, "vulnerability")
        artifact = _dict(match, "artifact")
        fixes = _list(_dict(vulnerability, "fix"), "versions")
        urls = [_str(vulnerability, "dataSource")] + [url for url in _list(vulnerability, "urls") if isinstance(url, str)]
        vulnerabilities.append(
            Vulnerability(
                id=_str(vulnerability, "id"),
                severity=severity(_str(vulnerability, "severity")),
                package=_str(artifact, "name"),
                installed=_str(artifact, "version"),
                fixed_in=", ".join(fix for fix in fixes if isinstance(fix, str)),
                title=_str(vulnerability, "description")[:500],
                url=next((url for url in map(https_url, urls) if url), ""),
            )
        )
    target = _dict(_dict(obj, "source"), "target")
    candidates = [_str(target, "manifestDigest")] + [
        value.rpartition("@")[2] for value in _list(target, "repoDigests") if isinstance(value, str)
    ]
    descriptor = _dict(obj, "descriptor")
    return Document(
        Kind.VULNERABILITIES,
        "Grype JSON",
        subjects=tuple(dict.fromkeys(digest for digest in candidates if _DIGEST.fullmatch(digest))),
        scanner=_str(descriptor, "name") or "grype",
        scanner_version=_str(descriptor, "version"),
        scanned_at=_timestamp(descriptor, "timestamp"),
        vulnerabilities=tuple(vulnerabilities),
    )


# Trivy's SARIF message: "Package: openssl\nInstalled Version: 3.0.11\n...Fixed Version: 3.0.13\n..."
_SARIF_FIELD = re.compile(r"^(Package|Installed Version|Fixed Version): *(.*)$", re.MULTILINE)


def _read_sarif(obj: dict[str, Any]) -> Document:
    vulnerabilities = []
    scanner = scanner_version = ""
    for run in _list(obj, "runs"):
        driver = _dict(_dict(run, "tool"), "driver")
        scanner = scanner or _str(driver, "name")
        scanner_version = scanner_version or _str(driver, "version")
        rules = {_str(rule, "id"): rule for rule in _list(driver, "rules")}
        for result in _list(run, "results"):
            rule = rules.get(_str(result, "ruleId"), {})
            message = _str(_dict(result, "message"), "text")
            fields = dict(_SARIF_FIELD.findall(message))
            vulnerabilities.append(
                Vulnerability(
                    id=_str(result, "ruleId"),
                    severity=_sarif_severity(result, rule),
                    package=fields.get("Package", ""),
                    installed=fields.get("Installed Version", ""),
                    fixed_in=fields.get("Fixed Version", ""),
                    title=_str(_dict(rule, "shortDescription"), "text") or message.split("\n", 1)[0][:500],
                    url=https_url(_str(rule, "helpUri")),
                )
            )
    return Document(
        Kind.VULNERABILITIES,
        "SARIF 2.1",
        scanner=scanner,
        scanner_version=scanner_version,
        vulnerabilities=tuple(vulnerabilities),
    )


def _sarif_severity(result: dict[str, Any], rule: dict[str, Any]) -> str:
    """GitHub's `security-severity` (a CVSS score) when the rule has one, else the level."""
    properties = _dict(rule, "properties")
    try:
        score = float(_str(properties, "security-severity") or "nan")
    except ValueError:
        score = float("nan")
    if score >= 9.0:
        return "critical"
    if score >= 7.0:
        return "high"
    if score >= 4.0:
        return "medium"
    if score > 0:
        return "low"
    level = _str(result, "level") or _str(_dict(rule, "defaultConfiguration"), "level")
    return {"error": "high", "warning": "medium", "note": "low"}.get(level, "unknown")


# SBOMs -----------------------------------------------------------------------------------------


def _read_cyclonedx(obj: dict[str, Any]) -> Document:
    components = _list(obj, "components")
    packages = tuple(
        Package(_str(c, "name"), _str(c, "version"), _str(c, "purl")) for c in components if _str(c, "name")
    )
    by_ref = {_str(c, "bom-ref"): c for c in components if _str(c, "bom-ref")}
    metadata = _dict(obj, "metadata")
    tool_name, tool_version = _cyclonedx_tool(metadata)
    common = {
        "scanner": tool_name,
        "scanner_version": tool_version,
        "scanned_at": _timestamp(metadata, "timestamp"),
        "packages": packages,
    }
    if "vulnerabilities" not in obj:
        return Document(Kind.SBOM, "CycloneDX JSON", **common)
    vulnerabilities = []
    for entry in _list(obj, "vulnerabilities"):
        ratings = [severity(_str(rating, "severity")) for rating in _list(entry, "ratings")]
        known = [rating for rating in ratings if rating != "unknown"]
        affected = [by_ref.get(_str(affect, "ref"), {}) for affect in _list(entry, "affects")]
        package = next((component for component in affected if component), {})
        fixed = [
            _str(version, "version")
            for affect in _list(entry, "affects")
            for version in _list(affect, "versions")
            if _str(version, "status") == "unaffected"
        ]
        vulnerabilities.append(
            Vulnerability(
                id=_str(entry, "id"),
                severity=min(known, key=SEVERITIES.index) if known else "unknown",
                package=_str(package, "name"),
                installed=_str(package, "version"),
                fixed_in=", ".join(version for version in fixed if version),
                title=(_str(entry, "description") or _str(entry, "detail"))[:500],
                url=https_url(_str(_dict(entry, "source"), "url")),
            )
        )
    return Document(Kind.VULNERABILITIES, "CycloneDX JSON", vulnerabilities=tuple(vulnerabilities), **common)


def _cyclonedx_tool(metadata: dict[str, Any]) -> tuple[str, str]:
    tools = metadata.get("tools")
    # 1.4: a list of tools; 1.5+: {"components": [...], "services": [...]}
    entries = _list(tools, "components") if isinstance(tools, dict) else tools if isinstance(tools, list) else []
    for tool in entries:
        if isinstance(tool, dict) and _str(tool, "name"):
            return _str(tool, "name"), _str(tool, "version")
    return "", ""


def _read_spdx(obj: dict[str, Any]) -> Document:
    packages = []
    for entry in _list(obj, "packages"):
        purls = [_str(ref, "referenceLocator") for ref in _list(entry, "externalRefs") if _str(ref, "referenceType") == "purl"]
        purl = purls[0] if purls else ""
        if _str(entry, "name"):
            packages.append(Package(_str(entry, "name"), _str(entry, "versionInfo"), purl))
    creation = _dict(obj, "creationInfo")
    creators = [creator for creator in _list(creation, "creators") if isinstance(creator, str)]
    tool = next((creator.removeprefix("Tool:").strip() for creator in creators if creator.startswith("Tool:")), "")
    name, _, version = tool.rpartition("-") if re.search(r"-\d", tool) else (tool, "", "")
    return Document(
        Kind.SBOM,
        f"{_str(obj, 'spdxVersion')} JSON",
        scanner=name,
        scanner_version=version,
        scanned_at=_timestamp(creation, "created"),
        packages=tuple(packages),
    )


# Field access: wrong types read as absent ------------------------------------------------------


def severity(value: str) -> str:
    word = value.strip().lower()
    word = _SEVERITY_ALIASES.get(word, word)
    return word if word in SEVERITIES else "unknown"


def https_url(value: str) -> str:
    """`value` when it is an https URL without spaces or control characters, else ''."""
    return value if re.fullmatch(r"https://[^\s\"'<>\\\x00-\x1f\x7f]+", value) else ""


def _dict(obj: Any, key: str) -> dict[str, Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, dict) else {}


def _list(obj: Any, key: str) -> list[Any]:
    value = obj.get(key) if isinstance(obj, dict) else None
    return value if isinstance(value, list) else []


def _str(obj: Any, key: str) -> str:
    value = obj.get(key) if isinstance(obj, dict) else None
    if isinstance(value, bool) or not isinstance(value, str | int | float):
        return ""
    return str(value)[:1000]


def _timestamp(obj: dict[str, Any], key: str) -> datetime | None:
    try:
        value = datetime.fromisoformat(_str(obj, key))
    except ValueError:
        return None
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def _base64(value: str, what: str) -> bytes:
    # DSSE allows the URL-safe alphabet too.
    if not re.fullmatch(r"[A-Za-z0-9+/_-]*={0,2}", value):
        raise Unreadable(f"The {what} is not base64")
    try:
        return base64.urlsafe_b64decode(value.replace("+", "-").replace("/", "_") + "=" * (-len(value) % 4))
    except binascii.Error as error:
        raise Unreadable(f"The {what} is not base64") from error


def _first_line(error: Exception) -> str:
    return str(error).split("\n", 1)[0][:200]

