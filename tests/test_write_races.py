"""Stress: another client pushes, retags and deletes (no notifications) while the dashboard
deletes versions, deletes tags and restores through its views, against the real registry.

The dashboard and the other client both reach the registry through a fault proxy that lets
one request through at a time, so the proxy's log is the order in which the registry applied
them. Replaying that log gives where every tag pointed before each of the dashboard's writes;
the assertions hold for every interleaving, whichever one a run gets:

- every tag the dashboard removed (by tombstone, or with a version) pointed where the user was
  shown it, and every tag a restore overwrote pointed at the digest the user was shown, unless
  the other client moved it after the dashboard's last read of it: the one-request window
  Distribution leaves open (no conditional writes), counted and printed, not hidden;
- every restore answered with success left the tag on the chosen digest, or was refused (409);
- every action has one audit entry, `ok` exactly when its write reached the registry.
"""

from __future__ import annotations

import random
import threading
from collections import Counter
from dataclasses import dataclass, field

import pytest
from django.urls import reverse

from dashboard.models import AuditEntry, Role, Tag
from dashboard.registries import configured_registry
from dashboard.registry.client import USER_AGENT
from tests.personas import make_user
from tests.rollback_support import Dashboard
from tests.support.fault_proxy import FaultProxy, Seen
from tests.support.images import ImagePusher
from tests.support.write_log import MANIFEST_PATH, RegistryModel, is_tombstone

pytestmark = pytest.mark.django_db

EXTERNAL_OPERATIONS = 60
DASHBOARD_ACTIONS = 40
RELOAD_EVERY = 4  # the user reloads the page (a sync) every few actions
MOVING_TAGS = ("latest", "production", "stable")
ACTIONS = {"delete_tag": "delete_tag", "delete_version": "delete_version", "restore": "restore"}


@dataclass
class Action:
    """One thing the user did, what the page showed them, and the proxy log range it spans."""

    kind: str
    tag: str = ""
    digest: str = ""  # delete_tag/restore: the tag's digest shown; delete_version: the version
    shown: tuple[str, ...] = ()  # delete_version: the tags shown on it
    target: str = ""  # restore: the digest chosen
    status: int = 0
    start: int = 0
    end: int = 0


@dataclass
class Replay:
    """The dashboard's writes checked against the registry's state replayed from the log."""

    wrong: list[str] = field(default_factory=list)
    window: list[str] = field(default_factory=list)
    written: set[int] = field(default_factory=set)  # actions whose main write reached the registry
    restored_elsewhere: set[int] = field(default_factory=set)  # restores moved on right after the PUT


class External:
    """The other client: pushes, retags (as skopeo copy would) and deletes by digest."""

    def __init__(self, url: str, repository: str, seed: int) -> None:
        self.pusher = ImagePusher(url)
        self.repository = repository
        self.rng = random.Random(seed)
        self.done: Counter[str] = Counter()

    def run(self, operations: int) -> None:
        for number in range(operations):
            kind = self.rng.choice(["push", "push", "move", "retag", "retag", "delete"])
            try:
                getattr(self, kind)(number)
            except RuntimeError:
                self.done[f"{kind} lost a race"] += 1  # e.g. the version it read was deleted
            else:
                self.done[kind] += 1

    def tags(self) -> list[str]:
        return self.pusher.tags(self.repository)

    def push(self, number: int) -> None:
        self.pusher.push_image(self.repository, [f"ext-{number}"], unique=f"ext-{number}", layers=1, layer_size=256)

    def move(self, number: int) -> None:
        tag = self.rng.choice(MOVING_TAGS)
        self.pusher.push_image(self.repository, [tag], unique=f"move-{number}", layers=1, layer_size=256)

    def retag(self, number: int) -> None:
        tags = self.tags()
        if not tags:
            return self.push(number)
        self.pusher.copy_tag(self.repository, self.rng.choice(tags), self.rng.choice([*MOVING_TAGS, *tags]))

    def delete(self, number: int) -> None:
        tags = self.tags()
        if not tags:
            return self.push(number)
        digest = self.pusher.head_digest(self.repository, self.rng.choice(tags))
        if digest is None:
            raise RuntimeError("gone")
        self.pusher.delete_manifest(self.repository, digest)


def seed_repository(pusher: ImagePusher, repository: str) -> None:
    for number in range(6):
        tags = [f"v{number}"] + ([MOVING_TAGS[number % 3]] if number >= 3 else [])
        pusher.push_image(repository, tags, unique=f"seed-{number}", layers=1, layer_size=256)


def dashboard_action(client, repository: str, rng: random.Random) -> Action | None:
    """One action on what the page shows now (the cache)."""
    shown = dict(Tag.objects.filter(repository__name=repository).values_list("name", "manifest__digest"))
    if not shown:
        return None
    kind = rng.choice(["delete_tag", "delete_version", "restore", "restore"])
    tag = rng.choice(sorted(shown))
    if kind == "delete_tag":
        action = Action(kind, tag=tag, digest=shown[tag])
        url, form = reverse("dashboard:delete-tag", args=[repository, tag]), {"digest": shown[tag]}
    elif kind == "delete_version":
        digest = shown[tag]
        on_it = tuple(sorted(name for name, found in shown.items() if found == digest))
        action = Action(kind, digest=digest, shown=on_it)
        url = reverse("dashboard:delete-version", args=[repository, digest])
        form = {"tags": list(on_it), "confirm": repository}
    else:
        others = sorted(set(shown.values()) - {shown[tag]})
        if not others:
            return None
        target = rng.choice(others)
        action = Action(kind, tag=tag, digest=shown[tag], target=target)
        url = reverse("dashboard:restore", args=[repository])
        form = {"tag": tag, "digest": target, "expected": shown[tag]}
    action.status = client.post(url, form).status_code
    return action


def replay(log: list[Seen], actions: list[Action]) -> Replay:
    result = Replay()
    owner = {index: number for number, action in enumerate(actions) for index in range(action.start, action.end)}
    model = RegistryModel()
    tombstones: set[str] = set()
    for index, seen in enumerate(log):
        write = model.step(index, seen)
        if write is None or not write.ours:
            continue
        number = owner.get(index)
        action = actions[number] if number is not None else None
        if action is None:
            result.wrong.append(f"#{index} {seen.method} {write.reference} outside an action")
            continue
        if seen.method == "PUT":
            tombstone = is_tombstone(seen.body)
            if tombstone:
                tombstones.add(write.digest)
            if action.tag != write.reference or action.kind != ("delete_tag" if tombstone else "restore"):
                result.wrong.append(f"#{index} PUT {write.reference} in an action that does not name it")
            elif action.kind == "restore" and write.digest != action.target:
                result.wrong.append(f"#{index} restore PUT {write.reference} -> {write.digest}, chosen {action.target}")
            elif write.before != action.digest:
                what = f"#{index} {action.kind}: {write.reference} was on {write.before}, shown on {action.digest}"
                (result.window if model.moved_unseen(write.repository, write.reference) else result.wrong).append(what)
            # A tombstone PUT is the tag delete's write: the tag has left its digest. (Another
            # client may delete the tombstone before the dashboard does.)
            result.written.add(number)
            continue
        allowed = {action.tag} if write.reference in tombstones else set(action.shown)
        if write.reference not in tombstones and (action.kind != "delete_version" or write.reference != action.digest):
            result.wrong.append(f"#{index} DELETE {write.reference}: not the version of the action")
        for tag in sorted(set(write.removed) - allowed):
            what = f"#{index} {action.kind} took {tag} along, shown {sorted(allowed)}"
            unseen = model.moved_unseen(write.repository, tag, listing=True)
            (result.window if unseen else result.wrong).append(what)
        result.written.add(number)
    # A restore answered with success must have left the tag on the target when it checked.
    for number, action in enumerate(actions):
        if action.kind != "restore":
            continue
        final = _digest_at_last_read(log, action)
        if action.status == 302 and final != action.target:
            result.wrong.append(f"restore {action.tag} reported success, tag on {final} after it")
        if action.status != 302 and number in result.written and final != action.target:
            result.restored_elsewhere.add(number)
    return result


def _digest_at_last_read(log: list[Seen], action: Action) -> str | None:
    """Where the tag pointed when the restore checked it last: its first HEAD of the tag after
    its PUT, or without a PUT (the tag already pointed there) its digest guard."""
    model = RegistryModel()
    checks: list[tuple[bool, str | None]] = []  # (after our PUT?, digest) at each of our HEADs
    wrote = False
    for index, seen in enumerate(log[: action.end]):
        write = model.step(index, seen)
        mine = index >= action.start and seen.agent == USER_AGENT
        match = MANIFEST_PATH.match(seen.path)
        if write is not None and mine and write.reference == action.tag:
            wrote = True
        elif mine and seen.method == "HEAD" and match and match["reference"] == action.tag:
            checks.append((wrote, model.tags.get((match["repository"], action.tag))))
    return next(digest for after, digest in checks if after == wrote)


def test_the_dashboard_deletes_and_restores_only_what_it_showed_while_another_client_writes(
    settings, registry, repo_name, client
):
    proxy = FaultProxy(registry.url, serialize=True)
    try:
        settings.REGISTRY_URL = proxy.url
        dashboard = Dashboard(configured_registry(), registry)
        seed_repository(ImagePusher(proxy.url), repo_name)
        dashboard.sync(repo_name)
        client.force_login(make_user("dora", pattern="*", role=Role.ADMIN))
        external = External(proxy.url, repo_name, seed=14)
        other = threading.Thread(target=external.run, args=(EXTERNAL_OPERATIONS,), name="external-client")
        rng = random.Random(41)
        actions: list[Action] = []
        other.start()
        for step in range(DASHBOARD_ACTIONS):
            if step % RELOAD_EVERY == 0:
                dashboard.sync(repo_name)
            start = len(proxy.seen())
            action = dashboard_action(client, repo_name, rng)
            if action is not None:
                action.start, action.end = start, len(proxy.seen())
                actions.append(action)
        other.join()
        log = proxy.seen()
    finally:
        proxy.stop()

    result = replay(log, actions)
    outcomes = Counter(f"{action.kind} {action.status}" for action in actions)
    print(
        f"\nstress: other client {dict(external.done)}; dashboard {dict(sorted(outcomes.items()))}; "
        f"{len(result.written)} writes reached the registry; {len(result.window)} in the one-request window; "
        f"{len(result.wrong)} wrong; {len(log)} registry requests"
    )
    for line in result.window:
        print("  window:", line)
    for entry in AuditEntry.objects.filter(repository=repo_name, outcome="failed"):
        print("  failed:", entry.action, entry.tag, entry.reason)
    assert result.wrong == []
    # Every answer is one the views document: done, refused as moved or gone, never a failure.
    assert {action.status for action in actions} <= {302, 409, 410}
    for number, action in enumerate(actions):
        entries = AuditEntry.objects.filter(action=ACTIONS[action.kind], repository=repo_name)
        entry = entries.order_by("id")[number_of(actions, number)]
        assert entry.outcome == ("ok" if action.status == 302 else "refused"), action
        wrote = number in result.written or (action.kind == "restore" and action.status == 302)
        assert wrote == (action.status == 302 or number in result.restored_elsewhere), action
    assert AuditEntry.objects.filter(repository=repo_name).count() == len(actions)
    # Both sides did something: the run exercised the races it is about.
    assert external.done["retag"] and len(result.written) > 0


def number_of(actions: list[Action], number: int) -> int:
    """The position of action `number` among the actions of its kind (audit entries are per kind)."""
    return sum(action.kind == actions[number].kind for action in actions[:number])
