"""Retention policies: which tags they would delete, why the others stay, and deleting them.

`plan` is the one planning function: the dry run shows its result, and `apply` executes a
result of it, so both see the same set for the same cache. Rules, in order:

1. A version that is pinned stays, with every tag on it.
2. A policy covers the repositories its pattern matches and, in them, the tags its include
   regex matches in full (all tags when empty) and its exclude regex does not.
3. A covering policy would delete a tag when the tag exceeds every limit the policy sets:
   older than `older_than_days`, beyond the newest `keep_newest` covered tags (by created
   date), and not pulled within `keep_pulled_within_days` (when pulls are known). A tag without
   a created date, or a policy without an age or count limit, deletes nothing.
4. The most protective policy wins: a tag goes only when a policy being run would delete it
   and no enabled policy covering it would keep it.

A version whose every tag goes is deleted by digest (with its orphaned platform images), so
garbage collection can free its layers; a version that keeps a tag only loses the others. When
every policy deleting a version's tags says so (`delete_attachments`), the signatures,
attestations, SBOMs and referrers attached to that version alone go with it, their tags with
them, however the policies would judge those tags on their own; a pinned one stays. A tag
deleted alone leaves them: they belong to the version, which stays.
"""

from __future__ import annotations

import hashlib
import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from contextlib import ExitStack
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

from django.db.models import Q, QuerySet
from django.http import HttpRequest
from django.utils import timezone

from dashboard import storage
from dashboard.access import AnyUser, is_admin, role_on, visible_repositories
from dashboard.actions import NEVER, ActionRefused
from dashboard.attachments import OwnArtifact, attached_only_to
from dashboard.deletion import (
    LiveTags,
    Outcome,
    delete_version,
    index_children,
    outcome_of,
    pin_summary,
    try_delete_tag,
)
from dashboard.models import (
    AuditEntry,
    Manifest,
    Pin,
    Registry,
    Repository,
    RetentionPolicy,
    Role,
    Tag,
    glob_matches,
)
from dashboard.registries import client_for
from dashboard.registry import RegistryClient

RETENTION_DELETE_TAG = "retention_delete_tag"
RETENTION_DELETE_VERSION = "retention_delete_version"
# ko, jib and other reproducible builds stamp images with the epoch (or Go's zero time): such a
# date says nothing about age, so it counts as unknown.
MEANINGLESS_BEFORE = datetime(1970, 1, 2, tzinfo=UTC)


@dataclass(frozen=True)
class Decision:
    tag: str
    digest: str
    created: datetime | None
    size: int
    reason: str


@dataclass
class RepositoryPlan:
    repository: Repository
    delete: list[Decision] = field(default_factory=list)
    keep: list[Decision] = field(default_factory=list)
    # digest -> its tags, for the versions that lose every tag and so are deleted by digest.
    versions: dict[str, list[str]] = field(default_factory=dict)
    # index digest -> the platform images deleted with it.
    children: dict[str, list[str]] = field(default_factory=dict)
    # version digest -> what is attached to it alone and deleted with it (delete_attachments).
    attachments: dict[str, list[OwnArtifact]] = field(default_factory=dict)
    # version digest -> bytes garbage collection frees once it is deleted.
    freed: dict[str, int] = field(default_factory=dict)
    reclaimable_bytes: int = 0

    def kept_by_reason(self) -> list[tuple[str, list[Decision]]]:
        groups: dict[str, list[Decision]] = defaultdict(list)
        for decision in self.keep:
            groups[decision.reason].append(decision)
        return sorted(groups.items(), key=lambda item: (-len(item[1]), item[0]))

    @property
    def tag_deletes(self) -> list[Decision]:
        """Deletions of tags whose version keeps another tag."""
        return [decision for decision in self.delete if decision.digest not in self.versions]


@dataclass
class Plan:
    policies: list[RetentionPolicy]
    repositories: list[RepositoryPlan]
    reclaimable_bytes: int = 0

    @property
    def delete_count(self) -> int:
        return sum(len(repository.delete) for repository in self.repositories)

    @property
    def with_deletions(self) -> list[RepositoryPlan]:
        return [repository for repository in self.repositories if repository.delete]

    def fingerprint(self) -> str:
        """Identifies what applying the plan does, so an apply can refuse when the plan changed
        since the preview the user approved: each tag, its digest, and whether the tag goes
        alone or its whole version goes by digest; the platform images deleted with an index;
        and the attached artifacts deleted with a version, with their tags. (A tag leaving a
        shared digest turns "delete this tag" into "delete the version".)"""
        lines = sorted(
            f"{repository.repository.name}\0{decision.tag}\0{decision.digest}\0"
            + ("version" if decision.digest in repository.versions else "tag")
            for repository in self.repositories
            for decision in repository.delete
        )
        lines += sorted(
            f"{repository.repository.name}\0{index}\0{child}"
            for repository in self.repositories
            for index, children in repository.children.items()
            for child in children
        )
        lines += sorted(
            f"{repository.repository.name}\0{version}\0{artifact.digest}\0{','.join(artifact.tags)}"
            for repository in self.repositories
            for version, artifacts in repository.attachments.items()
            for artifact in artifacts
        )
        return hashlib.sha256("\n".join(lines).encode()).hexdigest()


# Planning -----------------------------------------------------------------------------------


def covers(policy: RetentionPolicy, tag: str) -> bool:
    if policy.tag_include and re.fullmatch(policy.tag_include, tag) is None:
        return False
    return not (policy.tag_exclude and re.fullmatch(policy.tag_exclude, tag) is not None)


def has_limit(policy: RetentionPolicy) -> bool:
    return policy.keep_newest is not None or policy.older_than_days is not None


def known_created(tag: Tag) -> datetime | None:
    """The tag's created date; None when missing or a reproducible build's placeholder."""
    return tag.created if tag.created is not None and tag.created >= MEANINGLESS_BEFORE else None


def _verdicts(policy: RetentionPolicy, tags: Sequence[Tag], now: datetime) -> dict[str, tuple[bool, str]]:
    """tag name -> (delete?, why) for the tags the policy covers."""
    covered = sorted((tag for tag in tags if covers(policy, tag.name)), key=lambda tag: tag.name)
    covered.sort(key=lambda tag: known_created(tag) or NEVER, reverse=True)
    verdicts = {}
    for rank, tag in enumerate(covered):
        created = known_created(tag)
        if not has_limit(policy):
            verdict = (False, "sets no age or count limit")
        elif created is None:
            verdict = (False, "created date unknown")
        elif policy.keep_newest is not None and rank < policy.keep_newest:
            verdict = (False, f"among the newest {policy.keep_newest}")
        elif policy.older_than_days is not None and created > now - timedelta(days=policy.older_than_days):
            verdict = (False, f"younger than {policy.older_than_days} days")
        elif (
            policy.keep_pulled_within_days is not None
            and tag.last_pulled_at is not None
            and tag.last_pulled_at > now - timedelta(days=policy.keep_pulled_within_days)
        ):
            verdict = (False, f"pulled within {policy.keep_pulled_within_days} days")
        else:
            limits = []
            if policy.older_than_days is not None:
                limits.append(f"older than {policy.older_than_days} days")
            if policy.keep_newest is not None:
                limits.append(f"beyond the newest {policy.keep_newest}")
            verdict = (True, " and ".join(limits))
        verdicts[tag.name] = (verdict[0], f"{policy.name}: {verdict[1]}")
    return verdicts


def _plan_repository(
    repository: Repository,
    tags: Sequence[Tag],
    run: Sequence[RetentionPolicy],
    guardians: Sequence[RetentionPolicy],
    pins: dict[str, Pin],
    now: datetime,
) -> RepositoryPlan:
    """Which of one repository's tags go and why the others stay (no queries)."""
    plan = RepositoryPlan(repository)
    verdicts = {policy.pk: _verdicts(policy, tags, now) for policy in guardians}
    run_ids = {policy.pk for policy in run}
    deleted_by: dict[str, list[RetentionPolicy]] = defaultdict(list)
    for tag in sorted(tags, key=lambda tag: tag.name):
        digest = tag.manifest.digest
        decided = [verdicts[policy.pk][tag.name] for policy in guardians if tag.name in verdicts[policy.pk]]
        keeps = [reason for delete, reason in decided if not delete]
        deleters = [
            policy
            for policy in guardians
            if policy.pk in run_ids and verdicts[policy.pk].get(tag.name, (False, ""))[0]
        ]
        deletes = [verdicts[policy.pk][tag.name][1] for policy in deleters]
        if digest in pins:
            reason, goes = pin_summary(pins[digest]), False
        elif keeps:
            reason, goes = "; ".join(keeps), False
        elif deletes:
            reason, goes = "; ".join(deletes), True
        elif decided:
            reason, goes = "only a policy not being run would delete it", False
        else:
            reason, goes = "no policy covers this tag", False
        decision = Decision(tag.name, digest, tag.created, tag.manifest.size, reason)
        (plan.delete if goes else plan.keep).append(decision)
        if goes:
            deleted_by[digest].extend(deleters)
    going = defaultdict(list)
    for decision in plan.delete:
        going[decision.digest].append(decision.tag)
    staying = {decision.digest for decision in plan.keep}
    plan.versions = {digest: names for digest, names in going.items() if digest not in staying}
    for index, children in index_children(repository, plan.versions).items():
        orphans = [child.digest for child in children if child.orphaned]
        if orphans:
            plan.children[index] = orphans
    _plan_attachments(plan, [d for d in plan.versions if all(p.delete_attachments for p in deleted_by[d])])
    return plan


def _plan_attachments(plan: RepositoryPlan, versions: list[str]) -> None:
    """What is attached to each of `versions` alone goes with it. One that goes as a version of
    its own stays there; the tags on those that go leave the lists of tags kept and deleted."""
    if not versions:
        return
    for version, artifacts in attached_only_to(plan.repository, versions).items():
        going = [artifact for artifact in artifacts if artifact.digest not in plan.versions]
        if going:
            plan.attachments[version] = going
    attached = {artifact.digest for artifacts in plan.attachments.values() for artifact in artifacts}
    plan.keep = [decision for decision in plan.keep if decision.digest not in attached]
    plan.delete = [decision for decision in plan.delete if decision.digest not in attached]


def describe(policy: RetentionPolicy) -> str:
    """One line saying what the policy does, for lists and the audit log."""
    parts = [f"repositories {policy.repository_pattern}"]
    if policy.tag_include:
        parts.append(f"tags matching {policy.tag_include}")
    if policy.tag_exclude:
        parts.append(f"except tags matching {policy.tag_exclude}")
    if policy.keep_newest is not None:
        parts.append(f"keep the newest {policy.keep_newest}")
    if policy.older_than_days is not None:
        parts.append(f"delete when older than {policy.older_than_days} days")
    if policy.keep_pulled_within_days is not None:
        parts.append(f"keep if pulled within {policy.keep_pulled_within_days} days")
    if policy.delete_attachments:
        parts.append("delete what is attached to a deleted version")
    if not policy.enabled:
        parts.append("disabled")
    return ", ".join(parts)


def deletable_repositories(user, registry: Registry) -> QuerySet[Repository]:
    """Repositories where `user` may delete: a dry run or apply from the UI covers only these."""
    visible = visible_repositories(user, registry)
    rows = list(visible.values_list("pk", "name"))
    allowed = [pk for pk, name in rows if (role_on(user, name) or 0) >= Role.MAINTAINER]
    return visible if len(allowed) == len(rows) else visible.filter(pk__in=allowed)


def policies_visible_to(user, registry: Registry) -> QuerySet[RetentionPolicy]:
    """Admins see every policy; others the policies whose pattern matches a repository they may
    see in the cache. A pattern names repositories (`team-b/payroll-*`), so one matching only
    hidden ones would tell of them; one matching none of theirs could not touch their
    repositories anyway."""
    policies = RetentionPolicy.objects.order_by("name")
    if is_admin(user):
        return policies
    visible = visible_repositories(user, registry)
    shown = [policy.pk for policy in policies if visible.filter(name__glob=policy.repository_pattern).exists()]
    return policies.filter(pk__in=shown)


def policies_to_run(
    policy: RetentionPolicy | None = None, among: QuerySet[RetentionPolicy] | None = None
) -> list[RetentionPolicy]:
    """The named policy (even when disabled: naming it is asking for it), else every enabled one
    (of `among`, when given)."""
    if policy is not None:
        return [policy]
    among = RetentionPolicy.objects.all() if among is None else among
    return list(among.filter(enabled=True).order_by("name"))


def plan(
    registry: Registry,
    repositories: QuerySet[Repository],
    policy: RetentionPolicy | None = None,
    now: datetime | None = None,
    among: QuerySet[RetentionPolicy] | None = None,
) -> Plan:
    """What running `policy` (or every enabled policy, of `among` when given) on `repositories`
    would delete, from the cache; nothing is changed and the registry is not asked."""
    now = now or timezone.now()
    run = policies_to_run(policy, among)
    guardians = {p.pk: p for p in RetentionPolicy.objects.filter(enabled=True)} | {p.pk: p for p in run}
    result = Plan(run, [])
    if not run:
        return result
    matching = Q()
    for each in run:
        matching |= Q(name__glob=each.repository_pattern)
    in_scope = list(repositories.filter(registry=registry).filter(matching).select_related("registry").order_by("name"))
    tags_of: dict[int, list[Tag]] = defaultdict(list)
    tags = (
        Tag.objects.filter(repository__in=in_scope)
        .select_related("manifest")
        .only("repository_id", "name", "created", "last_pulled_at", "manifest__digest", "manifest__size")
    )
    for tag in tags:
        tags_of[tag.repository_id].append(tag)
    pins_of: dict[int, dict[str, Pin]] = defaultdict(dict)
    for pin in Pin.objects.filter(repository__in=in_scope).select_related("created_by"):
        pins_of[pin.repository_id][pin.digest] = pin
    for repository in in_scope:
        applying = [p for p in guardians.values() if glob_matches(p.repository_pattern, repository.name)]
        result.repositories.append(
            _plan_repository(
                repository,
                tags_of[repository.pk],
                [p for p in run if p in applying],
                sorted(applying, key=lambda p: p.name),
                pins_of[repository.pk],
                now,
            )
        )
    _estimate(registry, result)
    return result


def _estimate(registry: Registry, result: Plan) -> None:
    """Fill in the bytes garbage collection would free after the plan, per deleted version:
    blobs of the version, its platform images and its attachments that no remaining manifest in
    the registry uses (see storage.freed_blobs). A blob two deleted versions share counts once,
    for the first."""
    removed_keys = {
        (repository.repository.pk, digest)
        for repository in result.repositories
        for version in repository.versions
        for digest in _removed_with(repository, version)
    }
    if not removed_keys:
        return
    ids = {
        (repository_id, digest): manifest_id
        for manifest_id, repository_id, digest in Manifest.objects.filter(
            repository_id__in={pk for pk, _ in removed_keys}, digest__in={digest for _, digest in removed_keys}
        ).values_list("id", "repository_id", "digest")
        if (repository_id, digest) in removed_keys
    }
    freed_by = storage.freed_blobs(registry, ids.values())
    counted: set[str] = set()
    for repository in result.repositories:
        pk = repository.repository.pk
        for digest in repository.versions:
            keys = [(pk, removed) for removed in _removed_with(repository, digest)]
            freed = {blob: size for key in keys if key in ids for blob, size in freed_by.get(ids[key], {}).items()}
            repository.freed[digest] = sum(size for blob, size in freed.items() if blob not in counted)
            counted |= freed.keys()
        repository.reclaimable_bytes = sum(repository.freed.values())
    result.reclaimable_bytes = sum(repository.reclaimable_bytes for repository in result.repositories)


def _removed_with(repository: RepositoryPlan, version: str) -> list[str]:
    """The manifests deleting `version` deletes: it, its platform images, its attachments."""
    attached = [artifact.digest for artifact in repository.attachments.get(version, [])]
    return [version, *repository.children.get(version, []), *attached]


# Applying -----------------------------------------------------------------------------------


def apply(
    request: HttpRequest | None, user: AnyUser | None, result: Plan, client: RegistryClient | None = None
) -> dict[str, list[Outcome]]:
    """Delete what `result` plans, repository by repository: each deletion checks the digest
    guard against the cached digest the plan was computed from, and is audited on its own.
    Returns repository name -> one outcome per planned tag (and per platform image and
    attached artifact)."""
    outcomes: dict[str, list[Outcome]] = {}
    policies = ", ".join(policy.name for policy in result.policies)
    note = f"retention policy {policies}"
    with ExitStack() as owned:
        for repository_plan in result.with_deletions:
            repository = repository_plan.repository
            if client is None:
                client = owned.enter_context(client_for(repository.registry))
            # Read once the first version delete needs it: every version delete of the run checks
            # the registry's other tags against this one scan.
            live = LiveTags(client, repository.name)
            done = outcomes[repository.name] = []
            done.extend(
                try_delete_tag(
                    request,
                    user,
                    repository,
                    decision.tag,
                    decision.digest,
                    client=client,
                    action=RETENTION_DELETE_TAG,
                    note=note,
                )
                for decision in repository_plan.tag_deletes
            )
            for digest, tags in repository_plan.versions.items():
                children = repository_plan.children.get(digest, [])
                attached = [artifact.digest for artifact in repository_plan.attachments.get(digest, [])]
                try:
                    deleted = delete_version(
                        request,
                        user,
                        repository,
                        digest,
                        tags,
                        children=children,
                        attachments=attached,
                        client=client,
                        live=live,
                        action=RETENTION_DELETE_VERSION,
                        note=note,
                        freed_bytes=repository_plan.freed.get(digest),
                    )
                except ActionRefused as refused:
                    done.extend(outcome_of(refused, tag, digest) for tag in tags)
                    continue
                done.extend(Outcome(tag, digest, AuditEntry.Outcome.OK, "deleted with its version") for tag in tags)
                done.extend(
                    Outcome("", child, AuditEntry.Outcome.OK, f"platform image of {digest}", "platform image")
                    for child in deleted.children
                )
                done.extend(
                    Outcome("", artifact, AuditEntry.Outcome.OK, f"attached to {digest}", "attached artifact")
                    if artifact in deleted.attachments
                    else Outcome(
                        "",
                        artifact,
                        AuditEntry.Outcome.REFUSED,
                        f"attached to {digest}; kept, something else uses it now (see the audit log)",
                        "attached artifact",
                    )
                    for artifact in attached
                )
    return outcomes


def summary(outcomes: dict[str, Iterable[Outcome]]) -> dict[str, int]:
    """outcome -> how many tags (platform images not counted)."""
    counts = {choice: 0 for choice in AuditEntry.Outcome.values}
    for each in outcomes.values():
        for outcome in each:
            if outcome.tag:
                counts[outcome.outcome] += 1
    return counts
