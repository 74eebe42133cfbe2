"""What changed between two versions of an image, read from the cache only (no registry call).

Config differences (env, labels, entrypoint, cmd, ports, user, workdir, created) and layer
differences (shared, added, removed, each with its size and the build step that made it). An
index is compared platform by platform; a platform only one side has is listed as such.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

from django.db.models import Q

from dashboard.models import Manifest, Repository, Tag
from dashboard.registry.errors import InvalidResponse
from dashboard.registry.manifests import (
    ImageConfig,
    ImageManifest,
    align_history,
    is_valid_digest,
    parse_image_config,
    parse_manifest,
)

# Columns compare needs; everything else (children of other digests, JSON summaries) stays unread.
MANIFEST_COLUMNS = ("digest", "media_type", "kind", "size", "created", "platform", "children", "raw", "raw_config")


@dataclass
class Change:
    """One setting that differs; `key` names the variable or label for env and labels."""

    setting: str
    key: str
    before: str | None
    after: str | None

    @property
    def status(self) -> str:
        if self.before is None:
            return "added"
        if self.after is None:
            return "removed"
        return "changed"


@dataclass
class LayerRow:
    digest: str
    size: int
    created_by: str
    status: str  # shared, added or removed


@dataclass
class ImageDiff:
    """Two single-platform images side by side; `problem` explains when they cannot be read."""

    platform: str
    before: Manifest | None
    after: Manifest | None
    changes: list[Change] = field(default_factory=list)
    layers: list[LayerRow] = field(default_factory=list)
    problem: str = ""

    def _size(self, status: str) -> int:
        return sum(row.size for row in self.layers if row.status == status)

    @property
    def shared_size(self) -> int:
        return self._size("shared")

    @property
    def added_size(self) -> int:
        return self._size("added")

    @property
    def removed_size(self) -> int:
        return self._size("removed")

    @property
    def identical(self) -> bool:
        return not self.problem and not self.changes and all(row.status == "shared" for row in self.layers)


@dataclass
class Comparison:
    before: Manifest
    after: Manifest
    images: list[ImageDiff]
    note: str = ""

    @property
    def same_digest(self) -> bool:
        return self.before.digest == self.after.digest


def resolve_reference(repository: Repository, reference: str) -> Manifest | None:
    """The cached manifest a tag points at, or the one with that digest; None when unknown."""
    if is_valid_digest(reference):
        lookup = Q(digest=reference)
    else:
        lookup = Q(pk__in=Tag.objects.filter(repository=repository, name=reference).values("manifest_id"))
    return Manifest.objects.filter(lookup, repository=repository).only(*MANIFEST_COLUMNS).first()


def compare_manifests(repository: Repository, before: Manifest, after: Manifest) -> Comparison:
    kinds = {before.kind, after.kind}
    if kinds == {Manifest.Kind.IMAGE}:
        return Comparison(before, after, [compare_images(before.platform, before, after)])
    if kinds == {Manifest.Kind.INDEX}:
        return Comparison(before, after, _compare_indexes(repository, before, after))
    if kinds == {Manifest.Kind.IMAGE, Manifest.Kind.INDEX}:
        return Comparison(
            before,
            after,
            _compare_indexes(repository, before, after),
            note="One side is a multi-arch index and the other a single image: the image is compared "
            "with the index's entry for the same platform.",
        )
    return Comparison(
        before,
        after,
        [],
        note=f"Only images and multi-arch indexes can be compared ({before.get_kind_display()} with "
        f"{after.get_kind_display()}).",
    )


def _platform_entries(manifest: Manifest) -> dict[str, str]:
    """platform -> digest: an index's children, or the image itself."""
    if manifest.kind == Manifest.Kind.INDEX:
        return {child.get("platform") or child["digest"]: child["digest"] for child in manifest.children}
    return {manifest.platform or "image": manifest.digest}


def _compare_indexes(repository: Repository, before: Manifest, after: Manifest) -> list[ImageDiff]:
    entries_before, entries_after = _platform_entries(before), _platform_entries(after)
    digests = set(entries_before.values()) | set(entries_after.values())
    cached = {
        manifest.digest: manifest
        for manifest in Manifest.objects.filter(repository=repository, digest__in=digests).only(*MANIFEST_COLUMNS)
    }
    diffs = []
    for platform in sorted(entries_before.keys() | entries_after.keys()):
        old, new = entries_before.get(platform), entries_after.get(platform)
        if old is None or new is None:
            side = "the newer" if old is None else "the older"
            diffs.append(ImageDiff(platform, cached.get(old), cached.get(new), problem=f"Only in {side} version."))
        elif old not in cached or new not in cached:
            diffs.append(
                ImageDiff(
                    platform,
                    cached.get(old),
                    cached.get(new),
                    problem="This platform's image is not in the cache yet; refresh the repository.",
                )
            )
        else:
            diffs.append(compare_images(platform, cached[old], cached[new]))
    return diffs


@dataclass
class _Image:
    config: ImageConfig
    layers: list[tuple[str, int, str]]  # digest, size, created_by


def _read_image(manifest: Manifest) -> _Image:
    parsed = parse_manifest(bytes(manifest.raw), manifest.media_type)
    if not isinstance(parsed, ImageManifest) or not manifest.raw_config:
        raise InvalidResponse(f"{manifest.digest} has no cached image config")
    config = parse_image_config(bytes(manifest.raw_config))
    steps = align_history(parsed.layers, config.history)
    layers = [
        (step.layer.digest, step.layer.size, (step.history.created_by if step.history else None) or "")
        for step in steps
        if step.layer is not None
    ]
    return _Image(config, layers)


def compare_images(platform: str, before: Manifest, after: Manifest) -> ImageDiff:
    diff = ImageDiff(platform or "image", before, after)
    try:
        old, new = _read_image(before), _read_image(after)
    except InvalidResponse as error:
        diff.problem = f"Cannot compare: {error}."
        return diff
    diff.changes = config_changes(old.config, new.config)
    diff.layers = layer_changes(old.layers, new.layers)
    return diff


def _text(value: object) -> str | None:
    if value is None or value == () or value == "":
        return None
    if isinstance(value, tuple):
        return " ".join(value)
    if isinstance(value, datetime):
        return value.isoformat()
    return str(value)


def _keyed_changes(setting: str, before: dict[str, str], after: dict[str, str]) -> list[Change]:
    return [
        Change(setting, key, before.get(key), after.get(key))
        for key in sorted(before.keys() | after.keys())
        if before.get(key) != after.get(key)
    ]


def _env(config: ImageConfig) -> dict[str, str]:
    return dict(entry.partition("=")[::2] for entry in config.env)


def config_changes(before: ImageConfig, after: ImageConfig) -> list[Change]:
    changes = _keyed_changes("env", _env(before), _env(after))
    changes += _keyed_changes("label", dict(before.labels), dict(after.labels))
    for setting, attribute in (
        ("entrypoint", "entrypoint"),
        ("cmd", "cmd"),
        ("user", "user"),
        ("workdir", "working_dir"),
        ("created", "created"),
    ):
        old, new = _text(getattr(before, attribute)), _text(getattr(after, attribute))
        if old != new:
            changes.append(Change(setting, "", old, new))
    ports_before, ports_after = set(before.exposed_ports), set(after.exposed_ports)
    changes += [Change("exposed port", port, port, None) for port in sorted(ports_before - ports_after)]
    changes += [Change("exposed port", port, None, port) for port in sorted(ports_after - ports_before)]
    return changes


def layer_changes(before: list[tuple[str, int, str]], after: list[tuple[str, int, str]]) -> list[LayerRow]:
    """The newer image's layers in order (shared or added), then the older one's that are gone."""
    old_digests = {digest for digest, _, _ in before}
    new_digests = {digest for digest, _, _ in after}
    rows = [
        LayerRow(digest, size, created_by, "shared" if digest in old_digests else "added")
        for digest, size, created_by in after
    ]
    rows += [
        LayerRow(digest, size, created_by, "removed")
        for digest, size, created_by in before
        if digest not in new_digests
    ]
    return rows
