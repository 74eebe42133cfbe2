"""Fixtures shared by the pin, restore, compare, API and rollback-browser tests.

Import the fixtures a module uses from here (`from tests.rollback_support import dashboard`).
"""

from __future__ import annotations

import hashlib
import json
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

import pytest
from django.contrib.auth.models import User

from dashboard.models import Registry, Repository, Role
from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_repository
from tests.personas import make_user
from tests.support.fault_proxy import FaultProxy
from tests.support.registry_server import RegistryServer

# Tests use unique repository names, so roles on `*` never reach another test's repositories.
OUTSIDER_PATTERN = "nobody-uses-this/*"


@dataclass
class Dashboard:
    """The dashboard pointed at the session's real registry."""

    registry: Registry
    server: RegistryServer

    def sync(self, name: str) -> Repository:
        # One repository, without sync_registry's ping and delete probe: tests push a lot.
        sync_repository(self.registry, client_for(self.registry), name)
        return Repository.objects.get(registry=self.registry, name=name)


@pytest.fixture
def dashboard(settings, registry: RegistryServer) -> Dashboard:
    settings.REGISTRY_URL = registry.url
    return Dashboard(configured_registry(), registry)


@pytest.fixture
def proxy(registry: RegistryServer) -> Iterator[FaultProxy]:
    """A fault proxy in front of the session's registry, for the dashboard to go through."""
    proxy = FaultProxy(registry.url)
    yield proxy
    proxy.stop()


@pytest.fixture
def proxied(settings, registry: RegistryServer, proxy: FaultProxy) -> Dashboard:
    """The dashboard pointed at the registry through `proxy`; pushers still go straight to it,
    so a `hook` fault can push between two of the dashboard's requests."""
    settings.REGISTRY_URL = proxy.url
    return Dashboard(configured_registry(), registry)


@dataclass
class People:
    operator: User
    maintainer: User
    viewer: User
    outsider: User


@pytest.fixture
def people(db) -> People:
    return People(
        operator=make_user("olivia", pattern="*", role=Role.OPERATOR),
        maintainer=make_user("max", pattern="*", role=Role.MAINTAINER),
        viewer=make_user("vera", pattern="*", role=Role.VIEWER),
        outsider=make_user("otto", pattern=OUTSIDER_PATTERN, role=Role.ADMIN),
    )


def skopeo(*arguments: str) -> bytes:
    return subprocess.run(["skopeo", *arguments], check=True, capture_output=True, timeout=30).stdout


def skopeo_digest(server: RegistryServer, repository: str, tag: str) -> str:
    """The digest skopeo resolves `tag` to. For an index `skopeo inspect` describes one platform's
    image, so the index's own digest is computed from the raw bytes skopeo fetched."""
    reference = f"docker://{server.host}/{repository}:{tag}"
    raw = skopeo("inspect", "--tls-verify=false", "--raw", reference)
    if "manifests" in json.loads(raw):
        return "sha256:" + hashlib.sha256(raw).hexdigest()
    return json.loads(skopeo("inspect", "--tls-verify=false", reference))["Digest"]
