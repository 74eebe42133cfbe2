import pytest
from django.db import connection
from django.test.utils import CaptureQueriesContext
from django.urls import reverse
from tests.test_browse_views import cache, sync, repository_url
pytestmark = pytest.mark.django_db

def test_q(admin_client, cache, pusher, repo_name):
    images = [pusher.push_image(repo_name, None, unique=f"{repo_name}-{i}") for i in range(3)]
    for i in range(3):
        pusher.tag(repo_name, images[i % 3], f"1.{i}.0")
    sync(cache, repo_name)
    for url in [repository_url(repo_name), reverse("dashboard:catalog"), reverse("dashboard:tag", args=[repo_name, "1.0.0"])]:
        with CaptureQueriesContext(connection) as c:
            admin_client.get(url)
        print(url, len(c.captured_queries))
        for q in c.captured_queries: print("   ", q["sql"][:150])
