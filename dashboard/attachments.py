"""What CI attached to each version, found during the sync and summed up per version.

Three ways an artifact is attached to a version (a digest) in the same repository:
- cosign's tags `sha256-<hex>.sig`, `.att` and `.sbom` (sigstore/cosign specs/SIGNATURE_SPEC.md);
- OCI 1.1 referrers: a manifest whose `subject` is the version. Distribution 2.8 and 3.x have
  no referrers API; clients (oras, cosign, notation) then keep the referrers tag schema, a tag
  `sha256-<hex>` on an index of the referrers, which the sync reads like any tagged index, so
  every referrer listed there is a cached manifest with its subject;
- BuildKit attestation manifests inside an image index: entries annotated
  `vnd.docker.reference.type: attestation-manifest`, `vnd.docker.reference.digest: <image>`.

The artifact manifests themselves are cached by the sync like every other manifest. What this
module adds is their payloads: each layer's blob is downloaded once per artifact digest (an
Attachment row per layer says it was read), parsed, and kept with its findings and packages.
Blobs over ATTACHMENT_MAX_BYTES are refused by the size their descriptor states, before any
request. A no-change resync finds every artifact already read and downloads nothing.
"""

from __future__ import annotations

import base64
import logging
import re
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path

from django.conf import settings
from django.db import transaction
from django.db.models import Q
from django.utils import timezone

from dashboard.actions import ActionRefused
from dashboard.models import Attachment, Finding, Manifest, Pin, Repository, SbomPackage, Tag, TrustedKey, VersionSecurity
from dashboard.registries import public_host
from dashboard.registry import (
    Descriptor,
    DigestMismatch,
    ImageManifest,
    InvalidResponse,
    NotFound,
    RegistryClient,
    RegistryError,
    parse_manifest,
)
from dashboard.supplychain import signatures
from dashboard.supplychain.documents import Document, Kind, Unreadable, parse_envelope, read_document
from dashboard.supplychain.signatures import SIGNATURE_ANNOTATION, Status, Verdict

logger = logging.getLogger(__name__)

COSIGN_TAG = re.compile(r"sha256-(?P<hex>[a-f0-9]{64})\.(?P<suffix>sig|att|sbom)")
SIMPLE_SIGNING = "application/vnd.dev.cosign.simplesigning.v1+json"
ATTESTATION_TYPE = "vnd.docker.reference.type"
ATTESTATION_SUBJECT = "vnd.docker.reference.digest"
# BuildKit gives attestation manifests this platform so that runtimes never pick them.
ATTESTATION_PLATFORM = "unknown/unknown"
MAX_LAYERS = 20  # per artifact; cosign adds one layer per signature
COUNTED = ("critical", "high", "medium", "low", "unknown")


@dataclass(frozen=True)
class Candidate:
    digest: str  # the artifact
    subject: str  # the version it is attached to
    via: str


def trusted_keys() -> list[signatures.TrustedKey]:
    """SIGNATURE_PUBLIC_KEYS' files, then the keys admins added. Unreadable entries are left
    out here; the system check `dashboard.E010` names them."""
    keys = []
    for path, pem in key_files():
        try:
            keys.append(signatures.TrustedKey(Path(path).stem, signatures.load_public_key(pem)))
        except ValueError:
            continue
    for name, pem in TrustedKey.objects.values_list("name", "public_key"):
        try:
            keys.append(signatures.TrustedKey(name, signatures.load_public_key(pem)))
        except ValueError:
            continue
    return keys


def key_files() -> list[tuple[str, bytes]]:
    """(path, contents) of each SIGNATURE_PUBLIC_KEYS file; contents empty when unreadable."""
    files = []
    for path in settings.SIGNATURE_PUBLIC_KEYS:
        try:
            files.append((path, Path(path).read_bytes()[:64 * 1024]))
        except OSError:
            files.append((path, b""))
    return files


def references(repository: Repository) -> set[str]:
    """The names a signer may have used for the repository: under REGISTRY_PUBLIC_HOST (or the
    registry's own public host) and under the registry URL's host."""
    from urllib.parse import urlsplit

    hosts = {public_host(repository.registry), urlsplit(repository.registry.url).netloc}
    return {f"{host}/{repository.name}" for host in hosts if host}


# Discovery -------------------------------------------------------------------------------------


def candidates(repository: Repository) -> set[Candidate]:
    """The artifacts attached to the repository's current versions, in two queries. One
    artifact may be attached to several versions (a signature copied next to another image):
    one each. Two queries, not one with a join: on PostgreSQL the OR over a join of the
    manifests and tags was several times slower (figures in bench/README.md)."""
    found: dict[tuple[str, str], Candidate] = {}
    manifests = (
        Manifest.objects.filter(repository=repository, missing_since__isnull=True)
        .filter(~Q(subject_digest="") | Q(kind=Manifest.Kind.INDEX, children__icontains=ATTESTATION_PLATFORM))
        .values_list("digest", "subject_digest", "kind", "raw")
    )
    for digest, subject, kind, raw in manifests:
        if kind == Manifest.Kind.INDEX:
            found.update(((c.digest, c.subject), c) for c in _attestation_manifests(bytes(raw)))
        if subject:
            found[digest, subject] = Candidate(digest, subject, Attachment.Via.REFERRER)
    tags = Tag.objects.filter(repository=repository, name__startswith="sha256-").values_list("name", "manifest__digest")
    for tag, digest in tags:
        if match := COSIGN_TAG.fullmatch(tag):
            # Named both ways (a cosign tag on a referrer): read once, as cosign's.
            subject = f"sha256:{match['hex']}"
            found[digest, subject] = Candidate(digest, subject, Attachment.Via.COSIGN)
    return set(found.values())


def _attestation_manifests(raw: bytes) -> list[Candidate]:
    try:
        index = parse_manifest(raw)
    except InvalidResponse:
        return []
    return [
        Candidate(entry.digest, entry.annotations[ATTESTATION_SUBJECT], Attachment.Via.BUILDKIT)
        for entry in getattr(index, "manifests", ())
        if entry.annotations.get(ATTESTATION_TYPE) == "attestation-manifest"
        and ATTESTATION_SUBJECT in entry.annotations
    ]


def read_attachments(client: RegistryClient, repository: Repository, *, changed: bool = True) -> int:
    """Read the payloads of artifacts attached since the last sync (and those the registry
    failed to serve last time), then sum up each version; `changed`: the sync changed tags or
    manifests. Returns how many artifacts were read. Registry failures are kept on the rows,
    never raised: attachments never fail a sync."""
    found = candidates(repository)
    if not found:
        if changed:  # the last attachment may just have gone
            VersionSecurity.objects.filter(repository=repository).delete()
        return 0
    rows = dict(
        Manifest.objects.filter(repository=repository, digest__in={c.digest for c in found}).values_list("digest", "id")
    )
    read = set(
        Attachment.objects.filter(manifest_id__in=rows.values(), retry=False).values_list(
            "manifest_id", "subject_digest"
        )
    )
    unread = [c for c in found if c.digest in rows and (rows[c.digest], c.subject) not in read]
    for candidate in unread:
        _read_artifact(client, repository, rows[candidate.digest], candidate)
    summarize(repository, found)
    return len(unread)


def _read_artifact(client: RegistryClient, repository: Repository, manifest_id: int, candidate: Candidate) -> None:
    raw = bytes(Manifest.objects.values_list("raw", flat=True).get(id=manifest_id))
    readings: list[tuple[Attachment, Document]] = []
    try:
        manifest = parse_manifest(raw)
    except InvalidResponse as error:
        manifest = None
        readings.append(_unreadable(candidate, 0, None, f"Unreadable manifest: {error}"))
    if manifest is not None and not isinstance(manifest, ImageManifest):
        readings.append(_unreadable(candidate, 0, None, "Not an artifact manifest with layers"))
    elif manifest is not None:
        for index, layer in enumerate(manifest.layers[:MAX_LAYERS]):
            readings.append(_read_layer(client, repository.name, candidate, index, layer))
    with transaction.atomic():
        # Earlier failed reads.
        Attachment.objects.filter(manifest_id=manifest_id, subject_digest=candidate.subject).delete()
        for attachment, document in readings:
            attachment.manifest_id = manifest_id
            attachment.save()
            Finding.objects.bulk_create(
                Finding(
                    attachment=attachment,
                    vulnerability_id=v.id[:200],
                    severity=v.severity,
                    package=v.package[:255],
                    installed=v.installed[:255],
                    fixed_in=v.fixed_in[:255],
                    title=v.title[:500],
                    url=v.url,
                )
                for v in document.vulnerabilities
            )
            SbomPackage.objects.bulk_create(
                SbomPackage(attachment=attachment, name=p.name[:255], version=p.version[:255], purl=p.purl[:1000])
                for p in document.packages
            )


def _read_layer(
    client: RegistryClient, repository: str, candidate: Candidate, index: int, layer: Descriptor
) -> tuple[Attachment, Document]:
    cap = settings.ATTACHMENT_MAX_BYTES
    signature = layer.annotations.get(SIGNATURE_ANNOTATION)
    if layer.size > cap:
        reason = f"{layer.size:,} bytes, over the {cap:,}-byte limit (ATTACHMENT_MAX_BYTES): not downloaded"
        return _unreadable(candidate, index, layer, reason, signature=signature)
    try:
        data = client.get_blob(repository, layer.digest, max_bytes=cap)
    except DigestMismatch:
        attachment, document = _unreadable(candidate, index, layer, "The blob's bytes do not match its digest")
        if signature is not None or layer.media_type == SIMPLE_SIGNING:
            attachment.kind = Kind.SIGNATURE
            attachment.signature_status = Status.INVALID
            attachment.signature_reason = "The signed payload was changed in the registry's storage"
        return attachment, document
    except NotFound:
        return _unreadable(candidate, index, layer, "The blob is missing from the registry", signature=signature)
    except InvalidResponse as error:
        return _unreadable(candidate, index, layer, str(error), signature=signature)
    except RegistryError as error:
        attachment, document = _unreadable(candidate, index, layer, f"The registry failed: {error}")
        attachment.retry = True
        return attachment, document
    document = read_document(data, max_bytes=cap)
    attachment = _attachment(candidate, index, layer, document)
    if signature is not None:
        attachment.signed_data = data
        attachment.signatures = [signature]
        attachment.kind = Kind.SIGNATURE
        _keep_certificate(attachment, layer.annotations.get(signatures.CERTIFICATE_ANNOTATION, ""))
    elif document.predicate_type or layer.media_type.startswith("application/vnd.dsse"):
        try:
            envelope = parse_envelope(data)
        except Unreadable:
            envelope = None
        if envelope is not None and envelope.signatures:
            attachment.signed_data = signatures.pae(envelope.payload_type, envelope.payload)
            attachment.signatures = [base64.b64encode(sig).decode() for _, sig in envelope.signatures]
    return attachment, document


def _keep_certificate(attachment: Attachment, pem: str) -> None:
    """A keyless signature's certificate and the identity it names, shown, never trusted."""
    if not pem:
        return
    attachment.certificate = pem[:64 * 1024]
    try:
        signer = signatures.keyless_signer(pem)
    except ValueError as error:
        attachment.signature_reason = f"Unreadable keyless certificate: {error}"
        return
    attachment.signer, attachment.signer_issuer = signer.identity, signer.issuer


def _attachment(candidate: Candidate, index: int, layer: Descriptor | None, document: Document) -> Attachment:
    counts = document.severity_counts()
    provenance = document.provenance
    return Attachment(
        subject_digest=candidate.subject,
        via=candidate.via,
        layer_index=index,
        layer_digest=layer.digest if layer else "",
        media_type=(layer.media_type if layer else "")[:255],
        kind=document.kind,
        format=document.format[:100],
        predicate_type=document.predicate_type[:255],
        about_subject=document.is_about(candidate.subject),
        scanner=document.scanner[:100],
        scanner_version=document.scanner_version[:100],
        scanned_at=document.scanned_at,
        provenance=(
            {
                "builder": provenance.builder,
                "build_type": provenance.build_type,
                "source_repository": provenance.source_repository,
                "commit": provenance.commit,
                "built_at": provenance.built_at.isoformat() if provenance.built_at else "",
            }
            if provenance
            else {}
        ),
        reason=document.reason[:500],
        fetched_at=timezone.now(),
        **counts,
    )


def _unreadable(
    candidate: Candidate, index: int, layer: Descriptor | None, reason: str, *, signature: str | None = None
) -> tuple[Attachment, Document]:
    document = Document(Kind.UNREADABLE, "unreadable", reason=reason)
    attachment = _attachment(candidate, index, layer, document)
    if signature is not None:
        attachment.kind = Kind.SIGNATURE
        attachment.signature_reason = reason[:500]
    return attachment, document


# Per version -----------------------------------------------------------------------------------


def verdict(attachment: Attachment, keys: list[signatures.TrustedKey], names: set[str]) -> Verdict:
    """The attachment's signature checked against `keys` now."""
    if attachment.signature_status == Status.INVALID and attachment.signed_data is None:
        return Verdict(Status.INVALID, reason=attachment.signature_reason)  # tampered bytes
    if not attachment.signatures or attachment.signed_data is None:
        return signatures.UNSIGNED
    data = bytes(attachment.signed_data)
    results = []
    for encoded in attachment.signatures:
        try:
            signature = base64.b64decode(encoded, validate=True)
        except ValueError:
            results.append(Verdict(Status.INVALID, reason="The signature is not base64"))
            continue
        if attachment.kind == Kind.SIGNATURE:
            result = signatures.check_simple_signing(
                data, signature, keys, digest=attachment.subject_digest, references=names
            )
            if result.status == Status.UNVERIFIED and attachment.certificate:
                result = _keyless_verdict(attachment, data, signature, names)
            results.append(result)
        elif (key := signatures.signing_key(keys, data, signature)) is None:
            results.append(Verdict(Status.UNVERIFIED, reason="No trusted key checks this envelope"))
        elif not attachment.about_subject:
            results.append(Verdict(Status.INVALID, key.name, "The statement is about another digest"))
        else:
            results.append(Verdict(Status.VERIFIED, key.name, "Signed statement about this digest"))
    return signatures.strongest(results)


def _keyless_verdict(attachment: Attachment, data: bytes, signature: bytes, names: set[str]) -> Verdict:
    """A keyless signature checked against its own certificate's key: at best "not verified
    (keyless)", since no trust root says the certificate is Fulcio's."""
    try:
        signer = signatures.keyless_signer(attachment.certificate)
    except ValueError as error:
        return Verdict(Status.UNVERIFIED, reason=f"Unreadable keyless certificate: {error}")
    own_key = [signatures.TrustedKey("keyless", signer.public_key)]
    result = signatures.check_simple_signing(data, signature, own_key, digest=attachment.subject_digest, references=names)
    if result.status == Status.UNVERIFIED:
        return Verdict(Status.INVALID, reason="The signature does not check against its own certificate")
    if result.status == Status.INVALID:
        return Verdict(Status.INVALID, reason=result.reason)
    who = f"{signer.identity or 'an unnamed identity'}" + (f", issuer {signer.issuer}" if signer.issuer else "")
    return Verdict(Status.UNVERIFIED, reason=f"Not verified (keyless): signed by {who}")


def summarize(repository: Repository, found: set[Candidate] | None = None) -> None:
    """Re-check every attachment's signature with today's keys and write each version's
    VersionSecurity row: the strongest cosign signature, and the newest report about it (for
    an index without one, the newest report of each platform image, findings counted once)."""
    found = candidates(repository) if found is None else found
    current = {(c.digest, c.subject) for c in found}
    rows = Attachment.objects.filter(manifest__repository=repository, manifest__digest__in={d for d, _ in current})
    attachments = [
        attachment
        for attachment in rows.select_related("manifest").defer("provenance", "manifest__raw", "manifest__raw_config")
        if (attachment.manifest.digest, attachment.subject_digest) in current
    ]
    keys = trusted_keys()
    names = references(repository)
    changed = []
    for attachment in attachments:
        result = verdict(attachment, keys, names)
        if (attachment.signature_status, attachment.signature_key) != (result.status, result.key):
            attachment.signature_status, attachment.signature_key = result.status, result.key
            attachment.signature_reason = result.reason[:500]
            changed.append(attachment)
    Attachment.objects.bulk_update(changed, ["signature_status", "signature_key", "signature_reason"])

    by_subject: dict[str, list[Attachment]] = defaultdict(list)
    for attachment in attachments:
        by_subject[attachment.subject_digest].append(attachment)
    children = _children_of_indexes(repository)
    rows = []
    for digest in by_subject.keys() | {parent for parent, kids in children.items() if kids & by_subject.keys()}:
        own = by_subject.get(digest, [])
        signed = [
            Verdict(Status(a.signature_status), a.signature_key) for a in own if a.kind == Kind.SIGNATURE
        ]
        strongest = signatures.strongest(signed)
        reports = counted_reports(digest, by_subject, children)
        counts = severity_counts(reports)
        rows.append(
            VersionSecurity(
                repository=repository,
                digest=digest,
                signature_status=strongest.status,
                signature_key=strongest.key if strongest.status == Status.VERIFIED else "",
                report=max(reports, key=_newest, default=None),
                attachment_count=len(own),
                **counts,
            )
        )
    with transaction.atomic():
        VersionSecurity.objects.filter(repository=repository).delete()
        VersionSecurity.objects.bulk_create(rows)


def _children_of_indexes(repository: Repository) -> dict[str, set[str]]:
    rows = Manifest.objects.filter(repository=repository, kind=Manifest.Kind.INDEX).values_list("digest", "children")
    return {digest: {child["digest"] for child in kids} for digest, kids in rows}


def _newest(attachment: Attachment) -> tuple:
    return (attachment.scanned_at or attachment.fetched_at, attachment.fetched_at, attachment.id)


def counted_reports(
    digest: str, by_subject: dict[str, list[Attachment]], children: dict[str, set[str]]
) -> list[Attachment]:
    """The reports whose findings count for `digest`: its newest report about it, else the
    newest of each platform image it lists. A report naming another digest never counts."""

    def newest_report(subject: str) -> Attachment | None:
        reports = [
            a for a in by_subject.get(subject, []) if a.kind == Kind.VULNERABILITIES and a.about_subject
        ]
        return max(reports, key=_newest, default=None)

    own = newest_report(digest)
    if own is not None:
        return [own]
    return [report for child in sorted(children.get(digest, ())) if (report := newest_report(child))]


def severity_counts(reports: Iterable[Attachment]) -> dict[str, int]:
    """Findings by severity, each (id, package, installed) counted once across the reports."""
    reports = list(reports)
    if len(reports) == 1:
        return {severity: getattr(reports[0], severity) for severity in COUNTED}
    distinct = set(
        Finding.objects.filter(attachment__in=reports).values_list(
            "vulnerability_id", "package", "installed", "severity"
        )
    )
    counts = dict.fromkeys(COUNTED, 0)
    for *_, severity in distinct:
        counts[severity] += 1
    return counts


def summarize_all() -> None:
    """After the trusted keys changed: re-check every repository that has attachments."""
    repositories = Repository.objects.filter(manifests__attachments__isnull=False).distinct()
    for repository in repositories.select_related("registry"):
        summarize(repository)


# What the pages read ---------------------------------------------------------------------------


@dataclass
class SupplyChain:
    """A version's panel: its summary row, the attachments about it (an index's include its
    platform images'), the reports counted and the provenance found."""

    security: VersionSecurity | None
    attachments: list[Attachment]
    reports: list[Attachment]
    provenance: list[Attachment]

    @property
    def report(self) -> Attachment | None:
        return self.security.report if self.security else None


def _current_attachments(repository: Repository, digests: set[str]) -> list[Attachment]:
    """Attachments about `digests` whose artifact is attached now (not an old signature kept
    as a tag's previous digest)."""
    current = {(c.digest, c.subject) for c in candidates(repository) if c.subject in digests}
    rows = (
        Attachment.objects.filter(manifest__repository=repository, subject_digest__in=digests)
        .select_related("manifest")
        .defer("signed_data", "manifest__raw", "manifest__raw_config", "manifest__config", "manifest__layers")
        .order_by("subject_digest", "kind", "id")
    )
    return [a for a in rows if (a.manifest.digest, a.subject_digest) in current]


def supply_chain(repository: Repository, manifest: Manifest) -> SupplyChain:
    digests = {manifest.digest} | {child["digest"] for child in manifest.children}
    found = _current_attachments(repository, digests)
    security = (
        VersionSecurity.objects.filter(repository=repository, digest=manifest.digest).select_related("report").first()
    )
    by_subject: dict[str, list[Attachment]] = defaultdict(list)
    for attachment in found:
        by_subject[attachment.subject_digest].append(attachment)
    children = {manifest.digest: digests - {manifest.digest}}
    return SupplyChain(
        security,
        found,
        counted_reports(manifest.digest, by_subject, children),
        [a for a in found if a.kind == Kind.PROVENANCE and a.about_subject],
    )


def findings(reports: list[Attachment]) -> list[Finding]:
    """The reports' findings, each (id, package, installed) once, most severe first."""
    distinct: dict[tuple[str, str, str], Finding] = {}
    for finding in Finding.objects.filter(attachment__in=reports).order_by("id"):
        distinct.setdefault((finding.vulnerability_id, finding.package, finding.installed), finding)
    return _by_severity(distinct.values())


def packages(attachments: list[Attachment]) -> list[SbomPackage]:
    """Packages the attachments list, each (name, version, purl) once, by name."""
    distinct: dict[tuple[str, str, str], SbomPackage] = {}
    rows = SbomPackage.objects.filter(attachment__in=[a for a in attachments if a.about_subject]).order_by("id")
    for package in rows:
        distinct.setdefault((package.name, package.version, package.purl), package)
    return sorted(distinct.values(), key=lambda p: (p.name.lower(), p.version))


def security_by_digest(repository: Repository, digests: Iterable[str]) -> dict[str, VersionSecurity]:
    """The summary rows of `digests`, in one query, for badges in lists."""
    digests = set(digests)
    if not digests:
        return {}
    rows = VersionSecurity.objects.filter(repository=repository, digest__in=digests).select_related("report")
    return {row.digest: row for row in rows.defer("report__signed_data", "report__provenance")}


def require_verified(repository: Repository, digest: str) -> None:
    """RESTORE_REQUIRE_SIGNATURE: refuse a restore target that is not verified (409)."""
    row = VersionSecurity.objects.filter(repository=repository, digest=digest).first()
    status = row.signature_status if row else Status.UNSIGNED
    if status != Status.VERIFIED:
        raise ActionRefused(
            f"Restores need a verified signature here (RESTORE_REQUIRE_SIGNATURE), and {digest} is {status}: "
            "no trusted key signed this version. Nothing was changed.",
            status=409,
        )


@dataclass
class PackageHit:
    """A version that ships a package, by what an SBOM or a report attached to it says."""

    repository: str
    digest: str
    name: str
    version: str
    found_in: str  # the document's format
    tags: list[str]


PACKAGE_HITS_SHOWN = 500


def find_package(repositories: Iterable[Repository], name: str, version: str = "") -> list[PackageHit]:
    """Versions of `repositories` whose attached SBOMs or reports list package `name` (any
    case), at `version` when given: "where do we still ship openssl 3.0.11?". A platform image
    of an index is named by the index's tags."""
    repository_ids = [repository.pk for repository in repositories]
    found: dict[tuple[str, str, str, str], PackageHit] = {}
    for model, name_field, version_field in ((SbomPackage, "name", "version"), (Finding, "package", "installed")):
        rows = model.objects.filter(
            **{f"{name_field}__iexact": name},
            attachment__about_subject=True,
            attachment__manifest__repository_id__in=repository_ids,
        )
        if version:
            rows = rows.filter(**{version_field: version})
        values = rows.values_list(
            "attachment__manifest__repository__name",
            "attachment__subject_digest",
            name_field,
            version_field,
            "attachment__format",
        ).distinct()
        for repository, digest, package, installed, found_in in values[:PACKAGE_HITS_SHOWN]:
            hit = PackageHit(repository, digest, package, installed, found_in, [])
            found.setdefault((repository, digest, package, installed), hit)
    order = sorted(found.values(), key=lambda hit: (hit.repository, hit.name, hit.version, hit.digest))
    hits = order[:PACKAGE_HITS_SHOWN]
    _name_versions(hits, repository_ids)
    return hits


def _name_versions(hits: list[PackageHit], repository_ids: list[int]) -> None:
    """Give each hit the tags of its digest, or of the indexes listing it: two queries."""
    digests = {hit.digest for hit in hits}
    if not digests:
        return
    tags: dict[tuple[str, str], list[str]] = defaultdict(list)
    tagged = Tag.objects.filter(repository_id__in=repository_ids).order_by("version_key")
    rows = tagged.filter(manifest__digest__in=digests).values_list("repository__name", "manifest__digest", "name")
    for repository, digest, tag in rows:
        tags[repository, digest].append(tag)
    untagged = {(hit.repository, hit.digest) for hit in hits if (hit.repository, hit.digest) not in tags}
    if untagged:
        indexes = tagged.filter(manifest__kind=Manifest.Kind.INDEX).values_list(
            "repository__name", "manifest__children", "name"
        )
        for repository, children, tag in indexes:
            for child in children:
                if (repository, child["digest"]) in untagged:
                    tags[repository, child["digest"]].append(tag)
    for hit in hits:
        hit.tags = tags.get((hit.repository, hit.digest), [])


@dataclass
class SupplyChainDiff:
    """What changed between two versions by their attached reports and SBOMs."""

    reported: tuple[bool, bool]  # whether each version has a report to compare
    fixed: list[Finding]
    introduced: list[Finding]
    added: list[SbomPackage]
    removed: list[SbomPackage]
    changed: list[tuple[str, str, str]]  # (name, versions before, versions after)


def supply_chain_diff(repository: Repository, before: Manifest, after: Manifest) -> SupplyChainDiff:
    """Vulnerabilities fixed and introduced (by id and package), packages added, removed and
    changed (by name)."""
    chains = [supply_chain(repository, manifest) for manifest in (before, after)]
    old, new = ({(f.vulnerability_id, f.package): f for f in findings(chain.reports)} for chain in chains)
    old_packages, new_packages = (_versions_by_name(packages(chain.attachments)) for chain in chains)
    changed = [
        (name, ", ".join(sorted(old_packages[name])), ", ".join(sorted(new_packages[name])))
        for name in sorted(old_packages.keys() & new_packages.keys())
        if old_packages[name].keys() != new_packages[name].keys()
    ]
    return SupplyChainDiff(
        (bool(chains[0].reports), bool(chains[1].reports)),
        _by_severity(old[key] for key in old.keys() - new.keys()),
        _by_severity(new[key] for key in new.keys() - old.keys()),
        [next(iter(new_packages[name].values())) for name in sorted(new_packages.keys() - old_packages.keys())],
        [next(iter(old_packages[name].values())) for name in sorted(old_packages.keys() - new_packages.keys())],
        changed,
    )


def _by_severity(found: Iterable[Finding]) -> list[Finding]:
    return sorted(found, key=lambda f: (COUNTED.index(f.severity), f.vulnerability_id, f.package))


def _versions_by_name(listed: list[SbomPackage]) -> dict[str, dict[str, SbomPackage]]:
    by_name: dict[str, dict[str, SbomPackage]] = defaultdict(dict)
    for package in listed:
        by_name[package.name][package.version] = package
    return by_name


@dataclass(frozen=True)
class OwnArtifact:
    """An artifact attached to one version alone, and its tags (they go when it is deleted)."""

    digest: str
    tags: tuple[str, ...]


def names_version(tag: str, digest: str) -> bool:
    """Whether `tag` is one of the names cosign and the referrers tag schema give what is
    attached to `digest`: `sha256-<hex>.sig/.att/.sbom`, `sha256-<hex>`."""
    base = digest.replace(":", "-", 1)
    return tag == base or (tag.startswith(base) and tag[len(base):] in (".sig", ".att", ".sbom"))


def attached_only_to(repository: Repository, digests: Iterable[str]) -> dict[str, list[OwnArtifact]]:
    """digest -> the signatures, attestations, SBOMs and referrers attached to it and to no
    other version, for deleting them together, from the cache in four queries. One copied next
    to another image stays with it; so does one that is pinned or carries a tag that does not
    name this version (deleting by digest would take that tag along). BuildKit attestations are
    platform manifests of the index: deleted as its children."""
    wanted = set(digests)
    found = candidates(repository)
    subjects: dict[str, set[str]] = defaultdict(set)
    for candidate in found:
        subjects[candidate.digest].add(candidate.subject)
    mine = {
        (c.digest, c.subject)
        for c in found
        if c.subject in wanted and subjects[c.digest] == {c.subject} and c.via != Attachment.Via.BUILDKIT
    }
    # The referrers tag schema's index of each digest's referrers goes with them.
    indexes = {digest.replace(":", "-", 1): digest for digest in wanted}
    for name, index in Tag.objects.filter(repository=repository, name__in=indexes).values_list(
        "name", "manifest__digest"
    ):
        mine.add((index, indexes[name]))
    artifacts = {artifact for artifact, _ in mine}
    pinned = set(Pin.objects.filter(repository=repository, digest__in=artifacts).values_list("digest", flat=True))
    tags: dict[str, list[str]] = defaultdict(list)
    for artifact, name in (
        Tag.objects.filter(repository=repository, manifest__digest__in=artifacts)
        .order_by("name")
        .values_list("manifest__digest", "name")
    ):
        tags[artifact].append(name)
    result: dict[str, list[OwnArtifact]] = {digest: [] for digest in wanted}
    for artifact, subject in sorted(mine):
        if artifact not in pinned and all(names_version(tag, subject) for tag in tags[artifact]):
            result[subject].append(OwnArtifact(artifact, tuple(tags[artifact])))
    return result
