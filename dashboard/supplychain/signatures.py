"""Check cosign signatures and DSSE envelopes against trusted public keys.

A cosign key-pair signature (github.com/sigstore/cosign specs/SIGNATURE_SPEC.md) is a layer of
the `sha256-<hex>.sig` manifest: the layer blob is the simple-signing payload, the annotation
`dev.cosignproject.cosign/signature` its signature in base64. ECDSA signatures are ASN.1 DER
over the hash that matches the curve (P-256 SHA-256, P-384 SHA-384), RSA ones PKCS#1 v1.5 or
PSS over SHA-256, Ed25519 over the bytes themselves.

What a check can tell: a signature either checks against one of the trusted keys over these
exact bytes or it does not. A payload edited after signing and one signed by an unknown key
both fail every key alike, so both are "unverified"; "invalid" is a trusted key's signature
that does not bind this version (another digest or repository), or bytes that no longer match
the digest the signature manifest names.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable
from dataclasses import dataclass
from enum import StrEnum

from cryptography import x509
from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, ed25519, padding, rsa

from .documents import Envelope, Kind, read_document

SIGNATURE_ANNOTATION = "dev.cosignproject.cosign/signature"
PublicKey = ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey
_CURVE_HASHES = {"secp256r1": hashes.SHA256, "secp384r1": hashes.SHA384}


class Status(StrEnum):
    VERIFIED = "verified"
    INVALID = "invalid"
    UNVERIFIED = "unverified"
    UNSIGNED = "unsigned"


# When a version carries several signatures, the one that says most wins.
_RANK = [Status.VERIFIED, Status.INVALID, Status.UNVERIFIED, Status.UNSIGNED]


@dataclass(frozen=True)
class TrustedKey:
    name: str
    public_key: PublicKey


@dataclass(frozen=True)
class Verdict:
    status: Status
    key: str = ""  # the trusted key's name, when one checked
    reason: str = ""


UNSIGNED = Verdict(Status.UNSIGNED, reason="Nothing signs this version")


def load_public_key(pem: bytes | str) -> PublicKey:
    """A PEM public key of a kind the dashboard checks; ValueError saying why not otherwise."""
    data = pem.encode() if isinstance(pem, str) else pem
    try:
        key = serialization.load_pem_public_key(data)
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ValueError("Not a PEM public key (-----BEGIN PUBLIC KEY-----)") from error
    if isinstance(key, ec.EllipticCurvePublicKey) and key.curve.name in _CURVE_HASHES:
        return key
    if isinstance(key, rsa.RSAPublicKey) and key.key_size >= 2048:
        return key
    if isinstance(key, ed25519.Ed25519PublicKey):
        return key
    raise ValueError("Only ECDSA P-256 or P-384, RSA of 2048 bits or more, and Ed25519 keys are supported")


def signing_key(keys: Iterable[TrustedKey], data: bytes, signature: bytes) -> TrustedKey | None:
    """The first trusted key whose signature over exactly `data` `signature` is."""
    for key in keys:
        if _checks(key.public_key, data, signature):
            return key
    return None


def _checks(key: PublicKey, data: bytes, signature: bytes) -> bool:
    try:
        if isinstance(key, ec.EllipticCurvePublicKey):
            key.verify(signature, data, ec.ECDSA(_CURVE_HASHES[key.curve.name]()))
        elif isinstance(key, rsa.RSAPublicKey):
            try:
                key.verify(signature, data, padding.PKCS1v15(), hashes.SHA256())
            except InvalidSignature:
                pss = padding.PSS(mgf=padding.MGF1(hashes.SHA256()), salt_length=padding.PSS.AUTO)
                key.verify(signature, data, pss, hashes.SHA256())
        else:
            key.verify(signature, data)
    except (InvalidSignature, ValueError):
        return False
    return True


def pae(payload_type: str, payload: bytes) -> bytes:
    """DSSE's pre-authentication encoding: what an envelope's signatures sign."""
    kind = payload_type.encode()
    return b"DSSEv1 %d %s %d %s" % (len(kind), kind, len(payload), payload)


def check_simple_signing(
    payload: bytes, signature: bytes, keys: Collection[TrustedKey], *, digest: str, references: Collection[str]
) -> Verdict:
    """Whether `signature` over `payload` vouches for the version `digest` of one of `references`
    (the repository's names, `host/repository`)."""
    key = signing_key(keys, payload, signature)
    if key is None:
        return Verdict(Status.UNVERIFIED, reason="No trusted key checks this signature")
    document = read_document(payload)
    if document.kind != Kind.SIGNATURE:
        return Verdict(Status.INVALID, key.name, f"The signed payload is not a cosign signature: {document.reason}")
    if digest not in document.subjects:
        return Verdict(Status.INVALID, key.name, f"Signed for another digest, {document.subjects[0]}")
    if document.docker_reference not in references:
        return Verdict(Status.INVALID, key.name, f"Signed for another repository, {document.docker_reference[:300]}")
    return Verdict(Status.VERIFIED, key.name, "Signed for this digest and repository")


def check_envelope(envelope: Envelope, keys: Collection[TrustedKey], *, digest: str) -> Verdict:
    """Whether a DSSE envelope is signed by a trusted key and its statement is about `digest`."""
    if not envelope.signatures:
        return Verdict(Status.UNSIGNED, reason="The envelope carries no signature")
    signed = pae(envelope.payload_type, envelope.payload)
    key = next((key for _, sig in envelope.signatures if (key := signing_key(keys, signed, sig))), None)
    if key is None:
        return Verdict(Status.UNVERIFIED, reason="No trusted key checks this envelope")
    document = read_document(envelope.payload)
    if document.kind == Kind.UNREADABLE:
        return Verdict(Status.INVALID, key.name, f"The signed statement is unreadable: {document.reason}")
    if digest not in document.subjects:
        return Verdict(Status.INVALID, key.name, "The statement is about another digest")
    return Verdict(Status.VERIFIED, key.name, "Signed statement about this digest")


def strongest(verdicts: Iterable[Verdict]) -> Verdict:
    """A version's status from all its signatures: one verified signature is enough."""
    return min(verdicts, key=lambda verdict: _RANK.index(verdict.status), default=UNSIGNED)


# Sigstore keyless: a short-lived Fulcio certificate instead of a key. Checking it needs the
# Fulcio roots and Rekor's log, which the dashboard has no trust root for: such a signature
# is at best "not verified (keyless)", with the identity the certificate names.
CERTIFICATE_ANNOTATION = "dev.sigstore.cosign/certificate"
_FULCIO_ISSUER_V1 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.1")  # raw UTF-8
_FULCIO_ISSUER_V2 = x509.ObjectIdentifier("1.3.6.1.4.1.57264.1.8")  # DER UTF8String


@dataclass(frozen=True)
class KeylessSigner:
    identity: str  # the certificate's email or URI (a CI workflow)
    issuer: str  # the OIDC issuer that vouched for it
    public_key: PublicKey


def keyless_signer(pem: str) -> KeylessSigner:
    """Who a keyless certificate names; ValueError when it is not a certificate we can read."""
    try:
        certificate = x509.load_pem_x509_certificate(pem.encode())
        public_key = certificate.public_key()
    except (ValueError, UnsupportedAlgorithm) as error:
        raise ValueError("Not a PEM certificate") from error
    if not isinstance(public_key, ec.EllipticCurvePublicKey | rsa.RSAPublicKey | ed25519.Ed25519PublicKey):
        raise ValueError("The certificate's key is of a kind the dashboard does not check")
    identity = ""
    try:
        names = certificate.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        found = names.get_values_for_type(x509.RFC822Name) + names.get_values_for_type(
            x509.UniformResourceIdentifier
        )
        identity = found[0] if found else ""
    except x509.ExtensionNotFound:
        pass
    return KeylessSigner(identity[:300], _issuer(certificate)[:300], public_key)


def _issuer(certificate: x509.Certificate) -> str:
    for oid in (_FULCIO_ISSUER_V2, _FULCIO_ISSUER_V1):
        try:
            raw = certificate.extensions.get_extension_for_oid(oid).value.value
        except x509.ExtensionNotFound:
            continue
        if oid == _FULCIO_ISSUER_V2 and len(raw) > 2 and raw[0] == 0x0C and raw[1] < 0x80:
            raw = raw[2 : 2 + raw[1]]  # a short DER UTF8String: tag, length, bytes
        return raw.decode("utf-8", errors="replace")
    return ""
