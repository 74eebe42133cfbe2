"""Build real images in memory and push them over the registry HTTP API with plain requests.

Independent of the project's registry client on purpose: tests compare what the client
reads against what was pushed here.
"""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import random
import re
import tarfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timezone
from typing import Any
from urllib.parse import urljoin, urlparse

import requests

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_LAYER = "application/vnd.docker.image.rootfs.diff.tar.gzip"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_LAYER = "application/vnd.oci.image.layer.v1.tar+gzip"
OCI_EMPTY = "application/vnd.oci.empty.v1+json"
# Anything less and the registry converts to schema1, picks one child of a list, or 404s on OCI.
MANIFEST_ACCEPT = ", ".join((OCI_INDEX, OCI_MANIFEST, DOCKER_LIST, DOCKER_MANIFEST))

DEFAULT_CREATED = datetime(2024, 1, 15, 12, 0, tzinfo=timezone.utc)
DEFAULT_ENV = ("PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin",)
DEFAULT_PLATFORMS: tuple[tuple[str, str, str | None], ...] = (("linux", "amd64", None), ("linux", "arm64", "v8"))
EMPTY_JSON = b"{}"
TIMEOUT = 10
# Fixed so that the same inputs always give the same layer bytes and digests.
LAYER_MTIME = 1_700_000_000


@dataclass(frozen=True)
class _MediaTypes:
    manifest: str
    index: str
    config: str
    layer: str


FORMATS = {
    "docker": _MediaTypes(DOCKER_MANIFEST, DOCKER_LIST, DOCKER_CONFIG, DOCKER_LAYER),
    "oci": _MediaTypes(OCI_MANIFEST, OCI_INDEX, OCI_CONFIG, OCI_LAYER),
}

_DOCKERFILE_KEYWORDS = {
    "Env": "ENV",
    "WorkingDir": "WORKDIR",
    "ExposedPorts": "EXPOSE",
    "Volumes": "VOLUME",
    "User": "USER",
    "Labels": "LABEL",
    "Entrypoint": "ENTRYPOINT",
    "Cmd": "CMD",
}
_CHALLENGE_PARAM = re.compile(r'(\w+)="([^"]*)"')
_REPOSITORY_PATH = re.compile(r"^/v2/(.+?)/(?:blobs|manifests|tags)/")


def sha256_digest(data: bytes) -> str:
    return "sha256:" + hashlib.sha256(data).hexdigest()


def make_layer(path: str, content: bytes) -> tuple[bytes, str]:
    """Return (gzip-compressed tar holding one file, diff_id of the uncompressed tar)."""
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w", format=tarfile.PAX_FORMAT) as tar:
        info = tarfile.TarInfo(path)
        info.size = len(content)
        info.mode = 0o644
        info.mtime = LAYER_MTIME
        tar.addfile(info, io.BytesIO(content))
    plain = buffer.getvalue()
    return gzip.compress(plain, mtime=0), sha256_digest(plain)


@dataclass(frozen=True)
class PushedImage:
    """What was pushed. For an index, size includes the children and layer_digests is empty."""

    repository: str
    digest: str
    media_type: str
    raw: bytes
    config_digest: str | None
    layer_digests: tuple[str, ...]
    size: int
    created: datetime | None
    platform: str | None
    children: tuple[PushedImage, ...] = ()


class TokenAuth(requests.auth.AuthBase):
    """Bearer auth for test pushes: answers each challenge with a token for exactly the
    challenged scope, and reuses the last token per repository."""

    def __init__(self, username: str, password: str) -> None:
        self.credentials = (username, password)
        self._tokens: dict[str, str] = {}

    def __call__(self, request: requests.PreparedRequest) -> requests.PreparedRequest:
        token = self._tokens.get(_repository_of(request.url or ""))
        if token:
            request.headers["Authorization"] = f"Bearer {token}"
        request.register_hook("response", self._answer_challenge)
        return request

    def _answer_challenge(self, response: requests.Response, **kwargs: Any) -> requests.Response:
        challenge = response.headers.get("Www-Authenticate", "")
        if response.status_code != 401 or not challenge.startswith("Bearer "):
            return response
        params = dict(_CHALLENGE_PARAM.findall(challenge))
        answer = requests.get(
            params["realm"],
            params={"service": params.get("service", ""), "scope": params.get("scope", "").split()},
            auth=self.credentials,
            timeout=TIMEOUT,
        )
        answer.raise_for_status()
        token = answer.json()["token"]
        self._tokens[_repository_of(response.request.url or "")] = token
        # Same replay as requests' own HTTPDigestAuth: the retry goes through the adapter,
        # so this hook does not run again and cannot loop.
        retry = response.request.copy()
        retry.headers["Authorization"] = f"Bearer {token}"
        response.content  # noqa: B018 - read the body so the connection can be reused
        response.close()
        retried = response.connection.send(retry, **kwargs)
        retried.history.append(response)
        retried.request = retry
        return retried


class ImagePusher:
    """Pushes images, indexes and artifacts to one registry; `session` carries the auth."""

    def __init__(self, base_url: str, auth: requests.auth.AuthBase | tuple[str, str] | None = None) -> None:
        self.base_url = base_url.rstrip("/")
        self.session = requests.Session()
        self.session.auth = auth

    def push_image(
        self,
        repository: str,
        tags: Iterable[str] | str | None = ("latest",),
        *,
        fmt: str = "docker",
        created: datetime | None = None,
        labels: dict[str, str] | None = None,
        env: list[str] | None = None,
        layers: int = 2,
        arch: str = "amd64",
        os: str = "linux",
        variant: str | None = None,
        author: str | None = None,
        unique: str | None = None,
        entrypoint: list[str] | None = None,
        cmd: list[str] | None = None,
        exposed_ports: Iterable[str] | None = None,
        user: str | None = None,
        workdir: str | None = None,
        volumes: Iterable[str] | None = None,
        history_commands: Sequence[str] | None = None,
        layer_size: int = 2048,
        base_layers: Sequence[tuple[bytes, str]] = (),
    ) -> PushedImage:
        """Push a single-platform image and tag it (tags=None pushes by digest only).

        The same arguments always give the same digest; a different `unique` gives different
        layer bytes. env=None means a PATH-only Env; other None settings are left out of the
        config. base_layers, from make_layer, come first (images sharing them share those
        blobs), then `layers` generated ones. history_commands, if given, are the created_by
        of each layer (one per layer, base layers included).
        """
        media = _media_types(fmt)
        created = _utc(created)
        platform = "/".join(part for part in (os, arch, variant) if part)
        if history_commands is None:
            history_commands = [f"COPY layer-{i}.bin /opt/ # buildkit" for i in range(len(base_layers) + layers)]
        if len(history_commands) != len(base_layers) + layers:
            raise ValueError(f"history_commands needs one entry per layer ({len(base_layers) + layers})")
        layer_blobs = [*base_layers] + [
            make_layer(f"opt/layer-{i}.bin", random.Random(f"{unique}|{platform}|{i}").randbytes(layer_size))
            for i in range(layers)
        ]
        settings = _container_config(
            env=list(DEFAULT_ENV) if env is None else env,
            workdir=workdir,
            exposed_ports=exposed_ports,
            volumes=volumes,
            user=user,
            labels=labels,
            entrypoint=entrypoint,
            cmd=cmd,
        )
        config = {
            "created": _rfc3339(created),
            "author": author,
            "architecture": arch,
            "os": os,
            "variant": variant,
            "config": settings,
            "rootfs": {"type": "layers", "diff_ids": [diff_id for _, diff_id in layer_blobs]},
            "history": _history(_rfc3339(created), history_commands, settings),
        }
        config = {key: value for key, value in config.items() if value is not None}
        config_bytes = json.dumps(config, separators=(",", ":")).encode()
        for blob in [config_bytes, *(compressed for compressed, _ in layer_blobs)]:
            self.upload_blob(repository, blob)
        manifest = {
            "schemaVersion": 2,
            "mediaType": media.manifest,
            "config": _descriptor(media.config, config_bytes),
            "layers": [_descriptor(media.layer, compressed) for compressed, _ in layer_blobs],
        }
        raw = _manifest_bytes(manifest)
        return PushedImage(
            repository=repository,
            digest=self._put_manifest(repository, tags, raw, media.manifest),
            media_type=media.manifest,
            raw=raw,
            config_digest=sha256_digest(config_bytes),
            layer_digests=tuple(sha256_digest(compressed) for compressed, _ in layer_blobs),
            size=len(raw) + len(config_bytes) + sum(len(compressed) for compressed, _ in layer_blobs),
            created=created,
            platform=platform,
        )

    def push_index(
        self,
        repository: str,
        tags: Iterable[str] | str | None = ("latest",),
        *,
        fmt: str = "docker",
        platforms: Sequence[tuple[str, str, str | None]] = DEFAULT_PLATFORMS,
        created: datetime | None = None,
        unique: str | None = None,
        layer_size: int = 2048,
    ) -> PushedImage:
        """Push one image per (os, arch, variant) by digest, then a Docker manifest list or
        OCI index referring to them under the tags."""
        media = _media_types(fmt)
        children = tuple(
            self.push_image(
                repository,
                None,
                fmt=fmt,
                created=created,
                unique=unique,
                os=os,
                arch=arch,
                variant=variant,
                layer_size=layer_size,
            )
            for os, arch, variant in platforms
        )
        entries = []
        for child, (os, arch, variant) in zip(children, platforms):
            platform = {"architecture": arch, "os": os} | ({"variant": variant} if variant else {})
            entries.append(_descriptor(child.media_type, child.raw) | {"platform": platform})
        raw = _manifest_bytes({"schemaVersion": 2, "mediaType": media.index, "manifests": entries})
        return PushedImage(
            repository=repository,
            digest=self._put_manifest(repository, tags, raw, media.index),
            media_type=media.index,
            raw=raw,
            config_digest=None,
            layer_digests=(),
            size=len(raw) + sum(child.size for child in children),
            created=_utc(created),
            platform=None,
            children=children,
        )

    def push_artifact(
        self,
        repository: str,
        tag: str | None,
        *,
        artifact_type: str = "application/vnd.example.sbom.v1",
        payload: bytes = b"{}",
        subject: PushedImage | None = None,
    ) -> PushedImage:
        """Push an OCI 1.1 artifact: empty config, the payload as its one layer, optional subject."""
        self.upload_blob(repository, EMPTY_JSON)
        self.upload_blob(repository, payload)
        manifest: dict[str, Any] = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "artifactType": artifact_type,
            "config": _descriptor(OCI_EMPTY, EMPTY_JSON),
            "layers": [_descriptor(artifact_type, payload)],
        }
        if subject is not None:
            manifest["subject"] = _descriptor(subject.media_type, subject.raw)
        raw = _manifest_bytes(manifest)
        return PushedImage(
            repository=repository,
            digest=self._put_manifest(repository, tag, raw, OCI_MANIFEST),
            media_type=OCI_MANIFEST,
            raw=raw,
            config_digest=sha256_digest(EMPTY_JSON),
            layer_digests=(sha256_digest(payload),),
            size=len(raw) + len(EMPTY_JSON) + len(payload),
            created=None,
            platform=None,
        )

    def push_raw_manifest(self, repository: str, reference: str, raw: bytes, media_type: str) -> str:
        """PUT exact manifest bytes under a tag or digest; return the registry's Docker-Content-Digest."""
        response = self._request(
            "PUT",
            f"/v2/{repository}/manifests/{reference}",
            expect=(201,),
            data=raw,
            headers={"Content-Type": media_type},
        )
        return response.headers["Docker-Content-Digest"]

    def tag(self, repository: str, image: PushedImage, tag: str) -> None:
        self.push_raw_manifest(repository, tag, image.raw, image.media_type)

    def copy_tag(self, repository: str, source: str, target: str) -> str:
        """Point `target` at the manifest `source` (a tag or digest) names, its bytes unchanged, as
        `skopeo copy --preserve-digests` does; return the digest. RuntimeError when it is gone."""
        response = self._request(
            "GET", f"/v2/{repository}/manifests/{source}", expect=(200,), headers={"Accept": MANIFEST_ACCEPT}
        )
        return self.push_raw_manifest(repository, target, response.content, response.headers["Content-Type"])

    def delete_manifest(self, repository: str, digest: str) -> bool:
        """DELETE by digest, which takes every tag on it along; False when it was gone already."""
        return self._request("DELETE", f"/v2/{repository}/manifests/{digest}", expect=(202, 404)).status_code == 202

    def tags(self, repository: str) -> list[str]:
        """Sorted tags straight from tags/list (which answers null for a repository with none)."""
        response = self._request("GET", f"/v2/{repository}/tags/list", expect=(200,))
        return sorted(response.json()["tags"] or [])

    def head_digest(self, repository: str, reference: str) -> str | None:
        response = self._request(
            "HEAD", f"/v2/{repository}/manifests/{reference}", expect=(200, 404), headers={"Accept": MANIFEST_ACCEPT}
        )
        return response.headers["Docker-Content-Digest"] if response.status_code == 200 else None

    def upload_blob(self, repository: str, data: bytes) -> str:
        """Upload a blob (POST then monolithic PUT) unless the repository has it; return its digest."""
        digest = sha256_digest(data)
        if self._request("HEAD", f"/v2/{repository}/blobs/{digest}", expect=(200, 404)).status_code == 200:
            return digest
        started = self._request("POST", f"/v2/{repository}/blobs/uploads/", expect=(202,))
        self._request(
            "PUT",
            started.headers["Location"],
            expect=(201,),
            params={"digest": digest},
            data=data,
            headers={"Content-Type": "application/octet-stream"},
        )
        return digest

    def _put_manifest(self, repository: str, tags: Iterable[str] | str | None, raw: bytes, media_type: str) -> str:
        expected = sha256_digest(raw)
        if tags is None:
            references = [expected]
        elif isinstance(tags, str):
            references = [tags]
        else:
            references = list(tags) or [expected]
        for reference in references:
            digest = self.push_raw_manifest(repository, reference, raw, media_type)
            if digest != expected:
                raise RuntimeError(f"registry stored {repository}@{digest}, expected {expected}")
        return expected

    def _request(self, method: str, path_or_url: str, *, expect: tuple[int, ...], **kwargs: Any) -> requests.Response:
        # urljoin also accepts the absolute upload Location the registry hands back.
        url = urljoin(self.base_url, path_or_url)
        response = self.session.request(method, url, timeout=TIMEOUT, **kwargs)
        if response.status_code not in expect:
            raise RuntimeError(f"{method} {url} -> {response.status_code}: {response.text[:500]}")
        return response


def _media_types(fmt: str) -> _MediaTypes:
    try:
        return FORMATS[fmt]
    except KeyError:
        raise ValueError(f"unknown fmt {fmt!r}: expected one of {sorted(FORMATS)}") from None


def _utc(created: datetime | None) -> datetime:
    if created is None:
        return DEFAULT_CREATED
    if created.tzinfo is None:
        raise ValueError("created must be timezone-aware")
    return created.astimezone(timezone.utc)


def _rfc3339(moment: datetime) -> str:
    return moment.isoformat().replace("+00:00", "Z")


def _descriptor(media_type: str, data: bytes) -> dict[str, Any]:
    return {"mediaType": media_type, "digest": sha256_digest(data), "size": len(data)}


def _manifest_bytes(manifest: dict[str, Any]) -> bytes:
    # Indented like `docker push` output, so a client that re-serializes JSON instead of
    # keeping the raw bytes ends up with a different digest and fails tests.
    return json.dumps(manifest, indent=3).encode()


def _repository_of(url: str) -> str:
    match = _REPOSITORY_PATH.match(urlparse(url).path)
    return match.group(1) if match else ""


def _container_config(
    *,
    env: list[str],
    workdir: str | None,
    exposed_ports: Iterable[str] | None,
    volumes: Iterable[str] | None,
    user: str | None,
    labels: dict[str, str] | None,
    entrypoint: list[str] | None,
    cmd: list[str] | None,
) -> dict[str, Any]:
    # Keys in Dockerfile order; _history relies on it.
    settings: dict[str, Any] = {
        "Env": env,
        "WorkingDir": workdir,
        "ExposedPorts": None if exposed_ports is None else {port: {} for port in exposed_ports},
        "Volumes": None if volumes is None else {volume: {} for volume in volumes},
        "User": user,
        "Labels": labels,
        "Entrypoint": entrypoint,
        "Cmd": cmd,
    }
    return {key: value for key, value in settings.items() if value is not None}


def _history(created: str, layer_commands: Sequence[str], settings: dict[str, Any]) -> list[dict[str, Any]]:
    """One entry per layer plus empty_layer entries for the settings.

    ENV and WORKDIR come between the first and the later layers, as in a typical Dockerfile,
    so a reader has to skip empty_layer entries to pair history with layers.
    """
    empty = {
        key: {"created": created, "created_by": _dockerfile_line(key, value), "empty_layer": True}
        for key, value in settings.items()
        if value
    }
    layered = [{"created": created, "created_by": command} for command in layer_commands]
    early = [entry for key, entry in empty.items() if key in ("Env", "WorkingDir")]
    late = [entry for key, entry in empty.items() if key not in ("Env", "WorkingDir")]
    return layered[:1] + early + layered[1:] + late


def _dockerfile_line(key: str, value: Any) -> str:
    if key == "Labels":
        arguments = " ".join(f"{name}={text}" for name, text in value.items())
    elif key in ("Entrypoint", "Cmd", "Volumes"):
        arguments = json.dumps(list(value))
    elif isinstance(value, str):
        arguments = value
    else:
        arguments = " ".join(value)
    return f"{_DOCKERFILE_KEYWORDS[key]} {arguments}"
