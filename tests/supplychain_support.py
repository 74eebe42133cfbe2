"""A repository whose `production` tag went through three versions with supply-chain data
attached, for the supply-chain view, API and browser tests."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

import pytest

from dashboard.models import Repository
from tests.rollback_support import Dashboard
from tests.support import supplychain as sc
from tests.support.images import ImagePusher, PushedImage

CRITICALS = [
    {"id": "CVE-2026-0001", "severity": "critical", "package": "openssl", "installed": "3.0.11", "fixed": "3.0.13",
     "title": "Heap overflow in openssl"},
    {"id": "CVE-2026-0002", "severity": "high", "package": "zlib", "installed": "1.2.13", "title": "zlib flaw"},
    {"id": "CVE-2026-0003", "severity": "low", "package": "busybox", "installed": "1.36.1", "fixed": "1.36.2",
     "title": "busybox flaw", "url": "http://insecure.example.com/CVE-2026-0003"},
]


@dataclass
class Release:
    repository: Repository
    clean: PushedImage  # 1.0: signed by the release key, a clean signed report
    vulnerable: PushedImage  # 2.0: signed by an unknown key, criticals in an unsigned report
    current: PushedImage  # 3.0: nothing attached, `production` points here


@pytest.fixture
def release(dashboard: Dashboard, pusher: ImagePusher, repo_name: str, settings, tmp_path) -> Release:
    key = sc.make_key()
    path = tmp_path / "release.pub"
    path.write_bytes(sc.public_pem(key))
    settings.SIGNATURE_PUBLIC_KEYS = [str(path)]
    reference = f"{dashboard.server.host}/{repo_name}"

    def push(version: str, month: int) -> PushedImage:
        created = datetime(2026, month, 1, tzinfo=UTC)
        image = pusher.push_image(repo_name, (version, "production"), created=created, unique=f"{repo_name}-{version}")
        return image

    clean = push("1.0", 1)
    sc.push_signature(pusher, repo_name, clean.digest, key, reference)
    report = sc.statement(clean.digest, sc.VULN, sc.vuln_predicate(sc.trivy_report(clean.digest, [])))
    sc.push_attestation(pusher, repo_name, clean.digest, report, key)
    sc.push_cosign(pusher, repo_name, clean.digest, "sbom", [("text/spdx+json", sc.spdx_sbom([("openssl", "3.0.13")]), {})])
    dashboard.sync(repo_name)

    vulnerable = push("2.0", 2)
    sc.push_signature(pusher, repo_name, vulnerable.digest, sc.make_key(), reference)
    report = sc.statement(vulnerable.digest, sc.VULN, sc.vuln_predicate(sc.trivy_report(vulnerable.digest, CRITICALS)))
    sc.push_attestation(pusher, repo_name, vulnerable.digest, report, None)
    dashboard.sync(repo_name)

    current = push("3.0", 3)
    return Release(dashboard.sync(repo_name), clean, vulnerable, current)
