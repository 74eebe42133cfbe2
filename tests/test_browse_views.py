"""Browse pages against a real registry: images are pushed, synced, then read through the views."""

from __future__ import annotations

import re
from collections.abc import Iterator
from datetime import datetime, timedelta, timezone
from pathlib import Path

import pytest
from django.urls import reverse

from dashboard import storage
from dashboard.models import Registry, Repository, Role, Tag
from dashboard.registries import client_for, configured_registry
from dashboard.sync import sync_registry
from dashboard.versions import version_sort_key
from tests.personas import make_user
from tests.support.images import ImagePusher, PushedImage
from tests.support.registry_server import RegistryServer, free_port, start_registry

pytestmark = pytest.mark.django_db

HTMX = {"HTTP_HX_REQUEST": "true"}
HOSTILE = "<script>alert('x')</script>"
# Session, user, registry, repository, count, page, siblings, pins, supply-chain badges and the
# count of attached artifacts' tags, plus the pins panel and the head's exclusive/shared bytes;
# what matters most is that the count is the same for 3 tags and for 300.
PAGE_QUERY_BOUND = 15
# The tag page adds history, signatures, attached artifacts, the version and supply-chain panels.
TAG_PAGE_QUERY_BOUND = 20


@pytest.fixture
def admin_client(client):
    """A signed-in superuser, without the password hashing of pytest-django's own fixture."""
    client.force_login(make_user("admin", superuser=True))
    return client


@pytest.fixture
def cache(settings, registry: RegistryServer) -> Registry:
    """The configured registry is the session's test registry."""
    settings.REGISTRY_URL = registry.url
    return configured_registry()


def sync(cache: Registry, name: str) -> None:
    sync_registry(cache, client_for(cache), repository=name)


def fragment_of(target: str) -> dict[str, str]:
    return HTMX | {"HTTP_HX_TARGET": target}


def repository_url(name: str, **query: str) -> str:
    url = reverse("dashboard:repository", args=[name])
    return url + ("?" + "&".join(f"{k}={v}" for k, v in query.items()) if query else "")


def tag_names_in(html: str) -> list[str]:
    return re.findall(r'class="tag-link" href="[^"]+">([^<]+)</a>', html)


# Catalog --------------------------------------------------------------------------------------


def test_catalog_lists_synced_repositories_with_their_numbers(admin_client, cache, pusher, make_repo_name):
    name = make_repo_name("shop/")
    image = pusher.push_image(name, ["1.0", "latest"], created=datetime(2025, 3, 1, tzinfo=timezone.utc))
    sync(cache, name)

    response = admin_client.get(reverse("dashboard:catalog"), {"q": name})

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" in html
    assert f'href="/repositories/{name}/"' in html
    assert '<span class="namespace">shop/</span>' in html
    row = html[html.index(f'href="/repositories/{name}/"') :].split("</tr>")[0]
    assert '<td class="num">2</td>' in row
    # Total size counts the distinct blobs (config and layers), not the manifest itself.
    assert f'title="{image.size - len(image.raw):,} bytes"' in row
    assert 'datetime="2025-03-01T00:00:00+00:00"' in row
    assert cache.url in html  # the status panel
    assert "HX-Request" in response["Vary"]


def test_catalog_marks_a_repository_whose_last_sync_failed_and_one_without_tags(
    admin_client, cache, pusher, registry, make_repo_name
):
    failing, emptied = make_repo_name("rows/"), make_repo_name("rows/")
    pusher.push_image(failing, ["1"])
    image = pusher.push_image(emptied, ["1"])
    pusher.session.delete(f"{registry.url}/v2/{emptied}/manifests/{image.digest}").raise_for_status()
    for name in (failing, emptied):
        sync(cache, name)
    Repository.objects.filter(name=failing).update(last_sync_error='<b>"500"</b> from the registry & proxy')

    html = admin_client.get(reverse("dashboard:catalog"), {"q": "rows/"}).content.decode()

    def row(name: str) -> str:
        return html[html.index(f'href="/repositories/{name}/"') :].split("</tr>")[0]

    assert (
        '<span class="badge badge-warning" title="&lt;b&gt;&quot;500&quot;&lt;/b&gt; from the registry &amp; proxy">'
        "stale</span>" in row(failing)
    )
    assert "stale" not in row(emptied)
    assert '<td class="num"><span class="muted">none</span></td>' in row(emptied)
    assert '<td class="num">1</td>' in row(failing)


def test_catalog_search_answers_the_results_block_to_htmx(admin_client, cache, pusher, make_repo_name):
    wanted, other = make_repo_name("find-me/"), make_repo_name("hide-me/")
    for name in (wanted, other):
        pusher.push_image(name, ["v1"])
        sync(cache, name)

    response = admin_client.get(reverse("dashboard:catalog"), {"q": wanted}, **fragment_of("catalog-results"))

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html and 'id="catalog-filters"' not in html
    assert f"/repositories/{wanted}/" in html
    assert f"/repositories/{other}/" not in html
    assert "HX-Request" in response["Vary"]
    # Links in the block keep the search and have a real href next to hx-get.
    assert re.search(r'href="/\?q=[^"]*sort=size" hx-get="/\?q=[^"]*sort=size"', html)


def test_catalog_filters_by_namespace_and_sorts(admin_client, cache, pusher, make_repo_name):
    small, big, elsewhere = make_repo_name("ns-a/"), make_repo_name("ns-a/"), make_repo_name("ns-b/")
    pusher.push_image(small, ["1"], layers=1)
    pusher.push_image(big, ["1"], layers=4, layer_size=50_000)
    pusher.push_image(elsewhere, ["1"])
    for name in (small, big, elsewhere):
        sync(cache, name)
    namespace = small.partition("/")[0]

    html = admin_client.get(reverse("dashboard:catalog"), {"namespace": namespace, "sort": "size"}).content.decode()

    assert f"/repositories/{elsewhere}/" not in html
    assert html.index(f"/repositories/{big}/") < html.index(f"/repositories/{small}/")
    assert f'<option value="{namespace}" selected>' in html


@pytest.mark.parametrize("query", [{"sort": "nope"}, {"page": "zero"}, {"page": "0"}, {"q": "x" * 300}])
def test_catalog_rejects_a_bad_query_string(admin_client, cache, query):
    response = admin_client.get(reverse("dashboard:catalog"), query)

    assert response.status_code == 400
    assert next(iter(query)) in response.content.decode()


def test_pages_keep_the_query(admin_client, cache, pusher, repo_name):
    image = pusher.push_image(repo_name, None)
    names = [f"rc-{i:02d}" for i in range(55)]
    for name in names:
        pusher.tag(repo_name, image, name)
    sync(cache, repo_name)

    first = admin_client.get(repository_url(repo_name, q="rc", sort="name")).content.decode()
    second = admin_client.get(repository_url(repo_name, q="rc", sort="name", page="2")).content.decode()

    assert "Page 1 of 2" in first and tag_names_in(first) == names[:50]
    assert tag_names_in(second) == names[50:]
    assert f'href="{repository_url(repo_name)}?q=rc&amp;sort=name&amp;page=2"' in first


# Who may see what ----------------------------------------------------------------------------


def test_anonymous_visitors_sign_in_first_and_fragments_get_403(client, cache):
    page = client.get(reverse("dashboard:catalog"))
    fragment = client.get(reverse("dashboard:catalog"), **fragment_of("catalog-results"))

    assert page.status_code == 302 and page["Location"].startswith(reverse("login"))
    assert fragment.status_code == 403


def test_public_read_opens_pages_but_not_refresh(client, cache, settings, pusher, repo_name):
    settings.DASHBOARD_PUBLIC_READ = True
    pusher.push_image(repo_name, ["1.0"])
    sync(cache, repo_name)

    assert client.get(repository_url(repo_name)).status_code == 200
    assert client.post(reverse("dashboard:repository-refresh", args=[repo_name]), **HTMX).status_code == 403


def test_hidden_repositories_are_404_on_every_page(client, cache, pusher, make_repo_name):
    hidden, allowed = make_repo_name("secret/"), make_repo_name("open/")
    image = pusher.push_image(hidden, ["1.0"])
    pusher.push_image(allowed, ["1.0"])
    sync(cache, hidden)
    sync(cache, allowed)
    client.force_login(make_user("viewer", pattern="open/*", role=Role.VIEWER))

    assert client.get(repository_url(allowed)).status_code == 200
    for url in (
        repository_url(hidden),
        reverse("dashboard:tag", args=[hidden, "1.0"]),
        reverse("dashboard:manifest", args=[hidden, image.digest]),
    ):
        assert client.get(url).status_code == 404, url
    assert client.post(reverse("dashboard:repository-refresh", args=[hidden])).status_code == 404
    assert hidden not in client.get(reverse("dashboard:catalog")).content.decode()


def test_unknown_names_are_404(admin_client, cache, pusher, repo_name):
    pusher.push_image(repo_name, ["1.0"])
    sync(cache, repo_name)

    assert admin_client.get(repository_url("no/such/repository")).status_code == 404
    assert admin_client.get(reverse("dashboard:tag", args=[repo_name, "nope"])).status_code == 404
    assert admin_client.get(reverse("dashboard:manifest", args=[repo_name, "sha256:" + "0" * 64])).status_code == 404


# Repository ----------------------------------------------------------------------------------


def push_versions(pusher: ImagePusher, name: str) -> dict[str, PushedImage]:
    """Three images a month apart; `latest` and `stable` share the newest digest."""
    start = datetime(2025, 1, 1, tzinfo=timezone.utc)
    images = {
        tag: pusher.push_image(name, [tag], created=start + timedelta(days=30 * i), unique=f"{name}-{tag}")
        for i, tag in enumerate(["1.9.0", "1.10.0", "2.0.0-rc.1"])
    }
    pusher.tag(name, images["2.0.0-rc.1"], "latest")
    pusher.tag(name, images["2.0.0-rc.1"], "stable")
    return images


def test_repository_lists_tags_newest_first_with_shared_digests_marked(admin_client, cache, pusher, repo_name):
    images = push_versions(pusher, repo_name)
    sync(cache, repo_name)

    response = admin_client.get(repository_url(repo_name))

    html = response.content.decode()
    assert response.status_code == 200
    names = tag_names_in(html)
    assert set(names[:3]) == {"2.0.0-rc.1", "latest", "stable"}
    assert names[3:] == ["1.10.0", "1.9.0"]
    newest = images["2.0.0-rc.1"].digest
    assert f'title="{newest}">{newest[7:19]}</code>' in html
    assert "same digest as" in html
    row = html[html.index(">1.9.0</a>") :].split("</tr>")[0]
    assert "same digest as" not in row
    assert "HX-Request" in response["Vary"]


def test_repository_sorts_by_version_and_by_name(admin_client, cache, pusher, repo_name):
    push_versions(pusher, repo_name)
    sync(cache, repo_name)

    by_version = tag_names_in(admin_client.get(repository_url(repo_name, sort="version")).content.decode())
    by_name = tag_names_in(admin_client.get(repository_url(repo_name, sort="name")).content.decode())

    assert by_version == ["2.0.0-rc.1", "1.10.0", "1.9.0", "latest", "stable"]
    assert by_name == ["1.10.0", "1.9.0", "2.0.0-rc.1", "latest", "stable"]


def test_repository_filter_as_a_fragment(admin_client, cache, pusher, repo_name):
    push_versions(pusher, repo_name)
    sync(cache, repo_name)

    response = admin_client.get(repository_url(repo_name, q="1."), **fragment_of("tag-results"))

    html = response.content.decode()
    assert "<html" not in html
    assert sorted(tag_names_in(html)) == ["1.10.0", "1.9.0"]
    assert "HX-Request" in response["Vary"]


@pytest.mark.parametrize("query", [{"sort": "size"}, {"page": "-1"}])
def test_repository_rejects_a_bad_query_string(admin_client, cache, pusher, repo_name, query):
    pusher.push_image(repo_name, ["1"])
    sync(cache, repo_name)

    assert admin_client.get(repository_url(repo_name), query).status_code == 400


def test_a_repository_without_tags_says_so(admin_client, cache, pusher, registry, repo_name):
    image = pusher.push_image(repo_name, ["only"])
    pusher.session.delete(f"{registry.url}/v2/{repo_name}/manifests/{image.digest}").raise_for_status()
    sync(cache, repo_name)

    html = admin_client.get(repository_url(repo_name)).content.decode()

    assert "This repository has no tags" in html


def test_page_queries_do_not_grow_with_tags(admin_client, cache, pusher, make_repo_name, django_assert_max_num_queries):
    sizes = {make_repo_name(): 3, make_repo_name(): 300}
    for name, tag_count in sizes.items():
        # Three digests, so siblings and pins are looked up for more than one.
        images = [pusher.push_image(name, None, unique=f"{name}-{i}") for i in range(3)]
        for i in range(tag_count):
            pusher.tag(name, images[i % 3], f"1.{i}.0")
        sync(cache, name)
        assert Tag.objects.filter(repository__name=name).count() == tag_count

    def queries(url: str, bound: int) -> int:
        # Both measured with the storage figures computed afresh (the catalog's exclusive and
        # shared bytes), as after any change of the cache rows.
        storage._computed.clear()
        with django_assert_max_num_queries(bound) as captured:
            assert admin_client.get(url).status_code == 200
        return len(captured.captured_queries)

    for bound, page in [
        (PAGE_QUERY_BOUND, lambda name: repository_url(name)),
        (PAGE_QUERY_BOUND, lambda name: repository_url(name, sort="version")),
        (PAGE_QUERY_BOUND, lambda name: repository_url(name, sort="name", q="1.")),
        (PAGE_QUERY_BOUND, lambda name: reverse("dashboard:catalog") + f"?q={name}"),
        (TAG_PAGE_QUERY_BOUND, lambda name: reverse("dashboard:tag", args=[name, "1.0.0"])),
    ]:
        small, big = (queries(page(name), bound) for name in sizes)
        assert small == big, page(next(iter(sizes)))


# Tag and manifest ----------------------------------------------------------------------------


def test_tag_page_shows_how_to_pull_and_what_is_inside(admin_client, cache, settings, pusher, repo_name):
    settings.REGISTRY_PUBLIC_HOST = "registry.example.com:5000"
    image = pusher.push_image(
        repo_name,
        ["1.4.2"],
        created=datetime(2025, 5, 6, 7, 8, 9, tzinfo=timezone.utc),
        author="Build bot <ci@example.com>",
        layers=2,
        arch="arm64",
        variant="v8",
        env=["PATH=/usr/bin", "MODE=production"],
        entrypoint=["/app/run"],
        cmd=["--port", "8080"],
        workdir="/srv",
        user="app",
        exposed_ports=["8080/tcp"],
        volumes=["/data"],
        labels={
            "org.opencontainers.image.source": "https://github.com/example/app",
            "org.opencontainers.image.revision": "abc123",
            "org.opencontainers.image.url": "javascript:alert(1)",
        },
        history_commands=["COPY app /app", "RUN make install"],
    )
    sync(cache, repo_name)

    html = admin_client.get(reverse("dashboard:tag", args=[repo_name, "1.4.2"])).content.decode()

    assert f"docker pull registry.example.com:5000/{repo_name}:1.4.2" in html
    assert f"docker pull registry.example.com:5000/{repo_name}@{image.digest}" in html
    assert 'data-copy-target="pull-tag"' in html
    assert image.media_type in html
    assert "Build bot &lt;ci@example.com&gt;" in html
    assert "linux / arm64 / v8" in html
    assert 'datetime="2025-05-06T07:08:09+00:00"' in html
    assert "<code>MODE</code>" in html and "production" in html
    assert "/app/run" in html and "--port 8080" in html and "<code>/srv</code>" in html
    assert "8080/tcp" in html and "/data" in html
    # Links only for http(s) values of the URL labels.
    assert '<a class="wrap" href="https://github.com/example/app"' in html
    assert 'href="javascript:' not in html and "javascript:alert(1)" in html
    assert 'href="abc123"' not in html
    # History aligned with layers: ENV/WORKDIR/... entries are empty, each COPY/RUN has its layer.
    layers = html[html.index('id="layers-title"') :].split("</table>")[0]
    steps = re.findall(r"<tr class=\"(empty-layer)?\">(.*?)</tr>", layers, re.S)
    commands = [(bool(empty), re.search(r'<code class="instruction">([^<]*)</code>', body).group(1)) for empty, body in steps]
    assert commands[0] == (False, "COPY app /app")
    assert (False, "RUN make install") in commands
    assert (True, "ENV PATH=/usr/bin MODE=production") in commands
    first_layer, second_layer = image.layer_digests
    assert layers.index(first_layer[7:19]) < layers.index("RUN make install") < layers.index(second_layer[7:19])
    assert "<details" in html and "&quot;schemaVersion&quot;: 2" in html
    assert "Where this tag pointed" in html


def test_registry_data_is_escaped_everywhere(admin_client, cache, pusher, repo_name):
    pusher.push_image(
        repo_name,
        ["evil"],
        labels={"org.opencontainers.image.source": HOSTILE, HOSTILE: "value"},
        env=[f"X={HOSTILE}"],
        author=HOSTILE,
        history_commands=[f"RUN echo {HOSTILE}", "COPY a b"],
    )
    sync(cache, repo_name)

    html = admin_client.get(reverse("dashboard:tag", args=[repo_name, "evil"])).content.decode()

    assert "<script>alert" not in html
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in html
    # Label name and value, env, author, history step, and the config JSON.
    assert html.count("&lt;script&gt;") >= 6


def test_index_lists_platforms_that_open_their_child(admin_client, cache, pusher, repo_name):
    index = pusher.push_index(repo_name, ["3.0"], fmt="oci")
    sync(cache, repo_name)

    listing = admin_client.get(repository_url(repo_name)).content.decode()
    html = admin_client.get(reverse("dashboard:tag", args=[repo_name, "3.0"])).content.decode()

    assert "multi-arch" in listing and "linux/amd64" in listing and "linux/arm64/v8" in listing
    for child in index.children:
        child_url = reverse("dashboard:manifest", args=[repo_name, child.digest])
        assert f'href="{child_url}"' in html
        child_html = admin_client.get(child_url).content.decode()
        assert f"@{child.digest}" in child_html and "3.0" not in tag_names_in(child_html)
        assert child.platform.replace("/", " / ") in child_html


def test_signature_tags_show_as_signatures(admin_client, cache, pusher, repo_name):
    image = pusher.push_image(repo_name, ["1.0"])
    signature_tag = f"sha256-{image.digest.partition(':')[2]}.sig"
    pusher.push_artifact(
        repo_name, signature_tag, artifact_type="application/vnd.dev.cosign.artifact.sig.v1+json", subject=image
    )
    sync(cache, repo_name)

    folded = admin_client.get(repository_url(repo_name)).content.decode()
    listing = admin_client.get(repository_url(repo_name, attached="1")).content.decode()
    signature = admin_client.get(reverse("dashboard:tag", args=[repo_name, signature_tag])).content.decode()
    signed = admin_client.get(reverse("dashboard:tag", args=[repo_name, "1.0"])).content.decode()

    # Folded under the version by default (dashboard/attachments.py), listed on request.
    assert 'class="badge badge-sig"' not in folded and tag_names_in(folded) == ["1.0"]
    assert "folded under their versions" in folded
    assert '<span class="badge badge-sig">signature</span>' in listing
    assert "application/vnd.dev.cosign.artifact.sig.v1+json" in signature
    assert f'href="{reverse("dashboard:manifest", args=[repo_name, image.digest])}"' in signature
    assert "Signatures and attached artifacts" in signed and signature_tag in signed


def test_tag_history_shows_where_the_tag_pointed(admin_client, cache, pusher, repo_name):
    old = pusher.push_image(repo_name, ["prod"], unique="old")
    sync(cache, repo_name)
    new = pusher.push_image(repo_name, ["prod"], unique="new")
    sync(cache, repo_name)

    html = admin_client.get(reverse("dashboard:tag", args=[repo_name, "prod"])).content.decode()

    history = html[html.index("Where this tag pointed") :]
    assert history.index(new.digest) < history.index(old.digest)
    assert "current" in history


# Refresh and an unreachable registry ---------------------------------------------------------


def test_refresh_resyncs_and_swaps_the_table(admin_client, cache, pusher, repo_name):
    pusher.push_image(repo_name, ["1.0"])
    sync(cache, repo_name)
    pusher.push_image(repo_name, ["1.1"], unique="newer")
    refresh = reverse("dashboard:repository-refresh", args=[repo_name])

    response = admin_client.post(
        refresh, **fragment_of("tag-results"), HTTP_HX_CURRENT_URL=f"http://testserver{repository_url(repo_name)}?sort=name"
    )

    html = response.content.decode()
    assert response.status_code == 200
    assert "<html" not in html
    assert tag_names_in(html) == ["1.0", "1.1"]
    assert "Refreshed from the registry" in html


def test_refresh_without_javascript_redirects_back(admin_client, cache, pusher, repo_name):
    pusher.push_image(repo_name, ["1.0"])
    sync(cache, repo_name)

    response = admin_client.post(reverse("dashboard:repository-refresh", args=[repo_name]) + "?sort=name", follow=True)

    assert response.redirect_chain[-1][0] == repository_url(repo_name) + "?sort=name"
    assert "Refreshed from the registry" in response.content.decode()


def test_an_unreachable_registry_dates_a_repository_by_its_own_last_sync(admin_client, cache, pusher, repo_name):
    pusher.push_image(repo_name, ["1.0"])
    sync(cache, repo_name)
    # The last full sync was long before this repository's own sync.
    full_sync = datetime(2020, 1, 1, tzinfo=timezone.utc)
    Registry.objects.filter(pk=cache.pk).update(reachable=False, last_successful_sync_at=full_sync)
    synced = Repository.objects.get(registry=cache, name=repo_name).last_synced_at

    page = admin_client.get(repository_url(repo_name)).content.decode()
    catalog = admin_client.get(reverse("dashboard:catalog")).content.decode()

    notice = page[page.index("is unreachable") :].split("</div>")[0]
    assert f'Showing data as of <time datetime="{synced.isoformat()}"' in notice
    assert full_sync.isoformat() not in page
    notice = catalog[catalog.index("is unreachable") :].split("</div>")[0]
    assert f'Showing data as of <time datetime="{full_sync.isoformat()}"' in notice


@pytest.fixture
def doomed_registry(tmp_path: Path) -> Iterator[RegistryServer]:
    """A registry of this test's own, to stop."""
    server = start_registry(tmp_path / "doomed")
    yield server
    server.stop()


def test_a_registry_that_goes_down_leaves_the_cache_readable(admin_client, settings, doomed_registry, repo_name):
    settings.REGISTRY_URL = doomed_registry.url
    cache = configured_registry()
    ImagePusher(doomed_registry.url).push_image(repo_name, ["1.0"])
    sync(cache, repo_name)
    doomed_registry.stop()

    refreshed = admin_client.post(reverse("dashboard:catalog-refresh"), **fragment_of("catalog-results"))
    page = admin_client.get(repository_url(repo_name))
    catalog = admin_client.get(reverse("dashboard:catalog"))

    assert refreshed.status_code == 200
    assert "Could not refresh" in refreshed.content.decode()
    assert f"/repositories/{repo_name}/" in refreshed.content.decode()
    assert page.status_code == 200 and tag_names_in(page.content.decode()) == ["1.0"]
    assert "The last sync of this repository failed" in page.content.decode()
    assert "Showing data as of" in page.content.decode()
    assert "is unreachable" in catalog.content.decode()


def test_nothing_cached_and_unreachable_explains_how_to_fix_it(admin_client, settings):
    settings.REGISTRY_URL = f"http://127.0.0.1:{free_port()}"
    cache = configured_registry()

    admin_client.post(reverse("dashboard:catalog-refresh"))
    html = admin_client.get(reverse("dashboard:catalog")).content.decode()

    assert not cache.repositories.exists()
    assert "Cannot reach the registry" in html
    assert f"curl -i {cache.url}/v2/" in html
    assert "kubectl port-forward --namespace kube-system service/registry 5000:80" in html


def test_the_version_key_is_stored_for_sorting(cache, pusher, repo_name):
    pusher.push_image(repo_name, ["v10.0.1"])
    sync(cache, repo_name)

    tag = Tag.objects.get(repository=Repository.objects.get(name=repo_name), name="v10.0.1")

    assert tag.version_key == version_sort_key("v10.0.1")
