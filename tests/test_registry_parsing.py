"""Parsing of registry answers, on bytes: manifests, image configs, lists, error bodies, names."""

from __future__ import annotations

import contextlib
import hashlib
import json
from datetime import UTC, datetime, timedelta

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from dashboard.registry import mediatypes
from dashboard.registry.errors import (
    DigestMismatch,
    InvalidResponse,
    NotFound,
    RateLimited,
    RegistryError,
    Unauthorized,
    Unavailable,
    Unsupported,
    error_from_response,
)
from dashboard.registry.manifests import (
    Descriptor,
    HistoryEntry,
    ImageIndex,
    ImageManifest,
    Platform,
    Schema1Manifest,
    UnknownManifest,
    align_history,
    compute_digest,
    is_valid_digest,
    is_valid_repository_name,
    is_valid_tag,
    make_tombstone,
    parse_catalog_page,
    parse_image_config,
    parse_manifest,
    parse_tag_list,
    verify_digest,
)

# No deadline: a loaded CI machine must not turn slowness into failures. No example
# database: failures print their example, and the tree stays clean.
PROPERTY = settings(deadline=None, database=None)

D1 = "sha256:" + "1" * 64
D2 = "sha256:" + "2" * 64
D3 = "sha256:" + "3" * 64


def _json(value: object) -> bytes:
    return json.dumps(value).encode()


def _image(media_type: str | None, config_type: str = mediatypes.OCI_CONFIG, **extra: object) -> dict:
    manifest = {
        "schemaVersion": 2,
        "config": {"mediaType": config_type, "digest": D1, "size": 100},
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D2, "size": 2000},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": D3, "size": 3000},
        ],
        **extra,
    }
    if media_type:
        manifest["mediaType"] = media_type
    return manifest


# Digests and names


def test_compute_and_verify_digest() -> None:
    raw = b'{"schemaVersion":2}'
    digest = compute_digest(raw)
    assert digest == "sha256:" + hashlib.sha256(raw).hexdigest()
    verify_digest(raw, digest)
    verify_digest(raw, "sha512:" + hashlib.sha512(raw).hexdigest())

    with pytest.raises(DigestMismatch) as caught:
        verify_digest(raw + b" ", digest)
    assert caught.value.expected == digest
    assert caught.value.actual == compute_digest(raw + b" ")
    assert digest in str(caught.value)
    assert isinstance(caught.value, InvalidResponse)

    with pytest.raises(InvalidResponse):
        verify_digest(raw, "sha256:abc")


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        (D1, True),
        ("sha512:" + "a" * 128, True),
        ("sha256:" + "A" * 64, False),
        ("sha256:" + "1" * 63, False),
        ("sha256:abc", False),
        ("md5:" + "1" * 32, False),
        ("latest", False),
        (D1 + "\n", False),
        (None, False),
    ],
)
def test_is_valid_digest(value: object, valid: bool) -> None:
    assert is_valid_digest(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("api", True),
        ("org/team-b/worker-199", True),
        ("a__b/c.d/e_f/g--h", True),
        ("x" * 255, True),
        ("x" * 256, False),
        ("Api-000", False),
        ("a/", False),
        ("/a", False),
        ("a//b", False),
        ("a/../b", False),
        ("-a", False),
        ("a___b", False),
        ("a:b", False),
        ("", False),
    ],
)
def test_is_valid_repository_name(value: str, valid: bool) -> None:
    assert is_valid_repository_name(value) is valid


@pytest.mark.parametrize(
    ("value", "valid"),
    [
        ("latest", True),
        ("v2.0.0-rc.1", True),
        ("_private", True),
        ("A" * 128, True),
        ("A" * 129, False),
        (".hidden", False),
        ("-x", False),
        ("a/b", False),
        ("sha256:" + "1" * 64, False),
        ("tàg", False),
        ("latest\n", False),
        ("", False),
    ],
)
def test_is_valid_tag(value: str, valid: bool) -> None:
    assert is_valid_tag(value) is valid


# Manifests


@pytest.mark.parametrize("media_type", [mediatypes.DOCKER_MANIFEST, mediatypes.OCI_MANIFEST])
def test_image_manifest(media_type: str) -> None:
    config_type = mediatypes.DOCKER_CONFIG if media_type == mediatypes.DOCKER_MANIFEST else mediatypes.OCI_CONFIG
    raw = _json(_image(media_type, config_type, annotations={"org.opencontainers.image.source": "git"}))

    manifest = parse_manifest(raw, f"{media_type}; charset=utf-8")

    assert isinstance(manifest, ImageManifest)
    assert manifest.kind == "image"
    assert manifest.media_type == media_type
    assert manifest.config == Descriptor(config_type, D1, 100)
    assert [layer.digest for layer in manifest.layers] == [D2, D3]
    assert manifest.total_size == 5100
    assert manifest.annotations == {"org.opencontainers.image.source": "git"}
    assert manifest.subject is None


def test_oci_manifest_without_body_media_type_uses_the_content_type() -> None:
    # umoci writes no mediaType into the body; the registry still sends the right Content-Type.
    manifest = parse_manifest(_json(_image(None)), mediatypes.OCI_MANIFEST)
    assert isinstance(manifest, ImageManifest)
    assert manifest.media_type == mediatypes.OCI_MANIFEST


def test_generic_content_type_falls_back_to_the_body() -> None:
    manifest = parse_manifest(_json(_image(mediatypes.DOCKER_MANIFEST)), "application/json")
    assert manifest.media_type == mediatypes.DOCKER_MANIFEST
    assert manifest.kind == "image"
    assert parse_manifest(_json(_image(None)), None) == UnknownManifest("")


@pytest.mark.parametrize("media_type", [mediatypes.DOCKER_MANIFEST_LIST, mediatypes.OCI_INDEX])
def test_index(media_type: str) -> None:
    raw = _json(
        {
            "schemaVersion": 2,
            "mediaType": media_type,
            "manifests": [
                {
                    "mediaType": mediatypes.OCI_MANIFEST,
                    "digest": D1,
                    "size": 500,
                    "platform": {"architecture": "amd64", "os": "linux"},
                },
                {
                    "mediaType": mediatypes.OCI_MANIFEST,
                    "digest": D2,
                    "size": 501,
                    "platform": {"architecture": "arm64", "os": "linux", "variant": "v8", "os.version": "x"},
                },
                {
                    "mediaType": mediatypes.OCI_MANIFEST,
                    "digest": D3,
                    "size": 300,
                    "annotations": {"vnd.docker.reference.type": "attestation-manifest"},
                },
            ],
        }
    )

    index = parse_manifest(raw, media_type)

    assert isinstance(index, ImageIndex)
    assert index.kind == "index"
    assert [child.digest for child in index.manifests] == [D1, D2, D3]
    assert index.manifests[1].platform == Platform("linux", "arm64", "v8", "x")
    assert str(index.manifests[1].platform) == "linux/arm64/v8"
    assert index.manifests[2].platform is None
    assert index.manifests[2].annotations == {"vnd.docker.reference.type": "attestation-manifest"}


def test_artifacts() -> None:
    with_type = parse_manifest(
        _json(
            _image(
                mediatypes.OCI_MANIFEST,
                "application/vnd.oci.empty.v1+json",
                artifactType="application/vnd.example.sbom.v1",
                subject={"mediaType": mediatypes.OCI_MANIFEST, "digest": D3, "size": 10},
            )
        ),
        mediatypes.OCI_MANIFEST,
    )
    assert isinstance(with_type, ImageManifest)
    assert with_type.kind == "artifact"
    assert with_type.artifact_type == "application/vnd.example.sbom.v1"
    assert with_type.subject is not None and with_type.subject.digest == D3

    # Older artifacts (Helm charts) mark themselves only by their config media type.
    helm = parse_manifest(
        _json(_image(mediatypes.OCI_MANIFEST, "application/vnd.cncf.helm.config.v1+json")), mediatypes.OCI_MANIFEST
    )
    assert helm.kind == "artifact"


def test_schema1_comes_back_as_legacy() -> None:
    body = {"schemaVersion": 1, "name": "api-000", "tag": "latest", "architecture": "amd64", "fsLayers": []}
    signed = parse_manifest(_json(body | {"signatures": []}), mediatypes.DOCKER_SCHEMA1_SIGNED)
    assert signed == Schema1Manifest(mediatypes.DOCKER_SCHEMA1_SIGNED, "api-000", "latest", "amd64")
    assert signed.kind == "schema1"
    assert parse_manifest(_json(body), "application/json").kind == "schema1"


def test_unknown_media_type_is_not_parsed() -> None:
    manifest = parse_manifest(b"\x00 not json", "application/vnd.oci.artifact.manifest.v1+json")
    assert manifest == UnknownManifest("application/vnd.oci.artifact.manifest.v1+json")
    assert manifest.kind == "unknown"


@pytest.mark.parametrize(
    "raw",
    [
        b"",
        b"{not json",
        b"\xff\xfe\x00",
        b"[]",
        b"null",
        b"[" * 100_000 + b"]" * 100_000,
        _json({k: v for k, v in _image(mediatypes.OCI_MANIFEST).items() if k != "config"}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"config": "sha256:x"}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"layers": {"0": {}}}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"layers": [None]}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"layers": [{"mediaType": "x", "digest": "sha256:abc", "size": 1}]}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"layers": [{"mediaType": "x", "digest": D1, "size": True}]}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"layers": [{"mediaType": "x", "digest": D1, "size": -1}]}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"layers": [{"mediaType": "x", "digest": D1, "size": "1"}]}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"layers": [{"digest": D1, "size": 1}]}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"annotations": {"a": 1}}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"artifactType": 7}),
        _json(_image(mediatypes.OCI_MANIFEST) | {"subject": []}),
    ],
)
def test_malformed_image_manifest_is_invalid_response(raw: bytes) -> None:
    with pytest.raises(InvalidResponse):
        parse_manifest(raw, mediatypes.OCI_MANIFEST)


def test_malformed_index_platform_is_invalid_response() -> None:
    raw = _json({"manifests": [{"mediaType": "x", "digest": D1, "size": 1, "platform": {"os": "linux"}}]})
    with pytest.raises(InvalidResponse, match="architecture"):
        parse_manifest(raw, mediatypes.OCI_INDEX)


def test_tombstones_are_unique_artifacts() -> None:
    first_config, first = make_tombstone("gone")
    second_config, second = make_tombstone("gone")

    assert first != second
    tombstone = parse_manifest(first, mediatypes.OCI_MANIFEST)
    assert isinstance(tombstone, ImageManifest)
    assert tombstone.kind == "artifact"
    assert tombstone.artifact_type == mediatypes.TOMBSTONE_ARTIFACT_TYPE
    assert tombstone.config.digest == compute_digest(first_config) != compute_digest(second_config)
    assert tombstone.layers == ()


# Image configs

FULL_CONFIG = {
    "created": "2024-03-10T12:30:45.123456789Z",
    "author": "Jane",
    "architecture": "arm64",
    "os": "linux",
    "variant": "v8",
    "config": {
        "Env": ["PATH=/bin", "LANG=C.UTF-8"],
        "Entrypoint": ["/entry.sh"],
        "Cmd": ["serve", "--port", "80"],
        "WorkingDir": "/app",
        "User": "1000:1000",
        "ExposedPorts": {"80/tcp": {}, "53/udp": {}},
        "Volumes": {"/data": {}},
        "Labels": {"org.opencontainers.image.version": "1.2.3"},
    },
    "rootfs": {"type": "layers", "diff_ids": [D1, D2]},
    "history": [
        {"created": "2024-03-10T12:00:00Z", "created_by": "ADD rootfs.tar /", "comment": "base"},
        {"created": "2024-03-10T12:01:00Z", "created_by": "ENV LANG=C.UTF-8", "empty_layer": True},
        {"created": "2024-03-10T12:02:00Z", "created_by": "COPY app /app"},
    ],
}


def test_image_config() -> None:
    config = parse_image_config(_json(FULL_CONFIG))

    assert config.created == datetime(2024, 3, 10, 12, 30, 45, 123456, tzinfo=UTC)
    assert config.author == "Jane"
    assert str(config.platform) == "linux/arm64/v8"
    assert config.env == ("PATH=/bin", "LANG=C.UTF-8")
    assert config.entrypoint == ("/entry.sh",)
    assert config.cmd == ("serve", "--port", "80")
    assert config.working_dir == "/app"
    assert config.user == "1000:1000"
    assert config.exposed_ports == ("80/tcp", "53/udp")
    assert config.volumes == ("/data",)
    assert config.labels == {"org.opencontainers.image.version": "1.2.3"}
    assert [entry.created_by for entry in config.history] == ["ADD rootfs.tar /", "ENV LANG=C.UTF-8", "COPY app /app"]
    assert [entry.empty_layer for entry in config.history] == [False, True, False]
    assert config.history[0].comment == "base"


def test_minimal_image_config() -> None:
    config = parse_image_config(b'{"config": {"Env": null, "Labels": null}}')
    assert config.created is None
    assert config.platform is None
    assert config.env == ()
    assert config.labels == {}
    assert config.history == ()


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("2024-03-10T12:00:00+02:00", datetime(2024, 3, 10, 10, 0, tzinfo=UTC)),
        ("2024-03-10T12:00:00", datetime(2024, 3, 10, 12, 0, tzinfo=UTC)),
        ("0001-01-01T00:00:00Z", None),
        ("yesterday", None),
    ],
)
def test_config_created(text: str, expected: datetime | None) -> None:
    created = parse_image_config(_json({"created": text})).created
    assert created == expected
    assert created is None or created.tzinfo is not None


@pytest.mark.parametrize(
    "config",
    [
        {"created": 1710000000},
        {"config": []},
        {"config": {"Env": "PATH=/bin"}},
        {"config": {"Cmd": [1, 2]}},
        {"config": {"Labels": {"a": None}}},
        {"config": {"ExposedPorts": ["80/tcp"]}},
        {"history": {}},
        {"history": ["RUN x"]},
        {"history": [{"empty_layer": "yes"}]},
    ],
)
def test_malformed_image_config_is_invalid_response(config: dict) -> None:
    with pytest.raises(InvalidResponse):
        parse_image_config(_json(config))


def _entry(created_by: str, empty: bool = False) -> HistoryEntry:
    return HistoryEntry(created=None, created_by=created_by, comment=None, empty_layer=empty)


L1, L2 = Descriptor("layer", D1, 1), Descriptor("layer", D2, 2)


def test_align_history_skips_empty_layers() -> None:
    history = [_entry("ADD /"), _entry("ENV A=1", empty=True), _entry("COPY /app")]
    steps = align_history([L1, L2], history)
    assert [(s.history.created_by if s.history else None, s.layer) for s in steps] == [
        ("ADD /", L1),
        ("ENV A=1", None),
        ("COPY /app", L2),
    ]


def test_align_history_with_mismatched_counts() -> None:
    assert [(s.history, s.layer) for s in align_history([L1, L2], [_entry("ADD /")])] == [
        (_entry("ADD /"), L1),
        (None, L2),
    ]
    assert [(s.history, s.layer) for s in align_history([L1], [_entry("A"), _entry("B")])] == [
        (_entry("A"), L1),
        (_entry("B"), None),
    ]
    assert [(s.history, s.layer) for s in align_history([L1], [])] == [(None, L1)]


# Catalog and tag lists


def test_catalog_and_tag_lists() -> None:
    assert parse_catalog_page(b'{"repositories":["a","b/c"]}') == ["a", "b/c"]
    assert parse_catalog_page(b'{"repositories":[]}') == []
    assert parse_tag_list(b'{"name":"app-004","tags":["1.0","latest"]}') == ["1.0", "latest"]
    # What Distribution answers once every tag of a repository was deleted.
    assert parse_tag_list(b'{"name":"app-004","tags":null}') == []


@pytest.mark.parametrize("raw", [b"", b"[]", b'{"tags": "latest"}', b'{"tags": [1]}', b"<html>"])
def test_malformed_tag_list_is_invalid_response(raw: bytes) -> None:
    with pytest.raises(InvalidResponse):
        parse_tag_list(raw)


# Error bodies


def _error_body(code: str, message: str, detail: object = None) -> bytes:
    return _json({"errors": [{"code": code, "message": message, "detail": detail}]})


def test_errors_from_spec_bodies() -> None:
    not_found = error_from_response(
        404, _error_body("MANIFEST_UNKNOWN", "manifest unknown", {"Tag": "latest"}), {}, method="GET"
    )
    assert type(not_found) is NotFound
    assert (not_found.status, not_found.code, not_found.detail) == (404, "MANIFEST_UNKNOWN", {"Tag": "latest"})
    assert str(not_found) == "Manifest unknown (MANIFEST_UNKNOWN, HTTP 404)"

    unauthorized = error_from_response(401, _error_body("UNAUTHORIZED", "authentication required"), {})
    assert type(unauthorized) is Unauthorized

    bad_request = error_from_response(400, _error_body("DIGEST_INVALID", "provided digest did not match"), {})
    assert type(bad_request) is RegistryError
    assert bad_request.code == "DIGEST_INVALID"


def test_delete_disabled_error_says_how_to_fix_it() -> None:
    body = _error_body("UNSUPPORTED", "The operation is unsupported.")
    error = error_from_response(405, body, {}, method="DELETE")
    assert isinstance(error, Unsupported)
    assert "storage.delete.enabled: true" in str(error)
    assert "REGISTRY_STORAGE_DELETE_ENABLED=true" in str(error)


def test_errors_without_spec_body() -> None:
    # HEAD answers have no body; unknown routes get Distribution's plain-text 404.
    assert str(error_from_response(404, b"", {}, method="HEAD")) == "Not found on the registry (HTTP 404)"
    assert isinstance(error_from_response(404, b"404 page not found\n", {}), NotFound)
    assert isinstance(error_from_response(502, b"<html>Bad Gateway</html>", {}), Unavailable)
    assert isinstance(error_from_response(500, _error_body("UNKNOWN", "unknown error"), {}), Unavailable)


def test_rate_limited_carries_retry_after() -> None:
    in_a_minute = (datetime.now(UTC) + timedelta(seconds=60)).strftime("%a, %d %b %Y %H:%M:%S GMT")
    waits = []
    for retry_after in ("30", in_a_minute, "soon"):
        error = error_from_response(429, b"", {"Retry-After": retry_after})
        assert isinstance(error, RateLimited)
        waits.append(error.retry_after)
    assert waits[0] == 30.0
    assert waits[1] is not None and 55 <= waits[1] <= 60
    assert waits[2] is None
    assert "retry after 30 s" in str(error_from_response(429, b"", {"Retry-After": "30"}))


# Properties: whatever the registry sends, parsers raise InvalidResponse or return a value.

MANIFEST_KEYS = [
    "mediaType",
    "config",
    "layers",
    "manifests",
    "digest",
    "size",
    "platform",
    "annotations",
    "subject",
    "artifactType",
    "os",
    "architecture",
    "schemaVersion",
    "tags",
    "repositories",
]
CONFIG_KEYS = [
    "created",
    "config",
    "history",
    "Env",
    "Cmd",
    "Labels",
    "ExposedPorts",
    "empty_layer",
    "created_by",
    "os",
    "architecture",
]


def _json_values(keys: list[str]) -> st.SearchStrategy[object]:
    leaves = st.none() | st.booleans() | st.integers() | st.text(max_size=8) | st.sampled_from([D1, "x"])
    return st.recursive(
        leaves,
        lambda children: (
            st.lists(children, max_size=3)
            | st.dictionaries(st.sampled_from(keys) | st.text(max_size=4), children, max_size=5)
        ),
        max_leaves=20,
    )


CONTENT_TYPES = st.sampled_from(
    [None, "application/json", *sorted(mediatypes.IMAGE_MANIFESTS | mediatypes.INDEXES | mediatypes.SCHEMA1)]
)


@PROPERTY
@given(raw=st.binary(max_size=200), content_type=CONTENT_TYPES)
def test_parse_manifest_on_arbitrary_bytes(raw: bytes, content_type: str | None) -> None:
    with contextlib.suppress(InvalidResponse):
        parse_manifest(raw, content_type)


@PROPERTY
@given(value=_json_values(MANIFEST_KEYS), content_type=CONTENT_TYPES)
def test_parse_manifest_on_arbitrary_json(value: object, content_type: str | None) -> None:
    with contextlib.suppress(InvalidResponse):
        parse_manifest(_json(value), content_type)


@PROPERTY
@given(value=_json_values(CONFIG_KEYS))
def test_parse_image_config_on_arbitrary_json(value: object) -> None:
    raw = _json(value)
    for parse in (parse_image_config, parse_tag_list, parse_catalog_page):
        with contextlib.suppress(InvalidResponse):
            parse(raw)


@PROPERTY
@given(
    status=st.integers(300, 599), body=st.binary(max_size=100) | _json_values(["errors", "code", "message"]).map(_json)
)
def test_error_from_response_on_arbitrary_bodies(status: int, body: bytes) -> None:
    error = error_from_response(status, body, {"Retry-After": "x"})
    assert isinstance(error, RegistryError)
    assert str(error)
