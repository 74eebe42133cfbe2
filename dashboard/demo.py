"""The demo's story: a small shop's registry with a history, for `make demo` and for the tests.

Everything goes through the real parts: images with real layers pushed over the registry API,
a sync after each release (so tag history and rollback candidates are what a sync records),
the rollback and the pin done with the dashboard's own actions (audited), a retention policy
saved as the policy page saves one. `seed` takes a name prefix so tests can tell the story in
the session's registry next to other tests' repositories.

The story: `platform/node-base` is the base image of three services (website-ecommerce,
checkout-service, team/payments/worker: they share its layers). website-ecommerce released
v1.0, v1.1, v2.0 and v2.1 with `production` moved along; v2.1 broke checkout, so `production`
was rolled back to v2.0; v1.1 is pinned as the last known-good 1.x. Nightly `build-N` tags pile
up, and a retention policy that would clean them is saved but disabled. shop-api is multi-arch.
CI signs the releases from v1.1 on with the web team's key (trusted by the dashboard) and
attaches a signed vulnerability scan to each: v1.0 has one critical finding.
"""

from __future__ import annotations

import functools
import random
from urllib.parse import urlsplit
from dataclasses import dataclass
from datetime import datetime, timedelta

from django.contrib.auth.models import Group, User

from dashboard import audit, retention
from dashboard.models import AccessRule, Pin, Registry, Repository, RetentionPolicy, Role, TagHistory, TrustedKey
from dashboard.registries import client_for
from dashboard.rollback import pin_version, restore_tag
from dashboard.sync import sync_registry
from tests.support import supplychain
from tests.support.images import ImagePusher, PushedImage, make_layer

SOURCE = "https://github.com/example-shop"
NODE_ENV = ["PATH=/usr/local/bin:/usr/bin:/bin", "NODE_ENV=production", "PORT=8080"]
MB = 1_000_000
# The people of the story: the admin signs in; the others act in it and can sign in too.
OPERATOR = "olivia"  # ops: operator on everything; rolled production back and pinned v1.1
MAINTAINER = "dana"  # web team: maintainer of the shop's services
SHOP = "website-ecommerce"
NIGHTLY_BUILDS = range(101, 109)
NIGHTLY_POLICY = "nightly-builds"
RELEASE_KEY = "web-team-release"
# What CI's scanner found in each release (Trivy's JSON in a signed cosign attestation); v1.0
# predates signing. One critical finding, in the oldest release still a rollback candidate.
FINDINGS = {
    "v1.0": [
        {"id": "CVE-2024-5535", "severity": "critical", "package": "openssl", "installed": "3.0.11-1", "fixed": "3.0.14-1"},
        {"id": "CVE-2023-45853", "severity": "medium", "package": "zlib", "installed": "1.2.13"},
    ],
    "v1.1": [{"id": "CVE-2023-45853", "severity": "medium", "package": "zlib", "installed": "1.2.13"}],
    "v2.0": [{"id": "CVE-2024-2511", "severity": "low", "package": "openssl", "installed": "3.0.14-1"}],
    "v2.1": [{"id": "CVE-2024-2511", "severity": "low", "package": "openssl", "installed": "3.0.14-1"}],
}
SIGNED = ("v1.1", "v2.0", "v2.1")


@dataclass(frozen=True)
class Story:
    """What a test or the demo's last lines point at."""

    prefix: str
    shop: str
    releases: dict[str, PushedImage]
    repositories: list[str]

    @property
    def production(self) -> PushedImage:
        return self.releases["v2.0"]


@functools.cache
def _layer(name: str, size: int) -> tuple[bytes, str]:
    """A layer of `size` random bytes, the same for the same name: images naming the same
    layer share its blob, as images built FROM one base do."""
    return make_layer(f"opt/{name}.bin", random.Random(name).randbytes(size))


def _labels(name: str, version: str, revision: str, created: datetime) -> dict[str, str]:
    return {
        "org.opencontainers.image.title": name,
        "org.opencontainers.image.version": version,
        "org.opencontainers.image.revision": revision,
        "org.opencontainers.image.source": f"{SOURCE}/{name}",
        "org.opencontainers.image.url": f"https://shop.example.com/{name}",
        "org.opencontainers.image.vendor": "Example Shop",
        "org.opencontainers.image.created": created.isoformat(),
        "maintainer": "web-team@example.com",
    }


NODE_BASE = [("node-base-debian-bookworm", 3 * MB), ("node-base-node-20", 6 * MB)]
NODE_BASE_HISTORY = ["ADD file:7d3f0e9c1b2a in / ", "RUN install node 20.11.1 /usr/local # buildkit"]


class _Teller:
    def __init__(self, registry: Registry, pusher: ImagePusher, epoch: datetime, prefix: str) -> None:
        self.registry = registry
        self.pusher = pusher
        self.epoch = epoch
        self.prefix = prefix
        self.pushed: list[str] = []

    def name(self, name: str) -> str:
        return f"{self.prefix}{name}"

    def days(self, n: float) -> datetime:
        return self.epoch - timedelta(days=n)

    def sync(self, name: str) -> None:
        with client_for(self.registry) as client:
            sync_registry(self.registry, client, repository=self.name(name))

    def node_service(
        self, name: str, version: str, age: float, *, deps: str, deps_size: int, app_size: int, env: list[str], revision: str
    ) -> PushedImage:
        """An image FROM node-base: its two layers, a dependencies layer, the application."""
        repository = self.name(name)
        self.pushed.append(repository)
        created = self.days(age)
        return self.pusher.push_image(
            repository,
            [version],
            created=created,
            unique=f"{name}-{version}",
            base_layers=[_layer(*layer) for layer in NODE_BASE] + [_layer(deps, deps_size)],
            layers=1,
            layer_size=app_size,
            author="Web team <web-team@example.com>",
            labels=_labels(name, version, revision, created),
            env=env,
            entrypoint=["docker-entrypoint.sh"],
            cmd=["node", "server.js"],
            exposed_ports=["8080/tcp"],
            workdir="/app",
            user="node",
            history_commands=[
                *NODE_BASE_HISTORY,
                "COPY package.json package-lock.json /app/ && RUN npm ci --omit=dev # buildkit",
                "COPY . /app # buildkit",
            ],
        )

    def sign_and_scan(self, name: str, image: PushedImage, version: str, key: supplychain.PrivateKey) -> None:
        """What CI attaches next to a release: a cosign signature and a signed Trivy scan."""
        repository = self.name(name)
        if version in SIGNED:
            reference = f"{urlsplit(self.pusher.base_url).netloc}/{repository}"
            supplychain.push_signature(self.pusher, repository, image.digest, key, reference)
        report = supplychain.trivy_report(image.digest, FINDINGS[version], repository=repository)
        scan = supplychain.statement(image.digest, supplychain.VULN, supplychain.vuln_predicate(report))
        supplychain.push_attestation(self.pusher, repository, image.digest, scan, key if version in SIGNED else None)

    def tag(self, name: str, image: PushedImage, tag: str) -> None:
        self.pusher.tag(self.name(name), image, tag)


def seed(registry: Registry, pusher: ImagePusher, epoch: datetime, *, prefix: str = "") -> Story:
    """Tell the story into `registry` (pushing with `pusher`) and its cache. `epoch` is "now" of
    the story: image dates count back from it. Run it on a cache without this story's history
    (the demo checks `told`), or the history gets the releases once more; pins and the policy
    already there are kept."""
    teller = _Teller(registry, pusher, epoch, prefix)
    operator, _maintainer = _people(prefix)

    base = teller.name("platform/node-base")
    teller.pushed.append(base)
    pusher.push_image(
        base,
        ["20-bookworm", "20"],
        created=teller.days(200),
        base_layers=[_layer(*layer) for layer in NODE_BASE],
        layers=0,
        history_commands=NODE_BASE_HISTORY,
        env=["PATH=/usr/local/bin:/usr/bin:/bin", "NODE_VERSION=20.11.1"],
        cmd=["node"],
    )
    teller.sync("platform/node-base")

    release_key = supplychain.make_key()
    TrustedKey.objects.update_or_create(
        name=RELEASE_KEY, defaults={"public_key": supplychain.public_pem(release_key).decode()}
    )
    # Each release goes to production, and a sync sees it there: the tag's history.
    releases: dict[str, PushedImage] = {}
    for version, age, deps, revision, env in [
        ("v1.0", 160, "shop-deps-1", "4f1c2ab", NODE_ENV),
        ("v1.1", 75, "shop-deps-1", "9e03d17", NODE_ENV),
        ("v2.0", 20, "shop-deps-2", "c5a88e2", NODE_ENV),
        ("v2.1", 4, "shop-deps-2", "d07b311", [*NODE_ENV, "CHECKOUT_FLOW=one-page"]),
    ]:
        image = teller.node_service(
            SHOP, version, age, deps=deps, deps_size=3 * MB, app_size=MB // 2, env=env, revision=revision
        )
        releases[version] = image
        teller.sign_and_scan(SHOP, image, version, release_key)
        teller.tag(SHOP, image, "production")
        teller.tag(SHOP, image, "latest")
        teller.sync(SHOP)
    shop = Repository.objects.get(registry=registry, name=teller.name(SHOP))
    # v2.1 broke checkout: ops point production back at v2.0, as the rollback page does.
    restore_tag(
        None, operator, registry, shop, tag="production", digest=releases["v2.0"].digest, expected=releases["v2.1"].digest
    )
    # A database that had the story keeps its pin (pins are never deleted as a side effect).
    if not Pin.objects.filter(repository=shop, digest=releases["v1.1"].digest).exists():
        pin_version(
            None,
            operator,
            registry,
            shop,
            digest=releases["v1.1"].digest,
            reason="Last 1.x release, known good: the fallback if 2.x misbehaves",
        )
    for number in NIGHTLY_BUILDS:
        teller.node_service(
            SHOP,
            f"build-{number}",
            NIGHTLY_BUILDS.stop - number,
            deps="shop-deps-2",
            deps_size=3 * MB,
            app_size=MB // 4,
            env=NODE_ENV,
            revision=f"{number:07x}",
        )
    teller.sync(SHOP)
    policy, created = RetentionPolicy.objects.get_or_create(
        name=NIGHTLY_POLICY,
        defaults={
            "repository_pattern": teller.name(SHOP),
            "tag_include": r"build-\d+",
            "keep_newest": 3,
            "older_than_days": 2,
            "enabled": False,
        },
    )
    if created:
        audit.record_policy_change(None, policy.name, "", retention.describe(policy))

    for name, versions, deps in [
        ("checkout-service", [("3.4.0", 60), ("3.5.0", 12)], "checkout-deps"),
        ("team/payments/worker", [("1.0.0", 40), ("1.0.1", 8)], "payments-deps"),
    ]:
        for version, age in versions:
            image = teller.node_service(
                name, version, age, deps=deps, deps_size=2 * MB, app_size=MB // 4, env=NODE_ENV, revision=version
            )
        teller.tag(name, image, "latest")
        teller.sync(name)

    api = teller.name("shop-api")
    teller.pushed.append(api)
    pusher.push_index(api, ["3.1.0"], fmt="docker", created=teller.days(48), unique="shop-api-3.1.0", layer_size=MB)
    pusher.push_index(api, ["3.2.0", "latest"], fmt="oci", created=teller.days(3), unique="shop-api-3.2.0", layer_size=MB)
    teller.sync("shop-api")

    for name, versions in [
        ("infra/nginx-edge", [("1.25.4", 200), ("1.27.0", 21)]),
        ("tools/db-migrate", [("2024.11.02", 90), ("2025.01.15", 15)]),
    ]:
        teller.pushed.append(teller.name(name))
        for version, age in versions:
            image = pusher.push_image(teller.name(name), [version], created=teller.days(age), unique=f"{name}-{version}")
        teller.tag(name, image, "latest")
        teller.sync(name)
    return Story(prefix, teller.name(SHOP), releases, sorted(set(teller.pushed)))


def told(registry: Registry, prefix: str = "") -> bool:
    """Whether this cache already holds the story (its production history)."""
    return TagHistory.objects.filter(repository__registry=registry, repository__name=f"{prefix}{SHOP}").exists()


def _people(prefix: str) -> tuple[User, User]:
    """Ops (operator everywhere) and the web team (maintainer of the shop's services)."""
    ops, _ = Group.objects.get_or_create(name=f"{prefix}ops")
    AccessRule.objects.get_or_create(group=ops, pattern="*", defaults={"role": Role.OPERATOR})
    web, _ = Group.objects.get_or_create(name=f"{prefix}web-team")
    for pattern in (f"{prefix}website-*", f"{prefix}checkout-*"):
        AccessRule.objects.get_or_create(group=web, pattern=pattern, defaults={"role": Role.MAINTAINER})
    operator, _ = User.objects.get_or_create(username=f"{prefix}{OPERATOR}".replace("/", "-"))
    operator.groups.add(ops)
    maintainer, _ = User.objects.get_or_create(username=f"{prefix}{MAINTAINER}".replace("/", "-"))
    maintainer.groups.add(web)
    return operator, maintainer


def demo_people(prefix: str = "") -> list[User]:
    """The story's operator and maintainer, once it was told."""
    return list(User.objects.filter(username__in=[f"{prefix}{name}".replace("/", "-") for name in (OPERATOR, MAINTAINER)]))

