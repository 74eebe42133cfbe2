"""The supply chain on the pages and in the API: panel, vulnerabilities, packages, badges,
rollback candidates and RESTORE_REQUIRE_SIGNATURE."""

from __future__ import annotations

import re

import pytest
from django.urls import reverse

from dashboard.models import ApiToken, AuditEntry
from tests.rollback_support import Dashboard, People, dashboard, people  # noqa: F401 (fixtures)
from tests.supplychain_support import Release, release  # noqa: F401 (fixtures)

pytestmark = pytest.mark.django_db


def text(response) -> str:
    """The page's visible words, tags dropped, spaces squeezed."""
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", response.content.decode()))


def test_tag_page_panel(client, people: People, release: Release):
    client.force_login(people.viewer)
    name = release.repository.name
    page = text(client.get(reverse("dashboard:tag", args=[name, "1.0"])))
    assert "Supply chain" in page
    assert "signed ✓ verified with the key release" in page
    assert "0 critical 0 high 0 medium 0 low 0 unknown" in page
    assert "trivy 0.57.1, scanned" in page

    page = text(client.get(reverse("dashboard:tag", args=[name, "2.0"])))
    assert "signed, unknown key signed, but no trusted key checks the signature" in page
    assert "1 critical 1 high 0 medium 1 low 0 unknown" in page
    assert "unsigned report" in page
    page = text(client.get(reverse("dashboard:manifest", args=[name, release.current.digest])))
    assert "unsigned nothing signs this version" in page
    assert "No vulnerability report attached." in page


def test_vulnerabilities_page_sorts_filters_and_links_https_only(client, people: People, release: Release):
    client.force_login(people.viewer)
    url = reverse("dashboard:vulnerabilities", args=[release.repository.name, release.vulnerable.digest])
    response = client.get(url)
    assert response.status_code == 200
    body = response.content.decode()
    ids = re.findall(r"CVE-2026-000\d", body)
    assert ids == ["CVE-2026-0001", "CVE-2026-0002", "CVE-2026-0003"]  # most severe first
    assert '<a href="https://avd.aquasec.com/nvd/cve-2026-0001" rel="noopener noreferrer nofollow">CVE-2026-0001</a>' in body
    assert "insecure.example.com" not in body  # an http link from the report is not a link
    assert "3.0.13" in body and "no fix" in body

    by_package = client.get(url, {"sort": "package"}).content.decode()
    assert re.findall(r"CVE-2026-000\d", by_package) == ["CVE-2026-0003", "CVE-2026-0001", "CVE-2026-0002"]
    critical = client.get(url, {"severity": "critical"}).content.decode()
    assert re.findall(r"CVE-2026-000\d", critical) == ["CVE-2026-0001"]
    unfixed = client.get(url, {"fixed": "no"}).content.decode()
    assert re.findall(r"CVE-2026-000\d", unfixed) == ["CVE-2026-0002"]
    assert client.get(url, {"severity": "bogus"}).status_code == 400


def test_packages_page(client, people: People, release: Release):
    client.force_login(people.viewer)
    url = reverse("dashboard:packages", args=[release.repository.name, release.clean.digest])
    page = text(client.get(url))
    assert "openssl 3.0.13 pkg:deb/debian/openssl@3.0.13" in page
    assert "openssl" not in text(client.get(url, {"q": "zlib"})).split("Packages", 2)[-1]


def test_repository_page_badges(client, people: People, release: Release):
    client.force_login(people.viewer)
    body = client.get(reverse("dashboard:repository", args=[release.repository.name])).content.decode()
    row_of = {
        tag: re.search(rf'<tr[^>]*>(?:(?!</tr>).)*?>{re.escape(tag)}</a>(?:(?!</tr>).)*</tr>', body, re.S).group(0)
        for tag in ("1.0", "2.0", "3.0")
    }
    assert "signed ✓" in row_of["1.0"] and "no vulnerabilities" in row_of["1.0"]
    assert "signed, unknown key" in row_of["2.0"] and "1 critical" in row_of["2.0"]
    assert "badge-signature" not in row_of["3.0"] and "badge-vulns" not in row_of["3.0"]


def test_rollback_candidates_show_badges(client, people: People, release: Release):
    client.force_login(people.operator)
    body = client.get(reverse("dashboard:rollback", args=[release.repository.name]), {"tag": "production"})
    rows = re.findall(r'<tr class="candidate">.*?</tr>', body.content.decode(), re.S)
    assert len(rows) == 2
    vulnerable, clean = rows  # newest created first
    assert release.vulnerable.digest[7:19] in vulnerable and "1 critical" in vulnerable
    assert release.clean.digest[7:19] in clean and "signed ✓" in clean and "no vulnerabilities" in clean


@pytest.mark.parametrize("through", ["page", "api"])
def test_restore_require_signature_refuses_what_is_not_verified(client, people, release, settings, through):
    settings.RESTORE_REQUIRE_SIGNATURE = True
    name = release.repository.name

    def restore(digest: str):
        if through == "page":
            client.force_login(people.operator)
            data = {"tag": "production", "digest": digest, "expected": release.current.digest}
            return client.post(reverse("dashboard:restore", args=[name]), data)
        token = ApiToken.issue(people.operator, "deploy")[1]
        return client.post(
            reverse("dashboard:api-restore", args=[name, "production"]),
            {"digest": digest, "expected_digest": release.current.digest},
            content_type="application/json",
            headers={"Authorization": f"Bearer {token}"},
        )

    refused = restore(release.vulnerable.digest)
    assert refused.status_code == 409
    message = "Restores need a verified signature here (RESTORE_REQUIRE_SIGNATURE)"
    assert message in (refused.json()["error"] if through == "api" else refused.content.decode())
    assert AuditEntry.objects.filter(action="restore", outcome="refused", reason__contains="unverified").exists()
    done = restore(release.clean.digest)
    assert done.status_code == (302 if through == "page" else 200)
    assert release.repository.tags.get(name="production").manifest.digest == release.clean.digest


def test_restore_without_the_setting_takes_any_version(client, people, release):
    client.force_login(people.operator)
    data = {"tag": "production", "digest": release.vulnerable.digest, "expected": release.current.digest}
    assert client.post(reverse("dashboard:restore", args=[release.repository.name]), data).status_code == 302


def test_api_tag_tags_and_candidates_carry_signature_and_vulnerabilities(client, people, release):
    token = ApiToken.issue(people.viewer, "ci")[1]
    headers = {"Authorization": f"Bearer {token}"}
    name = release.repository.name
    clean = client.get(reverse("dashboard:api-tag", args=[name, "1.0"]), headers=headers).json()
    assert clean["signature"] == {"status": "verified", "key": "release"}
    assert clean["vulnerabilities"] == {
        "critical": 0, "high": 0, "medium": 0, "low": 0, "unknown": 0,
        "scanner": "trivy", "scanner_version": "0.57.1", "scanned_at": "2026-11-20T08:30:00+00:00",
    }
    listed = client.get(reverse("dashboard:api-tags", args=[name]), headers=headers).json()["tags"]
    by_name = {tag["name"]: tag for tag in listed}
    assert by_name["2.0"]["signature"] == {"status": "unverified", "key": None}
    assert by_name["2.0"]["vulnerabilities"]["critical"] == 1
    assert by_name["3.0"]["signature"] == {"status": "unsigned", "key": None}
    assert by_name["3.0"]["vulnerabilities"] is None
    candidates = client.get(reverse("dashboard:api-candidates", args=[name, "production"]), headers=headers).json()
    statuses = {c["digest"]: c["signature"]["status"] for c in candidates["candidates"]}
    assert statuses == {release.clean.digest: "verified", release.vulnerable.digest: "unverified"}
    assert candidates["current"]["signature"]["status"] == "unsigned"
    assert client.get(reverse("dashboard:api-tag", args=[name, "nope"]), headers=headers).status_code == 404


def test_hidden_repository_pages_are_404(client, people, release):
    client.force_login(people.outsider)
    for route in ("vulnerabilities", "packages"):
        assert client.get(reverse(f"dashboard:{route}", args=[release.repository.name, release.clean.digest])).status_code == 404


def test_attached_artifacts_are_folded_under_their_versions(client, people: People, release: Release):
    client.force_login(people.viewer)
    url = reverse("dashboard:repository", args=[release.repository.name])
    folded = client.get(url)
    names = re.findall(r'class="tag-link" href="[^"]+"[^>]*>([^<]+)</a>', folded.content.decode())
    assert sorted(names) == ["1.0", "2.0", "3.0", "production"]
    page = text(folded)
    assert "4 tags · 5 signature, attestation or SBOM tags folded under their versions: show them" in page
    assert "3 attached" in page  # 1.0: its signature, attestation and SBOM
    searched = client.get(url, {"q": "sha256"}).content.decode()
    assert 'class="tag-link"' not in searched and "Only attached artifacts here." in searched
    listed = client.get(url, {"attached": "1"})
    names = re.findall(r'class="tag-link" href="[^"]+"[^>]*>([^<]+)</a>', listed.content.decode())
    assert len(names) == 9 and sum(name.startswith("sha256-") for name in names) == 5
    assert "9 tags · 5 signature, attestation or SBOM tags listed: fold them" in text(listed)


def test_package_search_across_visible_repositories(client, people: People, release: Release, pusher, dashboard):
    """openssl 3.0.13 in 1.0's SBOM, 3.0.11 in 2.0's report, and 3.0.11 in another repository
    that only the outsider's rule covers: each person finds what they may see, nothing else."""
    from tests.support import supplychain as sc

    other_name = "nobody-uses-this/" + release.repository.name.rsplit("/", 1)[-1]
    other = pusher.push_image(other_name, "1.0", unique=other_name)
    sbom = sc.spdx_sbom([("openssl", "3.0.11")])
    sc.push_cosign(pusher, other_name, other.digest, "sbom", [("text/spdx+json", sbom, {})])
    dashboard.sync(other_name)
    url = reverse("dashboard:package-search")

    def versions_found(body: str) -> list[tuple[str, str]]:
        rows = re.findall(r"<tr>\s*<td><a [^>]*>([^<]*)</a>.*?<code class=\"wrap\">([^<]*)</code></td>\s*<td class=\"muted\">", body, re.S)
        return sorted(rows)

    client.force_login(people.viewer)
    everywhere = client.get(url, {"q": "OpenSSL"}).content.decode()
    name = release.repository.name
    assert versions_found(everywhere) == sorted([(name, "3.0.11"), (name, "3.0.13"), (other_name, "3.0.11")])
    old = client.get(url, {"q": "openssl", "version": "3.0.11"}).content.decode()
    assert versions_found(old) == sorted([(name, "3.0.11"), (other_name, "3.0.11")])
    assert release.vulnerable.digest[7:19] in old and ">2.0<" in old and ">3.0<" not in old
    assert "No version you may see lists zlib 9" in text(client.get(url, {"q": "zlib", "version": "9"}))

    client.force_login(people.outsider)
    outside = client.get(url, {"q": "openssl"}).content.decode()
    assert versions_found(outside) == [(other_name, "3.0.11")]
    assert f'"/repositories/{name}/' not in outside and release.vulnerable.digest not in outside


def test_compare_shows_vulnerabilities_fixed_and_introduced(client, people: People, release: Release):
    client.force_login(people.viewer)
    url = reverse("dashboard:compare", args=[release.repository.name])
    page = text(client.get(url, {"from": "1.0", "to": "2.0"}))
    section = page[page.index("Supply chain") :]
    assert "Vulnerabilities fixed (0)" in section
    assert "Vulnerabilities introduced (3) critical CVE-2026-0001 openssl 3.0.11 high CVE-2026-0002 zlib" in section
    back = text(client.get(url, {"from": "2.0", "to": "1.0"}))
    assert "Vulnerabilities fixed (3)" in back and "Vulnerabilities introduced (0)" in back
    # 1.0's SBOM lists openssl 3.0.13; 2.0 has only a report, whose findings are not an SBOM.
    assert "Packages removed openssl 3.0.13" in section
    assert "Packages added openssl 3.0.13" in back
    assert "Only the first version has a vulnerability report" in text(client.get(url, {"from": "1.0", "to": "3.0"}))


def test_deleting_a_version_offers_to_delete_what_is_attached_to_it_alone(
    client, people: People, dashboard, pusher, repo_name
):
    from tests.support import supplychain as sc

    v1 = pusher.push_image(repo_name, "1.0", unique=f"{repo_name}-1")
    v2 = pusher.push_image(repo_name, "2.0", unique=f"{repo_name}-2")
    key, reference = sc.make_key(), f"{dashboard.server.host}/{repo_name}"
    shared = sc.push_signature(pusher, repo_name, v1.digest, key, reference)
    copied = pusher.session.get(
        f"{dashboard.server.url}/v2/{repo_name}/manifests/{shared}", headers={"Accept": sc.OCI_MANIFEST}
    ).content
    pusher.push_raw_manifest(repo_name, f"sha256-{v2.digest[7:]}.sig", copied, sc.OCI_MANIFEST)
    attestation = sc.push_attestation(pusher, repo_name, v1.digest, sc.statement(v1.digest, "https://example.com/p", {}), key)
    referrer = sc.push_referrer(pusher, repo_name, v1, "application/vnd.cyclonedx+json", sc.cyclonedx_sbom([("a", "1")]))
    dashboard.sync(repo_name)
    client.force_login(people.maintainer)
    url = reverse("dashboard:delete-version", args=[repo_name, v1.digest])

    page = client.get(url).content.decode()
    offered = set(re.findall(r'name="attachments" value="([^"]+)"', page))
    index = pusher.head_digest(repo_name, f"sha256-{v1.digest[7:]}")
    assert offered == {attestation, referrer, index}  # not the signature v2 carries too

    response = client.post(url, {"tags": ["1.0"], "confirm": repo_name, "attachments": sorted(offered), "delete_attachments": "on"})
    assert response.status_code == 302
    for gone in (v1.digest, attestation, referrer, index):
        assert pusher.head_digest(repo_name, gone) is None
    assert pusher.tags(repo_name) == sorted(["2.0", f"sha256-{v1.digest[7:]}.sig", f"sha256-{v2.digest[7:]}.sig"])
    assert pusher.head_digest(repo_name, shared) == shared
    entry = AuditEntry.objects.filter(action="delete_version", repository=repo_name).latest("id")
    assert f"attached artifacts deleted: {', '.join(sorted(offered))}" in entry.reason
