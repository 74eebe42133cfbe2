"""Every route x every persona: the status each one gets, and hidden repositories named nowhere.

Routes are read from the URL resolver, so a new view that nobody classified here fails
`test_every_route_is_classified` instead of escaping these checks. Each route is requested
for a repository the personas of team-a may see and for one of team-b they may not; every
response body (and redirect) of a non-admin is searched for the hidden repository's name,
tag and digest. Mutations run inside a rolled-back savepoint, and the registry is protected
by a pin on the version they aim at, so every persona meets the same world.
"""

from __future__ import annotations

import json
import uuid
from urllib.parse import urlencode
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

import pytest
from django.contrib.auth.models import Group, User
from django.db import transaction
from django.test import Client
from django.test.utils import override_settings
from django.urls import URLPattern, URLResolver, get_resolver, reverse
from django.utils import timezone

from dashboard.models import AccessRule, ApiToken, AuditEntry, Pin, Repository, RetentionPolicy, Role
from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_registry
from dashboard.tasks import enqueue_sync
from tests.page_checks import csp_violations
from tests.personas import make_user
from tests.support import supplychain
from tests.support.images import ImagePusher
from tests.support.registry_server import RegistryServer, start_registry

pytestmark = pytest.mark.django_db

VISIBLE = "team-a/shop-api"
HIDDEN = "team-b/payroll-ledger"
HIDDEN_TAG = "payroll-q3-close"
HIDDEN_DRAFT = f"{HIDDEN_TAG}-draft"
PERSONAS = ("anonymous", "outsider", "viewer", "maintainer", "operator", "admin")
ROLES = {"viewer": Role.VIEWER, "maintainer": Role.MAINTAINER, "operator": Role.OPERATOR}
ADMIN_ANYWHERE = "admin of every repository"
NOTIFICATION_SECRET = "matrix-notification-secret"


# The registry and the world every test starts from ---------------------------------------


@dataclass
class Images:
    server: RegistryServer
    pinned: str  # VISIBLE v1 and production: what the deletions aim at
    unpinned: str  # VISIBLE v2: what the pins aim at
    hidden: str  # HIDDEN_TAG, pinned
    hidden_unpinned: str  # HIDDEN_DRAFT


@pytest.fixture(scope="module")
def images(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Images]:
    """A registry of its own, so a catalog refresh reads two repositories, not the session's."""
    server = start_registry(tmp_path_factory.mktemp("matrix-registry"))
    pusher = ImagePusher(server.url)
    images = Images(
        server,
        pinned=pusher.push_image(VISIBLE, ("v1", "production"), unique="matrix-v1").digest,
        unpinned=pusher.push_image(VISIBLE, ("v2",), unique="matrix-v2").digest,
        hidden=pusher.push_image(HIDDEN, (HIDDEN_TAG,), unique="matrix-hidden").digest,
        hidden_unpinned=pusher.push_image(HIDDEN, (HIDDEN_DRAFT,), unique="matrix-hidden-draft").digest,
    )
    # The package search must find the visible repository's openssl and never the hidden one's.
    sbom = supplychain.cyclonedx_sbom([("openssl", "3.0.11")])
    for repository, digest in ((VISIBLE, images.pinned), (HIDDEN, images.hidden)):
        supplychain.push_cosign(pusher, repository, digest, "sbom", [("application/vnd.cyclonedx+json", sbom, {})])
    yield images
    server.stop()


@dataclass
class World:
    images: Images
    users: dict[str, User]
    tokens: dict[str, str] = field(default_factory=dict)
    token_ids: dict[str, int] = field(default_factory=dict)
    tasks: dict[str, str] = field(default_factory=dict)
    rule: AccessRule | None = None
    policy: RetentionPolicy | None = None

    def secrets(self) -> tuple[str, ...]:
        """What no one but an admin may ever read (HIDDEN_TAG is part of HIDDEN_DRAFT)."""
        return (HIDDEN, HIDDEN_TAG, self.images.hidden, self.images.hidden_unpinned)


def build_world(images: Images) -> World:
    registry = configured_registry()
    sync_registry(registry, client_for(registry))
    users = {"outsider": make_user("otto")}
    for persona, role in ROLES.items():
        users[persona] = make_user(persona, pattern="team-a/*", role=role)
    users["admin"] = make_user("ada", pattern="*", role=Role.ADMIN)
    world = World(images, users)
    for persona, user in users.items():
        api_token, world.tokens[persona] = ApiToken.issue(user, "matrix")
        world.token_ids[persona] = api_token.pk
    team_b = Group.objects.create(name="team-b")
    world.rule = AccessRule.objects.create(group=team_b, pattern="team-b/*", role=Role.MAINTAINER)
    world.policy = RetentionPolicy.objects.create(name="matrix-policy", repository_pattern="nothing-here/*", enabled=False)
    # Its pattern names the hidden repository: only admins may read it (retention pages).
    RetentionPolicy.objects.create(name="matrix-hidden-policy", repository_pattern=HIDDEN, enabled=False)
    for name, digest in ((VISIBLE, images.pinned), (HIDDEN, images.hidden)):
        repository = registry.repositories.get(name=name)
        # The pins are what keeps an allowed deletion from reaching the registry.
        Pin.objects.create(repository=repository, digest=digest, reason="matrix", created_by=users["admin"])
        world.tasks[name] = str(enqueue_sync(name).id)
    AuditEntry.objects.create(username="carol", action="delete_tag", outcome="ok", repository=HIDDEN, tag=HIDDEN_TAG)
    return world


@pytest.fixture(scope="module")
def world(images: Images, django_db_setup, django_db_blocker) -> Iterator[World]:
    """Built once for the module inside a transaction that is rolled back at the end; each
    test (and each request, see `test_route_for_every_persona`) runs in a savepoint of it."""
    overrides = override_settings(
        REGISTRY_URL=images.server.url,
        DASHBOARD_PUBLIC_READ=False,
        DASHBOARD_DEFAULT_ROLE=None,
        REGISTRY_NOTIFICATIONS_SECRET=NOTIFICATION_SECRET,
        # Queued (not run) tasks, so /tasks/<id>/ has something to show.
        TASKS={"default": {"BACKEND": "django_tasks_db.DatabaseBackend"}},
    )
    with overrides, django_db_blocker.unblock(), transaction.atomic():
        yield build_world(images)
        transaction.set_rollback(True)


# What each route is, and what each persona should get -------------------------------------


@dataclass(frozen=True)
class Call:
    """One method of a route: the role it needs, the status when allowed, and its input."""

    minimum: int | str | None = None  # a role on the repository, ADMIN_ANYWHERE, or None (signed in)
    ok: int = 200
    data: Callable[[World, str, str], dict | str] = lambda world, repository, persona: {}
    htmx_ok: int | None = None  # when htmx gets another answer than a plain request (a fragment)


@dataclass(frozen=True)
class Route:
    calls: dict[str, Call]
    # "page": signed-in web view; "repository": the same on one repository; "api" and
    # "api-repository": bearer-token JSON; "machine": the same answer whoever asks.
    kind: str = "page"
    kwargs: Callable[[World, str, str], dict] = lambda world, repository, persona: {}
    fragment: bool = False  # answers 403, never a login redirect
    # The HX-Target for which the view answers with a fragment ("" = any htmx request); such
    # routes are also requested through htmx by every persona, the others only by anonymous.
    target: str | None = None


def _tag(repository: str) -> str:
    return "v1" if repository == VISIBLE else HIDDEN_TAG


def _digest(world: World, repository: str) -> str:
    return world.images.pinned if repository == VISIBLE else world.images.hidden


def _unpinned(world: World, repository: str) -> str:
    return world.images.unpinned if repository == VISIBLE else world.images.hidden_unpinned


def name_and_tag(world: World, repository: str, persona: str) -> dict:
    return {"name": repository, "tag": _tag(repository)}


def name_and_digest(world: World, repository: str, persona: str) -> dict:
    return {"name": repository, "digest": _digest(world, repository)}


def just_name(world: World, repository: str, persona: str) -> dict:
    return {"name": repository}


def same_digest_restore(world: World, repository: str, persona: str) -> dict:
    # Point the tag where it already points: allowed, and nothing changes in the registry.
    digest = _digest(world, repository)
    return {"tag": _tag(repository), "digest": digest, "expected": digest}


def tag_selection(world: World, repository: str, persona: str) -> dict:
    tag = _tag(repository)
    return {"tags": [tag], f"digest:{tag}": _digest(world, repository)}


ROUTES: dict[str, Route] = {
    # Browse
    "dashboard:catalog": Route({"GET": Call()}, target="catalog-results"),
    "dashboard:catalog-refresh": Route({"POST": Call(ok=302, htmx_ok=200)}, target="catalog-results"),
    "dashboard:repository": Route({"GET": Call(Role.VIEWER)}, "repository", just_name, target="tag-results"),
    "dashboard:repository-refresh": Route(
        {"POST": Call(Role.VIEWER, ok=302, htmx_ok=200)}, "repository", just_name, target="tag-results"
    ),
    "dashboard:tag": Route({"GET": Call(Role.VIEWER)}, "repository", name_and_tag),
    "dashboard:manifest": Route({"GET": Call(Role.VIEWER)}, "repository", name_and_digest),
    "dashboard:vulnerabilities": Route({"GET": Call(Role.VIEWER)}, "repository", name_and_digest),
    "dashboard:packages": Route({"GET": Call(Role.VIEWER)}, "repository", name_and_digest),
    "dashboard:task-status": Route(
        {"GET": Call(Role.VIEWER)},
        "repository",
        lambda world, repository, persona: {"task_id": uuid.UUID(world.tasks[repository])},
        target="",
    ),
    # Pins, history, restore
    "dashboard:pins": Route({"GET": Call()}, target="pin-results"),
    "dashboard:package-search": Route({"GET": Call(data=lambda world, repository, persona: {"q": "openssl"})}),
    "dashboard:tag-history": Route({"GET": Call(Role.VIEWER)}, "repository", name_and_tag),
    "dashboard:compare": Route(
        {"GET": Call(Role.VIEWER, data=lambda world, repository, persona: {"from": _tag(repository), "to": _digest(world, repository)})},
        "repository",
        just_name,
    ),
    "dashboard:rollback": Route(
        {"GET": Call(Role.VIEWER, data=lambda world, repository, persona: {"tag": _tag(repository)})},
        "repository",
        just_name,
        target="candidate-results",
    ),
    "dashboard:pin": Route(
        {
            "POST": Call(
                Role.OPERATOR,
                ok=302,
                data=lambda world, repository, persona: {
                    "digest": _unpinned(world, repository),
                    "reason": "matrix",
                },
            )
        },
        "repository",
        just_name,
    ),
    "dashboard:unpin": Route(
        {"POST": Call(Role.OPERATOR, ok=302, data=lambda world, repository, persona: {"digest": _digest(world, repository)})},
        "repository",
        just_name,
    ),
    "dashboard:restore": Route(
        {"GET": Call(Role.OPERATOR, data=same_digest_restore), "POST": Call(Role.OPERATOR, ok=302, data=same_digest_restore)},
        "repository",
        just_name,
    ),
    # Deleting: the pin refuses (409) after the permission check, before any registry call.
    "dashboard:delete-tag": Route(
        {
            "GET": Call(Role.MAINTAINER),
            "POST": Call(Role.MAINTAINER, ok=409, data=lambda world, repository, persona: {"digest": _digest(world, repository)}),
        },
        "repository",
        name_and_tag,
        target="delete-dialog",
    ),
    "dashboard:delete-version": Route(
        {
            "GET": Call(Role.MAINTAINER),
            "POST": Call(
                Role.MAINTAINER,
                ok=409,
                data=lambda world, repository, persona: {"confirm": repository, "tags": [_tag(repository)]},
            ),
        },
        "repository",
        name_and_digest,
    ),
    "dashboard:bulk-delete-preview": Route({"POST": Call(Role.MAINTAINER, data=tag_selection)}, "repository", just_name),
    "dashboard:bulk-delete": Route(
        {"POST": Call(Role.MAINTAINER, data=tag_selection)}, "repository", just_name, target="bulk-results"
    ),
    # Retention and storage
    "dashboard:retention": Route({"GET": Call()}),
    "dashboard:retention-new": Route({"GET": Call(ADMIN_ANYWHERE)}),
    "dashboard:retention-edit": Route({"GET": Call(ADMIN_ANYWHERE)}, kwargs=lambda world, repository, persona: {"pk": world.policy.pk}),
    "dashboard:retention-preview": Route({"GET": Call()}),
    # A stale preview: the plan's fingerprint differs, so nothing runs.
    "dashboard:retention-apply": Route({"POST": Call(ok=409, data=lambda world, repository, persona: {"fingerprint": "stale"})}),
    "dashboard:storage": Route({"GET": Call()}),
    "dashboard:storage-growth": Route({"GET": Call()}),
    "dashboard:storage-gc-done": Route({"POST": Call(ADMIN_ANYWHERE, ok=302)}),
    # Audit and access
    "dashboard:audit": Route({"GET": Call()}, target="audit-results"),
    "dashboard:audit-export": Route({"GET": Call()}, fragment=True),
    "dashboard:access": Route({"GET": Call()}),
    "dashboard:removed-repositories": Route({"GET": Call(ADMIN_ANYWHERE)}),
    "dashboard:access-rule-add": Route(
        {
            "POST": Call(
                ADMIN_ANYWHERE,
                ok=302,
                data=lambda world, repository, persona: {"group": world.rule.group_id, "pattern": "team-c/*", "role": Role.VIEWER},
            )
        }
    ),
    "dashboard:access-rule-delete": Route(
        {"POST": Call(ADMIN_ANYWHERE, ok=302)}, kwargs=lambda world, repository, persona: {"pk": world.rule.pk}
    ),
    # Personal API tokens: each persona revokes their own.
    "dashboard:api-tokens": Route({"GET": Call(), "POST": Call(data=lambda world, repository, persona: {"name": "ci"})}),
    "dashboard:api-token-revoke": Route(
        {"POST": Call(ok=302)}, kwargs=lambda world, repository, persona: {"pk": world.token_ids.get(persona, 0)}
    ),
    # JSON API
    "dashboard:api-repositories": Route({"GET": Call()}, "api"),
    "dashboard:api-storage": Route({"GET": Call()}, "api"),
    "dashboard:api-tags": Route({"GET": Call(Role.VIEWER)}, "api-repository", just_name),
    "dashboard:api-candidates": Route({"GET": Call(Role.VIEWER)}, "api-repository", name_and_tag),
    "dashboard:api-tag": Route(
        {
            "GET": Call(Role.VIEWER),
            "DELETE": Call(
                Role.MAINTAINER, ok=409, data=lambda world, repository, persona: {"expected_digest": _digest(world, repository)}
            )
        },
        "api-repository",
        name_and_tag,
    ),
    "dashboard:api-restore": Route(
        {
            "POST": Call(
                Role.OPERATOR,
                data=lambda world, repository, persona: json.dumps(
                    {"digest": _digest(world, repository), "expected_digest": _digest(world, repository)}
                ),
            )
        },
        "api-repository",
        name_and_tag,
    ),
    "dashboard:api-pins": Route(
        {
            "GET": Call(Role.VIEWER),
            "POST": Call(
                Role.OPERATOR,
                ok=201,
                data=lambda world, repository, persona: json.dumps(
                    {"digest": _unpinned(world, repository), "reason": "matrix"}
                ),
            ),
        },
        "api-repository",
        just_name,
    ),
    "dashboard:api-pin": Route({"DELETE": Call(Role.OPERATOR)}, "api-repository", name_and_digest),
    # Machine endpoints: the same answer for everyone, and no repository in it.
    "dashboard:registry-events": Route({"POST": Call(ok=401)}, "machine"),
    "healthz": Route({"GET": Call()}, "machine"),
    "readyz": Route({"GET": Call()}, "machine"),
    "metrics": Route({"GET": Call()}, "machine"),
}


def routes_in_resolver() -> set[str]:
    """Every named route, except Django's own admin and account views."""
    names: set[str] = set()

    def walk(patterns, namespace: str) -> None:
        for pattern in patterns:
            if isinstance(pattern, URLResolver):
                if pattern.namespace == "admin":
                    continue
                walk(pattern.url_patterns, f"{namespace}{pattern.namespace}:" if pattern.namespace else namespace)
            elif isinstance(pattern, URLPattern):
                # dashboard.accounts: Django's login view, with a notice added.
                if getattr(pattern.callback, "__module__", "") in ("django.contrib.auth.views", "dashboard.accounts"):
                    continue
                assert pattern.name, f"unnamed route {pattern.pattern}: name it and classify it here"
                names.add(namespace + pattern.name)

    walk(get_resolver().url_patterns, "")
    return names


def test_every_route_is_classified():
    in_resolver = routes_in_resolver()
    assert in_resolver - ROUTES.keys() == set(), "classify these new routes in ROUTES"
    assert ROUTES.keys() - in_resolver == set(), "these routes are gone: remove them from ROUTES"


# Running the matrix -----------------------------------------------------------------------


def expected_status(route: Route, call: Call, persona: str, repository: str | None, htmx: bool) -> int:
    allowed = call.htmx_ok if htmx and call.htmx_ok is not None else call.ok
    if route.kind == "machine":
        return allowed
    if persona == "anonymous":
        if route.kind.startswith("api"):
            return 401
        return 403 if htmx or route.fragment else 302
    if persona == "admin":
        return allowed
    if repository is not None:
        role = ROLES.get(persona) if repository == VISIBLE else None
        if role is None:
            return 404
        return allowed if role >= call.minimum else 403
    return 403 if call.minimum == ADMIN_ANYWHERE else allowed


def client_for_persona(world: World, persona: str) -> Client:
    client = Client()
    if persona != "anonymous":
        client.force_login(world.users[persona])
    return client


def body_of(response) -> str:
    """The body, and where a redirect leads unless it is to the login page (whose `next`
    only repeats the address the visitor asked for)."""
    content = b"".join(response.streaming_content) if response.streaming else response.content
    location = response.get("Location", "")
    return content.decode(errors="replace") + ("" if location.startswith("/accounts/login/") else location)


def request(client: Client, world: World, name: str, method: str, persona: str, repository: str | None, htmx: bool):
    route = ROUTES[name]
    url = reverse(name, kwargs=route.kwargs(world, repository or VISIBLE, persona))
    data = route.calls[method].data(world, repository or VISIBLE, persona)
    headers: dict[str, str] = {}
    if htmx:
        headers["HX-Request"] = "true"
        if route.target:
            headers["HX-Target"] = route.target
    if route.kind.startswith("api") and persona != "anonymous":
        headers["Authorization"] = f"Bearer {world.tokens[persona]}"
    if route.kind == "machine" and method == "POST":
        headers["Content-Type"] = "application/vnd.docker.distribution.events.v1+json"
    if method == "GET":
        return client.get(url, data, headers=headers)
    if isinstance(data, str):
        return client.generic(method, url, data, content_type="application/json", headers=headers)
    if method == "DELETE":
        return client.delete(f"{url}?{urlencode(data)}", headers=headers)
    return client.post(url, data, headers=headers)


def cases(route: Route, persona: str) -> Iterator[tuple[str, str | None, bool]]:
    """(method, repository, htmx) of each request a persona makes to a route."""
    targets = (VISIBLE, HIDDEN) if route.kind in ("repository", "api-repository") else (None,)
    for method in route.calls:
        for repository in targets:
            yield method, repository, False
            # htmx asks for fragments: anonymous visitors must get a 403, never a login page.
            if route.kind in ("page", "repository") and (persona == "anonymous" or route.target is not None):
                yield method, repository, True


@pytest.mark.parametrize("route_name", sorted(ROUTES))
def test_route_for_every_persona(world: World, route_name: str):
    route = ROUTES[route_name]
    problems = []
    for persona in PERSONAS:
        client = client_for_persona(world, persona)
        for method, repository, htmx in cases(route, persona):
            # Every request starts from the same world: what it changed is rolled back.
            with transaction.atomic():
                response = request(client, world, route_name, method, persona, repository, htmx)
                transaction.set_rollback(True)
            want = expected_status(route, route.calls[method], persona, repository, htmx)
            where = f"{persona:>10} {method:6} {repository or '-':22} {'htmx' if htmx else '    '}"
            body = body_of(response)
            if response.status_code != want:
                problems.append(f"{where} -> {response.status_code}, expected {want}: {body[:200]!r}")
            if want == 302 and persona == "anonymous" and not response.get("Location", "").startswith("/accounts/login/"):
                problems.append(f"{where} -> redirects to {response.get('Location')!r}, not to the login page")
            if persona != "admin":
                problems += [f"{where} -> shows {secret!r}" for secret in world.secrets() if secret in body]
            if response.status_code == 200 and response.get("Content-Type", "").startswith("text/html"):
                problems += [f"{where} -> CSP: {violation}" for violation in csp_violations(body)]
    assert problems == [], "\n".join(problems)


def test_the_admin_persona_does_see_the_hidden_repository(world: World):
    """Proof that the matrix's secrets are real: the same pages do show them to an admin."""
    client = client_for_persona(world, "admin")
    bodies = [
        body_of(client.get("/")),
        body_of(client.get("/audit/")),
        body_of(client.get("/api/v1/repositories/", headers={"Authorization": f"Bearer {world.tokens['admin']}"})),
        body_of(client.get(f"/repositories/{HIDDEN}/")),
        body_of(client.get("/packages/?q=openssl")),
    ]
    for secret in world.secrets():
        assert any(secret in body for body in bodies), secret


def test_a_removed_repository_is_gone_for_every_persona(world: World):
    """A repository that left the catalog keeps its rows (its pin here) but is a 404 on every
    repository route and named on no other page, for admins too. The one exception is the
    status of a sync of it, which says to those who may see the name that it is gone, and the
    admins' list of removed repositories, which names it to admins only."""
    problems = []
    with transaction.atomic():
        assert Repository.objects.filter(name=VISIBLE).update(removed_at=timezone.now()) == 1
        for persona in PERSONAS:
            client = client_for_persona(world, persona)
            for name, route in sorted(ROUTES.items()):
                for method, repository, htmx in cases(route, persona):
                    # The admins' list of removed repositories is where their names are meant to be.
                    if repository == HIDDEN or name in ("dashboard:task-status", "dashboard:removed-repositories"):
                        continue
                    with transaction.atomic():
                        response = request(client, world, name, method, persona, repository, htmx)
                        transaction.set_rollback(True)
                    where = f"{persona:>10} {name} {method} {'htmx' if htmx else ''}"
                    if repository is not None and persona != "anonymous" and response.status_code != 404:
                        problems.append(f"{where} -> {response.status_code}, expected 404")
                    if VISIBLE in body_of(response):
                        problems.append(f"{where} -> shows {VISIBLE}")
        transaction.set_rollback(True)
    assert problems == [], "\n".join(problems)


# Public read: anonymous visitors browse, and still cannot act -----------------------------

PUBLIC_WHEN_READ_IS_OPEN = {
    "dashboard:catalog",
    "dashboard:repository",
    "dashboard:tag",
    "dashboard:manifest",
    "dashboard:vulnerabilities",
    "dashboard:packages",
    "dashboard:tag-history",
    "dashboard:compare",
    "dashboard:rollback",
    "dashboard:pins",
    "dashboard:package-search",
    "dashboard:task-status",
}


def test_public_read_opens_browsing_only(world: World):
    problems = []
    client = Client()
    with override_settings(DASHBOARD_PUBLIC_READ=True):
        for name, route in sorted(ROUTES.items()):
            if route.kind not in ("page", "repository"):
                continue
            for method, repository, _ in cases(route, "viewer"):
                with transaction.atomic():
                    response = request(client, world, name, method, "anonymous", repository, htmx=False)
                    transaction.set_rollback(True)
                if method == "GET" and name in PUBLIC_WHEN_READ_IS_OPEN:
                    want = route.calls[method].ok
                else:
                    want = 403 if route.fragment else 302
                if response.status_code != want:
                    problems.append(f"{name} {method} {repository or '-'} -> {response.status_code}, expected {want}")
    assert problems == [], "\n".join(problems)


# CSRF --------------------------------------------------------------------------------------


def _state() -> tuple:
    return (
        Pin.objects.count(),
        AccessRule.objects.count(),
        ApiToken.objects.count(),
        AuditEntry.objects.count(),
        sorted(Pin.objects.values_list("digest", flat=True)),
    )


def forms_that_change_things() -> list[tuple[str, str]]:
    return sorted(
        (name, method)
        for name, route in ROUTES.items()
        for method in route.calls
        if method != "GET" and route.kind in ("page", "repository")
    )


@pytest.mark.parametrize(("route_name", "method"), forms_that_change_things())
def test_a_forged_post_changes_nothing(world: World, route_name: str, method: str):
    """Without the CSRF token, even an admin's POST is refused before the view runs."""
    route = ROUTES[route_name]
    call = route.calls[method]
    client = Client(enforce_csrf_checks=True)
    client.force_login(world.users["admin"])
    before = _state()
    url = reverse(route_name, kwargs=route.kwargs(world, VISIBLE, "admin"))
    response = client.post(url, call.data(world, VISIBLE, "admin"))
    assert response.status_code == 403
    assert "CSRF" in response.content.decode()
    assert _state() == before


@pytest.mark.parametrize("route_name", sorted(name for name, route in ROUTES.items() if "GET" not in route.calls))
def test_actions_cannot_be_triggered_by_a_get(world: World, route_name: str):
    """A link, an image or a prefetch must never change anything: action URLs answer 405 to GET."""
    route = ROUTES[route_name]
    client = client_for_persona(world, "admin")
    headers = {"Authorization": f"Bearer {world.tokens['admin']}"} if route.kind.startswith("api") else {}
    before = _state()
    response = client.get(reverse(route_name, kwargs=route.kwargs(world, VISIBLE, "admin")), headers=headers)
    assert response.status_code == 405
    assert _state() == before

