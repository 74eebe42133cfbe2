"""Manifests and image configs as small frozen dataclasses, parsed from the registry's bytes.

Parsers return a value or raise InvalidResponse; malformed input never surfaces as KeyError or
TypeError. Unknown and legacy (schema1) manifests come back as such instead of failing.
"""

from __future__ import annotations

import hashlib
import json
import re
import secrets
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any, TypeVar

from . import mediatypes
from .errors import DigestMismatch, InvalidResponse

_DIGEST_RE = re.compile(r"sha256:[a-f0-9]{64}|sha384:[a-f0-9]{96}|sha512:[a-f0-9]{128}")
# Distribution's reference grammar; the API path has no domain part.
_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_REPOSITORY_RE = re.compile(rf"{_COMPONENT}(?:/{_COMPONENT})*")
_REPOSITORY_MAX_LENGTH = 255
# `[\w][\w.-]{0,127}` with \w meaning ASCII only, as in Go's regexp.
_TAG_RE = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,127}")

# Content types proxies and older registries put on manifests; the body then says what it is.
_GENERIC_CONTENT_TYPES = frozenset({"", "application/json", "application/octet-stream", "text/plain"})
_ALL_MANIFESTS = mediatypes.IMAGE_MANIFESTS | mediatypes.INDEXES | mediatypes.SCHEMA1


def compute_digest(raw: bytes, algorithm: str = "sha256") -> str:
    return f"{algorithm}:{hashlib.new(algorithm, raw).hexdigest()}"


def is_valid_digest(value: object) -> bool:
    return isinstance(value, str) and _DIGEST_RE.fullmatch(value) is not None


def is_valid_repository_name(value: object) -> bool:
    return (
        isinstance(value, str) and len(value) <= _REPOSITORY_MAX_LENGTH and _REPOSITORY_RE.fullmatch(value) is not None
    )


def is_valid_tag(value: object) -> bool:
    return isinstance(value, str) and _TAG_RE.fullmatch(value) is not None


def verify_digest(raw: bytes, expected: str) -> None:
    """Raise DigestMismatch unless `raw` hashes to `expected` (with expected's algorithm)."""
    if not is_valid_digest(expected):
        raise InvalidResponse(f"{expected!r} is not a valid digest")
    actual = compute_digest(raw, expected.split(":", 1)[0])
    if actual != expected:
        raise DigestMismatch(expected, actual)


@dataclass(frozen=True)
class Platform:
    os: str
    architecture: str
    variant: str | None = None
    os_version: str | None = None

    def __str__(self) -> str:
        return "/".join(p for p in (self.os, self.architecture, self.variant) if p)


@dataclass(frozen=True)
class Descriptor:
    media_type: str
    digest: str
    size: int
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    platform: Platform | None = None
    artifact_type: str | None = None


@dataclass(frozen=True)
class ImageManifest:
    """Docker schema2 or OCI image manifest; also OCI artifacts, which use the same shape."""

    media_type: str
    config: Descriptor
    layers: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    artifact_type: str | None = None
    subject: Descriptor | None = None

    @property
    def kind(self) -> str:
        if self.artifact_type or self.config.media_type not in mediatypes.IMAGE_CONFIGS:
            return "artifact"
        return "image"

    @property
    def total_size(self) -> int:
        """Compressed size of config and layers: what a pull downloads."""
        return self.config.size + sum(layer.size for layer in self.layers)


@dataclass(frozen=True)
class ImageIndex:
    """OCI index or Docker manifest list."""

    media_type: str
    manifests: tuple[Descriptor, ...]
    annotations: Mapping[str, str] = field(default_factory=dict, hash=False)
    artifact_type: str | None = None
    subject: Descriptor | None = None

    @property
    def kind(self) -> str:
        return "index"


@dataclass(frozen=True)
class Schema1Manifest:
    """Legacy Docker manifest; shown, never interpreted further."""

    media_type: str
    name: str | None
    tag: str | None
    architecture: str | None

    @property
    def kind(self) -> str:
        return "schema1"


@dataclass(frozen=True)
class UnknownManifest:
    media_type: str

    @property
    def kind(self) -> str:
        return "unknown"


Manifest = ImageManifest | ImageIndex | Schema1Manifest | UnknownManifest


@dataclass(frozen=True)
class HistoryEntry:
    created: datetime | None
    created_by: str | None
    comment: str | None
    empty_layer: bool


@dataclass(frozen=True)
class ImageConfig:
    created: datetime | None
    author: str | None
    os: str | None
    architecture: str | None
    variant: str | None
    env: tuple[str, ...]
    entrypoint: tuple[str, ...]
    cmd: tuple[str, ...]
    working_dir: str | None
    user: str | None
    exposed_ports: tuple[str, ...]
    volumes: tuple[str, ...]
    labels: Mapping[str, str] = field(hash=False)
    history: tuple[HistoryEntry, ...]

    @property
    def platform(self) -> Platform | None:
        if not (self.os and self.architecture):
            return None
        return Platform(self.os, self.architecture, self.variant)


@dataclass(frozen=True)
class HistoryStep:
    """One build step: its history entry and the layer it produced (None for ENV, CMD, ...)."""

    history: HistoryEntry | None
    layer: Descriptor | None


def align_history(layers: Sequence[Descriptor], history: Sequence[HistoryEntry]) -> list[HistoryStep]:
    """Pair history entries with layers: the non-empty entries map 1:1 onto the layers in order.

    Squashed or hand-built images may disagree on the counts; leftover layers then get steps
    without history, and leftover non-empty entries steps without a layer.
    """
    remaining = iter(layers)
    steps = [HistoryStep(entry, None if entry.empty_layer else next(remaining, None)) for entry in history]
    steps.extend(HistoryStep(None, layer) for layer in remaining)
    return steps


def make_tombstone(tag: str) -> tuple[bytes, bytes]:
    """(config, manifest) of a throwaway OCI artifact to move `tag` onto before deleting it.

    A random nonce in the config makes every tombstone's digest unique, even for two deletes
    of the same tag at the same moment, so deleting one never takes another tag along.
    """
    created = datetime.now(UTC).isoformat()
    config = json.dumps(
        {"registry-browser": "tombstone", "tag": tag, "created": created, "nonce": secrets.token_hex(16)}
    ).encode()
    manifest = {
        "schemaVersion": 2,
        "mediaType": mediatypes.OCI_MANIFEST,
        "artifactType": mediatypes.TOMBSTONE_ARTIFACT_TYPE,
        "config": {
            "mediaType": mediatypes.TOMBSTONE_ARTIFACT_TYPE,
            "digest": compute_digest(config),
            "size": len(config),
        },
        "layers": [],
        "annotations": {"org.opencontainers.image.created": created},
    }
    return config, json.dumps(manifest).encode()


def parse_manifest(raw: bytes, content_type: str | None = None) -> Manifest:
    """Parse manifest bytes. The Content-Type decides the kind; the body's `mediaType` is only
    consulted when the header is missing or generic (umoci omits mediaType from the body)."""
    media_type = mediatypes.normalize(content_type)
    if media_type in _GENERIC_CONTENT_TYPES:
        data = _load_object(raw, "manifest")
        body_type = _optional(data, "mediaType", str, "manifest")
        if body_type:
            media_type = mediatypes.normalize(body_type)
        elif data.get("schemaVersion") == 1:
            media_type = mediatypes.DOCKER_SCHEMA1
    elif media_type in _ALL_MANIFESTS:
        data = _load_object(raw, "manifest")
    else:
        return UnknownManifest(media_type)

    if media_type in mediatypes.IMAGE_MANIFESTS:
        return ImageManifest(
            media_type=media_type,
            config=_descriptor(_required(data, "config", dict, "manifest"), "manifest.config"),
            layers=_descriptors(data, "layers", "manifest"),
            annotations=_string_map(data, "annotations", "manifest"),
            artifact_type=_optional(data, "artifactType", str, "manifest"),
            subject=_optional_descriptor(data, "subject", "manifest"),
        )
    if media_type in mediatypes.INDEXES:
        return ImageIndex(
            media_type=media_type,
            manifests=_descriptors(data, "manifests", "manifest"),
            annotations=_string_map(data, "annotations", "manifest"),
            artifact_type=_optional(data, "artifactType", str, "manifest"),
            subject=_optional_descriptor(data, "subject", "manifest"),
        )
    if media_type in mediatypes.SCHEMA1:
        return Schema1Manifest(
            media_type=media_type,
            name=_optional(data, "name", str, "manifest"),
            tag=_optional(data, "tag", str, "manifest"),
            architecture=_optional(data, "architecture", str, "manifest"),
        )
    return UnknownManifest(media_type)


def parse_catalog_page(raw: bytes) -> list[str]:
    """`{"repositories": [...]}` from GET /v2/_catalog."""
    names = _strings(_load_object(raw, "catalog page"), "repositories", "catalog")
    return _grammatical(names, is_valid_repository_name, "repository name")


def parse_tag_list(raw: bytes) -> list[str]:
    """`{"name": ..., "tags": [...]}` from GET /v2/<name>/tags/list. Distribution sends
    `"tags": null` once every tag of a repository was deleted."""
    return _grammatical(_strings(_load_object(raw, "tag list"), "tags", "tag list"), is_valid_tag, "tag")


def _grammatical(names: Sequence[str], valid: Callable[[object], bool], what: str) -> list[str]:
    # URLs are built from these names, and the URL builders reject (ValueError) what a
    # registry cannot hold; a registry listing one anyway sent an unusable answer.
    for name in names:
        if not valid(name):
            raise InvalidResponse(f"The registry listed {name[:100]!r}, which is not a valid {what}")
    return list(names)


def parse_image_config(raw: bytes) -> ImageConfig:
    """Parse a Docker or OCI image config blob."""
    data = _load_object(raw, "image config")
    run = _optional(data, "config", dict, "config") or {}
    return ImageConfig(
        created=_timestamp(data, "created", "config"),
        author=_optional(data, "author", str, "config"),
        os=_optional(data, "os", str, "config"),
        architecture=_optional(data, "architecture", str, "config"),
        variant=_optional(data, "variant", str, "config"),
        env=_strings(run, "Env", "config.config"),
        entrypoint=_strings(run, "Entrypoint", "config.config"),
        cmd=_strings(run, "Cmd", "config.config"),
        working_dir=_optional(run, "WorkingDir", str, "config.config"),
        user=_optional(run, "User", str, "config.config"),
        exposed_ports=tuple(_optional(run, "ExposedPorts", dict, "config.config") or ()),
        volumes=tuple(_optional(run, "Volumes", dict, "config.config") or ()),
        labels=_string_map(run, "Labels", "config.config"),
        history=tuple(
            _history_entry(entry, f"config.history[{i}]")
            for i, entry in enumerate(_optional(data, "history", list, "config") or ())
        ),
    )


# A JSON object as json.loads returns it.
_Object = dict[str, Any]
_T = TypeVar("_T", str, int, bool, _Object, list[Any])
_TYPE_NAMES = {str: "a string", int: "an integer", bool: "a boolean", dict: "an object", list: "a list"}


def _load_object(raw: bytes, what: str) -> _Object:
    try:
        data = json.loads(raw)
    except (ValueError, RecursionError) as exc:  # RecursionError: deeply nested arrays
        raise InvalidResponse(f"The {what} is not valid JSON") from exc
    if not isinstance(data, dict):
        raise InvalidResponse(f"The {what} is not a JSON object")
    return data


def _check(value: object, expected: type[_T], where: str) -> _T:
    # bool is an int subclass; a size of `true` is still garbage.
    if not isinstance(value, expected) or (expected is int and isinstance(value, bool)):
        raise InvalidResponse(f"Invalid {where}: expected {_TYPE_NAMES[expected]}")
    return value


def _optional(obj: _Object, key: str, expected: type[_T], where: str) -> _T | None:
    value = obj.get(key)
    return None if value is None else _check(value, expected, f"{where}.{key}")


def _required(obj: _Object, key: str, expected: type[_T], where: str) -> _T:
    value = _optional(obj, key, expected, where)
    if value is None:
        raise InvalidResponse(f"Invalid {where}: {key} is missing")
    return value


def _strings(obj: _Object, key: str, where: str) -> tuple[str, ...]:
    values = _optional(obj, key, list, where) or []
    return tuple(_check(v, str, f"{where}.{key}[{i}]") for i, v in enumerate(values))


def _string_map(obj: _Object, key: str, where: str) -> dict[str, str]:
    values = _optional(obj, key, dict, where) or {}
    return {k: _check(v, str, f"{where}.{key}.{k}") for k, v in values.items()}


def _descriptor(obj: _Object, where: str) -> Descriptor:
    digest = _required(obj, "digest", str, where)
    if not is_valid_digest(digest):
        raise InvalidResponse(f"Invalid {where}.digest: {digest[:80]!r} is not a digest")
    size = _required(obj, "size", int, where)
    if size < 0:
        raise InvalidResponse(f"Invalid {where}.size: negative")
    platform = _optional(obj, "platform", dict, where)
    return Descriptor(
        media_type=_required(obj, "mediaType", str, where),
        digest=digest,
        size=size,
        annotations=_string_map(obj, "annotations", where),
        platform=None if platform is None else _platform(platform, f"{where}.platform"),
        artifact_type=_optional(obj, "artifactType", str, where),
    )


def _descriptors(obj: _Object, key: str, where: str) -> tuple[Descriptor, ...]:
    values = _optional(obj, key, list, where) or []
    return tuple(
        _descriptor(_check(v, dict, f"{where}.{key}[{i}]"), f"{where}.{key}[{i}]") for i, v in enumerate(values)
    )


def _optional_descriptor(obj: _Object, key: str, where: str) -> Descriptor | None:
    value = _optional(obj, key, dict, where)
    return None if value is None else _descriptor(value, f"{where}.{key}")


def _platform(obj: _Object, where: str) -> Platform:
    return Platform(
        os=_required(obj, "os", str, where),
        architecture=_required(obj, "architecture", str, where),
        variant=_optional(obj, "variant", str, where),
        os_version=_optional(obj, "os.version", str, where),
    )


def _history_entry(value: object, where: str) -> HistoryEntry:
    obj = _check(value, dict, where)
    return HistoryEntry(
        created=_timestamp(obj, "created", where),
        created_by=_optional(obj, "created_by", str, where),
        comment=_optional(obj, "comment", str, where),
        empty_layer=_optional(obj, "empty_layer", bool, where) or False,
    )


def _timestamp(obj: _Object, key: str, where: str) -> datetime | None:
    """RFC 3339 as an aware datetime. Unparseable text and Go's zero time (0001-01-01, written by
    builders that do not record a date) mean "unknown", not a broken image."""
    text = _optional(obj, key, str, where)
    if text is None:
        return None
    try:
        value = datetime.fromisoformat(text)
    except ValueError:
        return None
    if value.year <= 1:
        return None
    value = value if value.tzinfo else value.replace(tzinfo=UTC)
    try:
        value.astimezone(UTC)
    except OverflowError:  # e.g. 9999-12-31T23:59:59-23:59: no UTC instant, so nothing to store
        return None
    return value
