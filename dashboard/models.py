"""The cache of a registry's content, and what the dashboard adds to it (pins, rules, audit)."""

from __future__ import annotations

import fnmatch
import hashlib
import hmac
import re
import secrets
from datetime import timedelta

from django.conf import settings
from django.contrib.auth.models import Group
from django.core.exceptions import ValidationError
from django.db import models
from django.db.models import lookups
from django.utils import timezone

from dashboard.versions import VERSION_KEY_MAX_LENGTH, version_sort_key


class Registry(models.Model):
    """A Distribution registry; the configured one is created from the environment."""

    name = models.CharField(max_length=100, unique=True)
    url = models.URLField(max_length=500, unique=True)
    public_host = models.CharField(
        max_length=255, blank=True, help_text="Host used in pull lines, e.g. registry.example.com:5000."
    )
    # Last ping, kept so pages can describe the registry without calling it.
    reachable = models.BooleanField(null=True)
    api_version = models.CharField(max_length=50, blank=True)
    delete_enabled = models.BooleanField(null=True)
    tag_delete_supported = models.BooleanField(null=True)
    last_checked_at = models.DateTimeField(null=True, blank=True)
    last_error = models.TextField(blank=True)
    unreachable_since = models.DateTimeField(null=True, blank=True)
    last_successful_sync_at = models.DateTimeField(null=True, blank=True)

    class Meta:
        verbose_name_plural = "registries"

    def __str__(self) -> str:
        return self.name


class ListedRepositoryManager(models.Manager):
    """Repositories the registry's catalog lists: the default manager, so every page, search,
    count and API (and the reverse `registry.repositories`) leaves removed ones out."""

    def get_queryset(self) -> models.QuerySet:
        return super().get_queryset().filter(removed_at__isnull=True)


class Repository(models.Model):
    """A repository of the registry. One that leaves the catalog is marked `removed_at`, not
    deleted: its pins and tag history stay, and the row comes back when the name does."""

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="repositories")
    name = models.CharField(max_length=255)
    namespace = models.CharField(max_length=255, blank=True, db_index=True)
    tag_count = models.PositiveIntegerField(default=0)
    total_size = models.BigIntegerField(default=0, help_text="Bytes of the distinct blobs its tags reference.")
    last_pushed_at = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    # Sync state: a failed sync records its error here and leaves every other row as it was.
    last_synced_at = models.DateTimeField(null=True, blank=True)
    last_sync_error = models.TextField(blank=True)
    last_sync_error_at = models.DateTimeField(null=True, blank=True)
    removed_at = models.DateTimeField(
        null=True, blank=True, help_text="When the repository left the registry's catalog; hidden since."
    )

    objects = ListedRepositoryManager()
    # Removed ones too: for the sync (which restores them) and the admin's list of removed ones.
    with_removed = models.Manager()

    class Meta:
        verbose_name_plural = "repositories"
        constraints = [models.UniqueConstraint(fields=["registry", "name"], name="unique_repository_name")]
        indexes = [
            models.Index(fields=["registry", "last_pushed_at"]),
            models.Index(fields=["registry", "total_size"]),
            models.Index(fields=["registry", "tag_count"]),
        ]

    def __str__(self) -> str:
        return self.name

    def save(self, *args, **kwargs) -> None:
        self.namespace = namespace_of(self.name)
        super().save(*args, **kwargs)

    @property
    def is_empty(self) -> bool:
        return self.tag_count == 0


class RemovedRepository(Repository):
    """The admin's list of repositories that left the catalog (`Repository.removed_at`)."""

    class Meta:
        proxy = True
        verbose_name = "removed repository"
        verbose_name_plural = "removed repositories"

    @classmethod
    def with_kept_rows(cls) -> models.QuerySet:
        """Removed repositories, last removed first, with how many pins and history rows each keeps."""
        return (
            cls.with_removed.filter(removed_at__isnull=False)
            .select_related("registry")
            .annotate(pin_count=models.Count("pins", distinct=True), history_count=models.Count("tag_history", distinct=True))
            .order_by("-removed_at")
        )


def namespace_of(repository_name: str) -> str:
    """`team-a/svc/api` -> `team-a/svc`; a flat name has no namespace."""
    return repository_name.rpartition("/")[0]


class Manifest(models.Model):
    """One digest in one repository; its parsed content never changes (content addressed).

    A row no tag references is kept while it is pinned or one of a tag's recent previous
    digests (`sync.ROLLBACK_DEPTH`): untagged, yet stored by the registry until deleted by
    digest, so a tag can be pointed back at it. `missing_since` marks a kept row whose digest
    the registry lost.
    """

    class Kind(models.TextChoices):
        IMAGE = "image", "image"
        INDEX = "index", "multi-arch index"
        ARTIFACT = "artifact", "artifact"
        SCHEMA1 = "schema1", "legacy schema1"
        UNKNOWN = "unknown", "unknown"

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="manifests")
    digest = models.CharField(max_length=100)
    media_type = models.CharField(max_length=255)
    kind = models.CharField(max_length=10, choices=Kind.choices)
    artifact_type = models.CharField(max_length=255, blank=True)
    size = models.BigIntegerField(default=0, help_text="Manifest, config and layers, compressed.")
    created = models.DateTimeField(null=True, blank=True)
    platform = models.CharField(max_length=100, blank=True, help_text="os/arch[/variant]")
    # An index's manifests: [{"digest", "media_type", "size", "platform"}]; empty for an image.
    children = models.JSONField(default=list, blank=True)
    # An image's build steps in order: [{"digest", "media_type", "size", "created_by", "empty": false}],
    # or [{"created_by", "empty": true}] for a step that made no layer.
    layers = models.JSONField(default=list, blank=True)
    config_digest = models.CharField(max_length=100, blank=True)
    config_size = models.BigIntegerField(default=0, help_text="Bytes of the config blob, from the manifest.")
    config = models.JSONField(default=dict, blank=True, help_text="Parsed config summary.")
    raw = models.BinaryField(help_text="Exact manifest bytes: re-PUT them to restore a tag byte for byte.")
    raw_config = models.BinaryField(null=True, blank=True)
    subject_digest = models.CharField(max_length=100, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    missing_since = models.DateTimeField(
        null=True, blank=True, help_text="Set when the registry no longer has this digest."
    )
    fetch_error = models.TextField(blank=True)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "digest"], name="unique_manifest_digest")]
        indexes = [
            models.Index(fields=["repository", "created"]),
            # Few rows, read by the storage figures' state query on every /storage/ request,
            # which would otherwise scan the manifests and their raw bytes.
            models.Index(
                fields=["missing_since"], condition=models.Q(missing_since__isnull=False), name="missing_manifests"
            ),
        ]

    def __str__(self) -> str:
        return f"{self.repository.name}@{self.digest}"


class ManifestBlob(models.Model):
    """One blob a cached manifest needs the registry to store: the manifest's own bytes, its
    config, a layer, or (for an index) a platform manifest. Storage figures are SQL aggregates
    over these rows, counting each blob digest once; `dashboard.storage` has them."""

    class Kind(models.TextChoices):
        MANIFEST = "manifest", "manifest"
        CONFIG = "config", "config"
        LAYER = "layer", "layer"
        CHILD = "child", "platform manifest"

    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="blobs")
    digest = models.CharField(max_length=100, db_index=True)
    size = models.BigIntegerField()
    kind = models.CharField(max_length=10, choices=Kind.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["manifest", "digest"], name="unique_manifest_blob")]

    def __str__(self) -> str:
        return f"{self.kind} {self.digest}"


class Tag(models.Model):
    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="tags")
    name = models.CharField(max_length=128)
    manifest = models.ForeignKey(Manifest, on_delete=models.PROTECT, related_name="tags")
    # Copied from the manifest so a repository page sorts 10,000 tags on an index, without a join.
    created = models.DateTimeField(null=True, blank=True)
    first_seen_at = models.DateTimeField(default=timezone.now)
    last_seen_at = models.DateTimeField(default=timezone.now)
    pointed_at = models.DateTimeField(default=timezone.now, help_text="When it last moved to its digest.")
    last_pulled_at = models.DateTimeField(null=True, blank=True)
    # version_sort_key(name), so sorting by version is an index scan; bulk_create must fill it too.
    version_key = models.CharField(max_length=VERSION_KEY_MAX_LENGTH, default="", editable=False)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "name"], name="unique_tag_name")]
        indexes = [
            models.Index(fields=["repository", "created"]),
            models.Index(fields=["repository", "version_key"]),
        ]

    def __str__(self) -> str:
        return f"{self.repository.name}:{self.name}"

    def save(self, *args, **kwargs) -> None:
        self.version_key = version_sort_key(self.name)
        super().save(*args, **kwargs)


class TagHistory(models.Model):
    """Where a tag pointed and when (Quay-style); an open period has no `until`."""

    class Source(models.TextChoices):
        SYNC = "sync", "seen by sync"
        NOTIFICATION = "notification", "registry notification"
        USER = "user", "user action"

    # PROTECT: history is never deleted as a side effect (a repository leaving the catalog is
    # marked removed, see Repository).
    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="tag_history")
    tag = models.CharField(max_length=128)
    digest = models.CharField(max_length=100)
    since = models.DateTimeField(default=timezone.now)
    until = models.DateTimeField(null=True, blank=True)
    started_by = models.CharField(max_length=20, choices=Source.choices)
    ended_by = models.CharField(max_length=20, choices=Source.choices, blank=True)
    # Who started the period (a restore) and who ended it (a restore elsewhere, or a delete):
    # two people, so a later delete never overwrites the name of the restorer.
    user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        help_text="The user whose action started the period.",
    )
    ended_by_user = models.ForeignKey(
        settings.AUTH_USER_MODEL,
        null=True,
        blank=True,
        on_delete=models.SET_NULL,
        related_name="+",
        help_text="The user whose action ended the period.",
    )

    class Meta:
        verbose_name_plural = "tag history"
        indexes = [
            models.Index(fields=["repository", "tag", "since"]),
            # Ended periods are few next to open ones (one per tag): rollback.deployment_tags
            # groups them on every repository page.
            models.Index(fields=["repository", "tag"], condition=models.Q(until__isnull=False), name="ended_periods"),
        ]
        constraints = [
            # At most one open period per tag: two concurrent syncs cannot both open one.
            models.UniqueConstraint(
                fields=["repository", "tag"], condition=models.Q(until__isnull=True), name="one_open_period_per_tag"
            )
        ]

    def __str__(self) -> str:
        return f"{self.tag} -> {self.digest}"


class NotificationEvent(models.Model):
    """Ids of registry events already handled, so a redelivery changes nothing."""

    event_id = models.CharField(max_length=100, unique=True)
    action = models.CharField(max_length=20)
    repository = models.CharField(max_length=255, blank=True)
    received_at = models.DateTimeField(default=timezone.now)


class OwnPush(models.Model):
    """A manifest the dashboard pushed (a restore, a tag delete's tombstone), recorded before
    the PUT: the registry's push event for it is recognised by these columns, not by a
    User-Agent any client can send (`notifications.is_own_push`)."""

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="+")
    repository = models.CharField(max_length=255)
    tag = models.CharField(max_length=128)
    digest = models.CharField(max_length=100)
    pushed_at = models.DateTimeField(default=timezone.now, db_index=True)

    class Meta:
        indexes = [models.Index(fields=["registry", "repository", "tag", "digest"])]


class TaskProgress(models.Model):
    """How far a background task got; the task queue itself only knows its state."""

    task_id = models.CharField(max_length=64, unique=True)
    label = models.CharField(max_length=200)
    # Blank for work on the whole registry; otherwise only users who may see it may follow it.
    repository = models.CharField(max_length=255, blank=True)
    done = models.PositiveIntegerField(default=0)
    total = models.PositiveIntegerField(null=True, blank=True)
    updated_at = models.DateTimeField(auto_now=True)

    class Meta:
        verbose_name_plural = "task progress"

    def __str__(self) -> str:
        return f"{self.label}: {self.done}/{self.total or '?'}"


class Pin(models.Model):
    """A protected version: the pin holds the digest, not the tag."""

    repository = models.ForeignKey(Repository, on_delete=models.PROTECT, related_name="pins")  # as TagHistory
    digest = models.CharField(max_length=100)
    tags_at_pin = models.JSONField(default=list, blank=True, help_text="Tags that pointed at the digest when pinned.")
    reason = models.CharField(max_length=500)
    created_by = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, on_delete=models.SET_NULL)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["repository", "digest"], name="unique_pin")]

    def __str__(self) -> str:
        return f"{self.repository.name}@{self.digest}"


# Longer than any CI credential should live, and far from datetime's year-9999 end.
MAX_TOKEN_DAYS = 3650


class ApiToken(models.Model):
    """A personal token for the JSON API. Only its hash is kept: the token is shown once.

    Tokens read `rb_<prefix>_<secret>`; the prefix finds the row, the hash of the whole token
    proves it. The secret is 256 random bits, so a fast hash is enough (nothing to brute-force).
    An expired token is refused like an unknown one; a read-only one reads with its user's
    roles and may not change anything.
    """

    user = models.ForeignKey(settings.AUTH_USER_MODEL, on_delete=models.CASCADE, related_name="api_tokens")
    name = models.CharField(max_length=100, help_text="What uses it, e.g. the deploy pipeline.")
    prefix = models.CharField(max_length=16, unique=True, editable=False)
    token_hash = models.CharField(max_length=64, editable=False)
    created_at = models.DateTimeField(default=timezone.now)
    last_used_at = models.DateTimeField(null=True, blank=True)
    expires_at = models.DateTimeField(null=True, blank=True, help_text="Refused from then on; empty: never expires.")
    read_only = models.BooleanField(
        default=False, help_text="Reads with its user's roles; pins, unpins, restores and deletes are refused."
    )

    class Meta:
        verbose_name = "API token"

    def __str__(self) -> str:
        return f"{self.name} (rb_{self.prefix}_…)"

    def new_secret(self) -> str:
        """Give this (unsaved) token a fresh secret; return the token to show once."""
        self.prefix = secrets.token_hex(4)
        token = f"rb_{self.prefix}_{secrets.token_urlsafe(32)}"
        self.token_hash = _token_hash(token)
        return token

    @property
    def expired(self) -> bool:
        return self.expires_at is not None and self.expires_at <= timezone.now()

    @property
    def terms(self) -> str:
        """What the token may do and until when, for the audit log and the command's output."""
        until = f"expires {self.expires_at:%Y-%m-%d %H:%M %Z}" if self.expires_at else "never expires"
        return f"{'read-only' if self.read_only else 'read-write'}, {until}"

    @classmethod
    def issue(
        cls, user, name: str, *, read_only: bool = False, expires_in_days: int | None = None
    ) -> tuple[ApiToken, str]:
        expires_at = timezone.now() + timedelta(days=expires_in_days) if expires_in_days is not None else None
        api_token = cls(user=user, name=name, read_only=read_only, expires_at=expires_at)
        token = api_token.new_secret()
        api_token.save()
        return api_token, token

    @classmethod
    def find(cls, token: str) -> ApiToken | None:
        """The active user's unexpired token matching `token` exactly, else None."""
        scheme, _, rest = token.partition("_")
        prefix, _, secret = rest.partition("_")
        if scheme != "rb" or not prefix or not secret:
            return None
        api_token = cls.objects.select_related("user").filter(prefix=prefix, user__is_active=True).first()
        if api_token is None or not hmac.compare_digest(api_token.token_hash, _token_hash(token)):
            return None
        return None if api_token.expired else api_token


def _token_hash(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


class Role(models.IntegerChoices):
    """Each role includes the ones before it."""

    VIEWER = 10, "viewer"
    MAINTAINER = 20, "maintainer"
    OPERATOR = 30, "operator"
    ADMIN = 40, "admin"


# Repository-name characters (lower case, per the distribution spec) plus the two wildcards.
ACCESS_PATTERN = re.compile(r"[a-z0-9._/*?-]+")
PATTERN_CHARACTERS = "Use lower-case repository-name characters (a-z 0-9 . _ - /) and the wildcards * and ?."
# Wildcards (`*` and `?`) a pattern may hold once runs of `*` are collapsed. Real rules use one to
# three (`team-*/*-prod`); eight leave room for odd ones. Patterns come from viewers too (the audit
# filter), and what a pattern costs grows with its wildcards: PostgreSQL's regex engine builds DFA
# states for `.*` followed by single-character wildcards (`*a????????` can need 2^9 of them), and
# the cap keeps that small whatever is typed.
MAX_WILDCARDS = 8


def normalize_pattern(pattern: str) -> str:
    """A glob from untrusted input, checked against the access-rule grammar and made cheap to match.

    Returns it with runs of `*` collapsed (`a**b` matches exactly what `a*b` matches); raises
    ValidationError saying what is wrong.
    """
    if not ACCESS_PATTERN.fullmatch(pattern):
        raise ValidationError(PATTERN_CHARACTERS)
    collapsed = re.sub(r"\*{2,}", "*", pattern)
    wildcards = collapsed.count("*") + collapsed.count("?")
    if wildcards > MAX_WILDCARDS:
        raise ValidationError(f"Use at most {MAX_WILDCARDS} wildcards (* and ?); this pattern has {wildcards}.")
    return collapsed


def glob_to_regex(pattern: str) -> str:
    """A glob (`*`, `?`) as an anchored regex, for databases without SQLite's GLOB (see `Glob`).

    `*` also crosses `/`, so `team-a/*` covers `team-a/svc/api`. Everything else is literal
    (no `[...]` classes), so a rule matches the same names in Python and in the database.
    """
    parts = []
    for char in re.sub(r"\*{2,}", "*", pattern):
        if char == "*":
            parts.append(".*")
        elif char == "?":
            parts.append(".")
        elif char.isalnum():
            parts.append(char)
        else:
            parts.append("\\" + char)
    return "^" + "".join(parts) + "$"


def glob_matches(pattern: str, repository_name: str) -> bool:
    # fnmatch's translation commits to each `*`'s shortest match (atomic groups), so a pattern
    # cannot make it backtrack; the access-rule grammar has no `[`, its only other special.
    return fnmatch.fnmatchcase(repository_name, pattern)


@models.CharField.register_lookup
class Glob(models.Lookup):
    """`name__glob="team-a/*"`: repository names matching an access-rule glob, in the database.

    SQLite's own GLOB operator has the same `*` and `?` (case-sensitive, and the grammar has no
    `[`) and matches without backtracking; Django's SQLite REGEXP is Python's `re` per row, which
    backtracks without bound on a pattern like `team-a/************#`. Elsewhere (PostgreSQL) the anchored regex, which its
    engine matches as an automaton.
    """

    lookup_name = "glob"
    prepare_rhs = False

    def as_sql(self, compiler, connection):
        return compiler.compile(lookups.Regex(self.lhs, glob_to_regex(self.rhs)))

    def as_sqlite(self, compiler, connection):
        lhs, lhs_params = self.process_lhs(compiler, connection)
        return f"{lhs} GLOB %s", [*lhs_params, self.rhs]


class AccessRule(models.Model):
    group = models.ForeignKey(Group, on_delete=models.CASCADE, related_name="access_rules")
    pattern = models.CharField(max_length=255, help_text="Glob on the full repository name: team-a/*, website-*, *")
    role = models.PositiveSmallIntegerField(choices=Role.choices)

    class Meta:
        constraints = [models.UniqueConstraint(fields=["group", "pattern"], name="unique_rule")]

    def __str__(self) -> str:
        return f"{self.group.name}: {self.pattern} ({self.get_role_display()})"

    def clean(self) -> None:
        # A pattern with upper case or other characters would silently match nothing.
        try:
            self.pattern = normalize_pattern(self.pattern)
        except ValidationError as error:
            raise ValidationError({"pattern": error.messages}) from None

    def matches(self, repository_name: str) -> bool:
        return glob_matches(self.pattern, repository_name)


class RetentionPolicy(models.Model):
    name = models.CharField(max_length=100, unique=True)
    repository_pattern = models.CharField(max_length=255, default="*")
    keep_newest = models.PositiveIntegerField(null=True, blank=True, help_text="Keep the newest N tags by created date.")
    older_than_days = models.PositiveIntegerField(null=True, blank=True, help_text="Delete only tags older than D days.")
    tag_include = models.CharField(max_length=255, blank=True, help_text="Only tags matching this regex.")
    tag_exclude = models.CharField(max_length=255, blank=True, help_text="Never tags matching this regex.")
    keep_pulled_within_days = models.PositiveIntegerField(null=True, blank=True)
    delete_attachments = models.BooleanField(
        default=False,
        help_text="When a version goes, also delete the signatures, attestations, SBOMs and referrers attached to it alone.",
    )
    enabled = models.BooleanField(default=True)
    created_at = models.DateTimeField(default=timezone.now)

    class Meta:
        verbose_name_plural = "retention policies"

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        errors = {}
        try:
            self.repository_pattern = normalize_pattern(self.repository_pattern)
        except ValidationError as error:
            errors["repository_pattern"] = error.messages
        for name in ("tag_include", "tag_exclude"):
            try:
                re.compile(getattr(self, name))
            except re.error as error:
                errors[name] = f"Not a valid regular expression: {error}."
        # Without an age or count limit the policy would select every tag it covers.
        if self.keep_newest is None and self.older_than_days is None:
            errors["older_than_days"] = "Set an age (older than D days), a count (keep the newest N), or both."
        if errors:
            raise ValidationError(errors)


class DeletedVersion(models.Model):
    """A version deleted through the dashboard. The registry keeps its blobs on disk until its
    offline garbage collection runs; the cache forgets the manifest, so its size is kept here."""

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="deleted_versions")
    repository = models.CharField(max_length=255, db_index=True)
    digest = models.CharField(max_length=100)
    freed_bytes = models.BigIntegerField(
        default=0, help_text="Bytes of its blobs that no remaining cached manifest used when it was deleted."
    )
    deleted_at = models.DateTimeField(default=timezone.now, db_index=True)

    def __str__(self) -> str:
        return f"{self.repository}@{self.digest}"


class StorageSample(models.Model):
    """Bytes stored on one day by the registry, one namespace or one repository (the growth
    chart). `python manage.py storage_snapshot` takes a day's samples; 400 days are kept."""

    class Scope(models.TextChoices):
        REGISTRY = "registry", "registry"
        NAMESPACE = "namespace", "namespace"
        REPOSITORY = "repository", "repository"

    registry = models.ForeignKey(Registry, on_delete=models.CASCADE, related_name="storage_samples")
    day = models.DateField()
    scope = models.CharField(max_length=10, choices=Scope.choices)
    name = models.CharField(max_length=255, blank=True, help_text="The namespace or repository; blank for the registry.")
    bytes = models.BigIntegerField()

    class Meta:
        constraints = [
            models.UniqueConstraint(fields=["registry", "day", "scope", "name"], name="one_sample_per_day")
        ]
        indexes = [models.Index(fields=["registry", "scope", "name", "day"])]

    def __str__(self) -> str:
        return f"{self.day} {self.scope} {self.name}: {self.bytes}"


class AuditEntryQuerySet(models.QuerySet):
    """Bulk changes would bypass `AuditEntry.save` and `delete`: refuse them too."""

    def update(self, **kwargs):
        raise ValueError("Audit entries are append-only")

    def bulk_update(self, objs, fields, batch_size=None):
        raise ValueError("Audit entries are append-only")

    def delete(self):
        raise ValueError("Audit entries are append-only")


class AuditEntry(models.Model):
    """Append-only record of every action and refused attempt."""

    class Outcome(models.TextChoices):
        OK = "ok", "done"
        REFUSED = "refused", "refused"
        FAILED = "failed", "failed"

    created_at = models.DateTimeField(default=timezone.now, db_index=True)
    user = models.ForeignKey(settings.AUTH_USER_MODEL, null=True, blank=True, on_delete=models.SET_NULL)
    username = models.CharField(max_length=150, blank=True, help_text="Kept when the user is deleted.")
    action = models.CharField(max_length=40, db_index=True)
    repository = models.CharField(max_length=255, blank=True, db_index=True)
    tag = models.CharField(max_length=128, blank=True)
    digest_before = models.CharField(max_length=100, blank=True)
    digest_after = models.CharField(max_length=100, blank=True)
    outcome = models.CharField(max_length=10, choices=Outcome.choices)
    reason = models.TextField(blank=True)
    remote_addr = models.GenericIPAddressField(null=True, blank=True)

    objects = AuditEntryQuerySet.as_manager()

    class Meta:
        verbose_name_plural = "audit entries"
        ordering = ["-created_at", "-id"]

    def __str__(self) -> str:
        return f"{self.created_at:%Y-%m-%d %H:%M} {self.username} {self.action} {self.outcome}"

    def save(self, *args, **kwargs) -> None:
        if self.pk is not None:
            raise ValueError("Audit entries are append-only")
        super().save(*args, **kwargs)

    def delete(self, *args, **kwargs):
        raise ValueError("Audit entries are append-only")


# Supply chain: what CI attached to each version (dashboard/attachments.py fills these) ---------


class TrustedKey(models.Model):
    """A public key whose signatures count as verified; SIGNATURE_PUBLIC_KEYS names more."""

    name = models.CharField(max_length=100, unique=True)
    public_key = models.TextField(help_text="PEM: -----BEGIN PUBLIC KEY----- (ECDSA P-256/P-384, RSA, Ed25519).")
    created_at = models.DateTimeField(default=timezone.now)

    def __str__(self) -> str:
        return self.name

    def clean(self) -> None:
        from dashboard.supplychain.signatures import load_public_key

        try:
            load_public_key(self.public_key)
        except ValueError as error:
            raise ValidationError({"public_key": str(error)}) from error


class Attachment(models.Model):
    """One payload attached to a version: a layer of a cosign signature, attestation or SBOM
    manifest, of an OCI referrer, or of a BuildKit attestation manifest. Read once per artifact
    digest; deleted with the artifact's manifest row."""

    class Via(models.TextChoices):
        COSIGN = "cosign", "cosign tag"
        REFERRER = "referrer", "OCI referrer"
        BUILDKIT = "buildkit", "BuildKit attestation"

    manifest = models.ForeignKey(Manifest, on_delete=models.CASCADE, related_name="attachments")
    subject_digest = models.CharField(max_length=100, help_text="The version it is attached to.")
    via = models.CharField(max_length=10, choices=Via.choices)
    layer_index = models.PositiveSmallIntegerField(default=0)
    layer_digest = models.CharField(max_length=100, blank=True)
    media_type = models.CharField(max_length=255, blank=True)
    kind = models.CharField(max_length=20)  # dashboard.supplychain.documents.Kind
    format = models.CharField(max_length=100, blank=True)
    predicate_type = models.CharField(max_length=255, blank=True)
    about_subject = models.BooleanField(default=True, help_text="False when the document names other digests only.")
    # The exact bytes the signatures cover (a simple-signing payload, or a DSSE envelope's PAE),
    # kept so a key added later re-checks them without fetching again.
    signed_data = models.BinaryField(null=True, blank=True)
    signatures = models.JSONField(default=list, blank=True, help_text="Base64 signatures over signed_data.")
    # Sigstore keyless: the Fulcio certificate the signature came with, and whom it names.
    certificate = models.TextField(blank=True)
    signer = models.CharField(max_length=300, blank=True)
    signer_issuer = models.CharField(max_length=300, blank=True)
    signature_status = models.CharField(max_length=12, default="unsigned")
    signature_key = models.CharField(max_length=100, blank=True)
    signature_reason = models.CharField(max_length=500, blank=True)
    scanner = models.CharField(max_length=100, blank=True)
    scanner_version = models.CharField(max_length=100, blank=True)
    scanned_at = models.DateTimeField(null=True, blank=True)
    critical = models.PositiveIntegerField(default=0)
    high = models.PositiveIntegerField(default=0)
    medium = models.PositiveIntegerField(default=0)
    low = models.PositiveIntegerField(default=0)
    unknown = models.PositiveIntegerField(default=0)
    provenance = models.JSONField(default=dict, blank=True)
    reason = models.CharField(max_length=500, blank=True, help_text="Why it could not be read.")
    retry = models.BooleanField(default=False, help_text="The registry failed while reading it: read again.")
    fetched_at = models.DateTimeField(default=timezone.now)

    class Meta:
        constraints = [models.UniqueConstraint(
                fields=["manifest", "subject_digest", "layer_index"], name="unique_attachment_layer"
            )]
        indexes = [models.Index(fields=["subject_digest"])]

    def __str__(self) -> str:
        return f"{self.format or self.kind} for {self.subject_digest}"


class Finding(models.Model):
    """One vulnerability an attached report lists."""

    attachment = models.ForeignKey(Attachment, on_delete=models.CASCADE, related_name="findings")
    vulnerability_id = models.CharField(max_length=200)
    severity = models.CharField(max_length=10)
    package = models.CharField(max_length=255, blank=True)
    installed = models.CharField(max_length=255, blank=True)
    fixed_in = models.CharField(max_length=255, blank=True)
    title = models.CharField(max_length=500, blank=True)
    url = models.CharField(max_length=1000, blank=True, help_text="https only.")


class SbomPackage(models.Model):
    """One package an attached SBOM or report lists."""

    attachment = models.ForeignKey(Attachment, on_delete=models.CASCADE, related_name="packages")
    name = models.CharField(max_length=255, db_index=True)
    version = models.CharField(max_length=255, blank=True)
    purl = models.CharField(max_length=1000, blank=True)


class VersionSecurity(models.Model):
    """What the attachments say about one version, summed up for badges and the API: the
    signature status and the counts of the newest report about it."""

    repository = models.ForeignKey(Repository, on_delete=models.CASCADE, related_name="version_security")
    digest = models.CharField(max_length=100)
    signature_status = models.CharField(max_length=12, default="unsigned")
    signature_key = models.CharField(max_length=100, blank=True)
    report = models.ForeignKey(Attachment, null=True, blank=True, on_delete=models.SET_NULL, related_name="+")
    critical = models.PositiveIntegerField(default=0)
    high = models.PositiveIntegerField(default=0)
    medium = models.PositiveIntegerField(default=0)
    low = models.PositiveIntegerField(default=0)
    unknown = models.PositiveIntegerField(default=0)
    attachment_count = models.PositiveIntegerField(default=0)

    class Meta:
        verbose_name_plural = "version security"
        constraints = [models.UniqueConstraint(fields=["repository", "digest"], name="unique_version_security")]

    def __str__(self) -> str:
        return f"{self.repository_id}@{self.digest}: {self.signature_status}"
